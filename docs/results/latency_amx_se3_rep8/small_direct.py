"""Post hoc (eighteenth session): does the small model's *direct* answer tell right direct answers of the large
model from wrong ones? Runs the 0.5B through the relay's own direct path (gate 'never', no reasoning) on each Xeon
sample's questions and on the dev split, and scores the large model's direct answer (read from the committed
records) under it. From the repository root, 2.5 min on 2 threads:

    python docs/results/latency_amx_se3_rep8/small_direct.py      # writes small_direct.json beside it

where_accuracy.py reads the output."""

import json
import math
from pathlib import Path

import torch

from selector.agents import Agent
from selector.answers import answers_match
from selector.data import load_examples
from selector.prompts import answer_target, transfer_prompt
from selector.relay import Relay, RelayConfig

HERE = Path(__file__).parent
SAMPLES = {  # name: (questions, the records holding the large model's direct answers)
    "1": ("data/simple_eq_eval32.jsonl", "docs/results/latency_amx_se3/eval_records.jsonl"),
    "6": ("data/se3_rep6_32.jsonl", "docs/results/latency_amx_se3_rep6/eval_records.jsonl"),
    "7": ("data/se3_rep7_32.jsonl", "docs/results/latency_amx_se3_rep7/eval_records.jsonl"),
    "dev": ("data/simple_eq_dev24.jsonl", "docs/results/latency_amx_se3/dev_records.jsonl"),
    "8": ("data/se3_rep8_32.jsonl", "docs/results/latency_amx_se3_rep8/eval_records.jsonl"),
}


def main() -> None:
    torch.set_num_threads(2)
    small = Agent.from_pretrained("models/qwen2.5-coder-0.5b-instruct", dtype="float32", device="cpu")
    config = RelayConfig(large="small-direct", gate="never", batch_size=1, answer_tokens=16, device="cpu")
    relay = Relay(None, small, "none", config)  # the relay's direct path, with the small model answering
    out: dict[str, dict] = {}
    for name, (data, records) in SAMPLES.items():
        examples = load_examples(data)
        large = {}
        for line in Path(records).read_text().splitlines():
            r = json.loads(line)
            if r["condition"] == "large_direct":
                large[r["id"]] = r["direct_answer"]
        out[name] = {}
        for ex, r in zip(examples, relay.run(examples, progress=False)):
            rec = {"small_direct": r.answer, "small_dp": r.direct_prob, "gold": ex.answer,
                   "small_direct_correct": answers_match(r.answer, ex.answer)}  # fmt: skip
            answer = large.get(ex.id)
            if answer and answer.strip():
                score = small.score(
                    [transfer_prompt(small, ex.question, None).as_pair()], answer_target(answer)
                )[0]
                rec["small_p_of_large"] = math.exp(score.logprob / max(1, score.target_tokens))
                rec["small_lp_of_large"] = score.logprob
            out[name][ex.id] = rec
        right = sum(v["small_direct_correct"] for v in out[name].values())
        print(f"{name}: the small model's direct answer right {right} / {len(examples)}", flush=True)
    (HERE / "small_direct.json").write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
