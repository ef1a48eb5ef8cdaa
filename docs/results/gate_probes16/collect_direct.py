"""Session probe (sixteenth session): the large model's direct answer to each question, as the relay's
confidence gate sees it (same prompt, bfloat16, greedy, 16 tokens), with its token log-probs and its hidden
states at the prompt's last position (layers -1, -8, -15) for a P(IK)-style probe.

    OMP_NUM_THREADS=1 taskset -c 0 python docs/results/gate_probes16/collect_direct.py OUT_STEM DATA.jsonl...

Writes OUT_STEM.jsonl (one record per question, appended: a rerun resumes) and OUT_STEM.pt (the states).
"""

from __future__ import annotations

import json
import os
import sys
import time

import torch

from selector.agents import Agent
from selector.answers import answers_match
from selector.data import load_examples
from selector.gating import answer_from_generation, answer_probability
from selector.prompts import PromptTemplate, transfer_prompt

LAYERS = (-1, -8, -15)


def main(out: str, files: list[str]) -> None:
    torch.set_num_threads(int(os.environ.get("T", "1")))
    agent = Agent.from_pretrained("models/qwen2.5-coder-1.5b-instruct", dtype="bfloat16")
    done = set()
    if os.path.exists(out + ".jsonl"):
        with open(out + ".jsonl") as existing:
            done = {json.loads(line)["id"] for line in existing}
    feats = torch.load(out + ".pt") if os.path.exists(out + ".pt") else {}
    start = time.time()
    with open(out + ".jsonl", "a") as sink:
        for path in files:
            for ex in load_examples(path):
                if ex.id in done:
                    continue
                prompt = transfer_prompt(
                    agent, ex.question, None, choices=ex.choices, template=PromptTemplate()
                )
                batch = agent._left_padded([agent.encode_prompt(prompt.text, [])])
                with torch.no_grad():
                    states = agent.model(**batch, output_hidden_states=True).hidden_states
                feats[ex.id] = torch.stack([states[layer][0, -1].float() for layer in LAYERS])
                gen = agent.generate([prompt.text], max_new_tokens=16)[0]
                answer = answer_from_generation(gen.text)
                record = {
                    "id": ex.id, "file": os.path.basename(path), "answer": answer, "gold": ex.answer,
                    "correct": bool(answer is not None and ex.answer and answers_match(answer, ex.answer)),
                    "dp": answer_probability(agent.tokenizer, gen.token_ids, gen.logprobs),
                    "logprobs": gen.logprobs, "token_ids": gen.token_ids,
                }  # fmt: skip
                sink.write(json.dumps(record) + "\n")
                sink.flush()
                if len(feats) % 25 == 0:
                    torch.save(feats, out + ".pt")
                    print(len(feats), round(time.time() - start), flush=True)
    torch.save(feats, out + ".pt")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
