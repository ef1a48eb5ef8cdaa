"""Session probe (seventeenth session): where a decode step's time goes on this CPU.

    python docs/results/latency_amx_se3/decode_profile.py models/qwen2.5-coder-0.5b-instruct bfloat16

Times 64 greedy tokens three ways (plain ``generate``; ``generate`` keeping the logits, as the relay does; one
forward per token by hand), then profiles 16 hand-made decode steps with ``torch.profiler`` (2 threads). Output:
decode_profile_05b.txt beside this file.
"""

from __future__ import annotations

import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile
from transformers import AutoModelForCausalLM, AutoTokenizer

N = 64


def main(path: str, dtype: str = "bfloat16") -> None:
    torch.set_num_threads(2)
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype)).eval()
    messages = [{"role": "user", "content": "Solve for x: 12*x - 7 = 65. Think step by step."}]
    ids = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    greedy = {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}

    def timed(**kw) -> float:
        start = time.perf_counter()
        model.generate(**ids, max_new_tokens=N, min_new_tokens=N, **greedy, **kw)
        return time.perf_counter() - start

    with torch.inference_mode():
        timed()  # warm-up
        for name, kw in [("plain", {}), ("logits", {"return_dict_in_generate": True, "output_logits": True})]:
            best = min(timed(**kw) for _ in range(2))
            print(f"{name:8s} {best / N * 1000:.1f} ms/token (incl. prefill)")
        out = model(**ids, use_cache=True)
        cache, token = out.past_key_values, out.logits[:, -1:].argmax(-1)

        def step():
            nonlocal cache, token
            o = model(input_ids=token, past_key_values=cache, use_cache=True)
            cache, token = o.past_key_values, o.logits[:, -1:].argmax(-1)

        start = time.perf_counter()
        for _ in range(N):
            step()
        print(f"manual   {(time.perf_counter() - start) / N * 1000:.1f} ms/token")
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(16):
                step()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=18))


if __name__ == "__main__":
    main(*sys.argv[1:])
