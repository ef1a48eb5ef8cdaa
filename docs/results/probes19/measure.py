"""Session probes (nineteenth session): the model passes behind analyze.py. Run from the repository root with the
real pair in models/ (HF_HUB_OFFLINE=1); each writes one raw file beside this script.

    python docs/results/probes19/measure.py verify      # ~2 min: the large model's Yes/No verdict on its direct answer
    python docs/results/probes19/measure.py paraphrase  # ~8 min: the direct answer under two reworded instructions
    python docs/results/probes19/measure.py always      # ~4 min: the always-transfer row of each Xeon benchmark
    python docs/results/probes19/measure.py transfer    # ~1 min: its confidence in the answer after each transfer
    python docs/results/probes19/measure.py fallback DATA_DIR   # ~45 min: issue 12's candidate transfers scored

``paraphrase`` resumes: it ran in two parts (93 questions beside another job, then the other 59 in 3 min alone).
``verify``, ``paraphrase`` and ``transfer`` read the committed records of the four Intel Xeon latency samples
(docs/results/latency_amx_se3*/) and the data files named there; ``always`` needs those benchmarks' eval caches
(runs/bench_latency_amx_se3*/eval, from their configs) and recomputes only the large model's answers from the
transfers the confidence gate had kept back. ``fallback`` reads docs/results/selector_multitask5/*/records.jsonl.gz
and the questions of the 25 tasks in DATA_DIR (``python -m scripts.prepare_data reasoning-gym --task TASK --n 80
--seed 1 --out DATA_DIR/TASK.jsonl`` per task, with the simple_equations settings' options of docs/results.md;
the records' gold answers are checked against them). Models: the large one in bfloat16, both cores.
"""

from __future__ import annotations

import gzip
import json
import math
import shutil
import sys
from dataclasses import replace
from pathlib import Path

import torch

from selector.agents import Agent
from selector.answers import answers_match
from selector.gating import answer_from_generation
from selector.prompts import PromptTemplate, transfer_prompt

HERE = Path(__file__).parent
DOCS = HERE.parent
LARGE = "models/qwen2.5-coder-1.5b-instruct"
XEON = {  # benchmark config -> (committed folder, test data)
    "configs/latency_real_amx_se3_stop.yaml": ("latency_amx_se3", "data/simple_eq_eval32.jsonl"),
    "configs/latency_real_amx_se3_rep6_stop.yaml": ("latency_amx_se3_rep6", "data/se3_rep6_32.jsonl"),
    "configs/latency_real_amx_se3_rep7_fastest.yaml": ("latency_amx_se3_rep7", "data/se3_rep7_32.jsonl"),
    "configs/latency_real_amx_se3_rep8_fastest.yaml": ("latency_amx_se3_rep8", "data/se3_rep8_32.jsonl"),
}
VERIFY_PROMPTS = {
    "v1": "{q}\n\nProposed answer: {a}\n\nIs the proposed answer correct? Reply with Yes or No only.",
    "v2": "{q}\n\nA student's answer: {a}\n\nCheck the student's answer. Is it correct? Reply with Yes or No only.",
}
PARAPHRASES = {
    "p1": PromptTemplate(direct_instruction="Give only the final value, nothing else."),
    "p2": PromptTemplate(direct_instruction="What is the solution? State just the answer."),
}
HEURISTIC_ROWS = ["first", "last", "selfinfo", "random", "full"]
RELEASE = "relay:pointwise-fallback-nothing-300@0.25:small_confidence"
TASK_FILES = {"se2": "se2", "se3": "se3", "se4": "se4", "coin6": "coin_flip"}
"""Folders whose data file is not named after the task (simple_equations settings; coin_flip max_trials=6)."""
DATA_DIR_HINT = "the question file does not match the records (regenerate it with the records' task options)"


def _questions(path: str | Path) -> dict[str, dict]:
    return {r["id"]: r for r in map(json.loads, Path(path).read_text().splitlines())}


def _first_line(text: str | None) -> str | None:
    return next((" " + line.strip() for line in (text or "").splitlines() if line.strip()), None)


def _line_confidence(agent: Agent, prompt: tuple[str, str], line: str) -> float:
    """exp(mean log-prob) of an answer line after its prompt: the gate's measure on a recorded answer."""
    res = agent.score([prompt], [line])[0]
    return math.exp(res.logprob / len(res.token_logprobs))


def verify(agent: Agent) -> None:
    yes = [agent.tokenizer.encode(w, add_special_tokens=False)[0] for w in ("Yes", "yes", " Yes")]
    no = [agent.tokenizer.encode(w, add_special_tokens=False)[0] for w in ("No", "no", " No")]
    sets = {"dev": ("latency_amx_se3/dev_records.jsonl", "data/simple_eq_dev24.jsonl")}
    sets.update({folder: (f"{folder}/eval_records.jsonl", data) for folder, data in XEON.values()})
    with open(HERE / "gate_verify.jsonl", "w") as out:
        for name, (records, data) in sets.items():
            questions = _questions(data)
            for r in map(json.loads, (DOCS / records).read_text().splitlines()):
                if r["condition"] != "large_direct":
                    continue
                row = {"set": name, "id": r["id"], "correct": bool(r["correct"]), "dp": r["direct_prob"]}
                for key, text in VERIFY_PROMPTS.items():
                    user = text.format(q=questions[r["id"]]["question"], a=r["direct_answer"])
                    ids = agent.encode_text(agent.format_chat(user))[None]
                    with torch.inference_mode():
                        logp = (
                            agent.model(input_ids=ids, logits_to_keep=1).logits[0, -1].float().log_softmax(-1)
                        )
                    p_yes, p_no = torch.logsumexp(logp[yes], 0).item(), torch.logsumexp(logp[no], 0).item()
                    row[key] = 1 / (1 + math.exp(p_no - p_yes))
                out.write(json.dumps(row) + "\n")


def paraphrase(agent: Agent) -> None:
    """The large model's direct answer under two reworded direct-answer instructions: does it agree with itself?"""
    path = HERE / "gate_paraphrase.jsonl"
    done = (
        {(r["set"], r["id"]) for r in map(json.loads, path.read_text().splitlines())}
        if path.exists()
        else set()
    )
    sets = {"dev": ("latency_amx_se3/dev_records.jsonl", "data/simple_eq_dev24.jsonl")}
    sets.update(
        {
            Path(c).stem.removeprefix("latency_real_"): (f"{f}/eval_records.jsonl", d)
            for c, (f, d) in XEON.items()
        }
    )
    with open(path, "a") as out:
        for name, (records, data) in sets.items():
            questions = _questions(data)
            for r in map(json.loads, (DOCS / records).read_text().splitlines()):
                if r["condition"] != "large_direct" or (name, r["id"]) in done:
                    continue
                row = {"set": name, "id": r["id"], "dp": r["direct_prob"], "answer": r["direct_answer"],
                       "correct": bool(r["correct"])}  # fmt: skip
                for key, template in PARAPHRASES.items():
                    prompt = transfer_prompt(
                        agent, questions[r["id"]]["question"], None, template=template
                    ).text
                    answer = answer_from_generation(agent.generate([prompt], max_new_tokens=16)[0].text)
                    row[key] = answer
                    row[key + "_agree"] = bool(answer and r["direct_answer"]) and answers_match(
                        answer, r["direct_answer"]
                    )
                    row[key + "_right"] = bool(answer) and answers_match(answer, r["gold"])
                out.write(json.dumps(row) + "\n")
                out.flush()


def always() -> None:
    sys.path.insert(0, ".")
    from scripts.bench_latency import config_from_yaml
    from selector.evaluation.engine import run_eval

    for path in XEON:
        cfg = config_from_yaml(path).resolve_dtypes()
        work = Path("runs/probes19") / Path(cfg.out).name
        if not work.exists():  # a copy: the benchmark's own folder stays as it ran
            shutil.copytree(Path(cfg.out) / "eval", work)
        ev = replace(cfg.eval_config(), gates=["always"], conditions=["large_direct", "relay"], out=str(work))
        agents = tuple(
            Agent.from_pretrained(p, **cfg.relay.load_kwargs(role))
            for p, role in ((cfg.relay.small, "small"), (cfg.relay.large, "large"))
        )
        run_eval(ev, agents=agents, progress=False)
        name = Path(cfg.out).name.removeprefix("bench_latency_")
        lines = [x for x in (work / "records.jsonl").read_text().splitlines() if ':always"' in x]
        (HERE / f"always_{name}.jsonl").write_text("\n".join(lines) + "\n")


def transfer(agent: Agent) -> None:
    with open(HERE / "transfer_confidence.jsonl", "w") as out:
        for path, (_, data) in XEON.items():
            questions = _questions(data)
            name = Path(path).stem.removeprefix("latency_real_")
            for r in map(json.loads, (HERE / f"always_{name}.jsonl").read_text().splitlines()):
                line = _first_line(r["output"])
                prompt = transfer_prompt(agent, questions[r["id"]]["question"], r["transfer_text"]).as_pair()
                tp = _line_confidence(agent, prompt, line) if line else 0.0
                out.write(
                    json.dumps({"sample": name, "id": r["id"], "tp": tp, "t_ok": bool(r["correct"])}) + "\n"
                )


def fallback(agent: Agent, data_dir: Path) -> None:
    """Where the release sends nothing although its gate transfers: each candidate's answer confidence."""
    root = DOCS / "selector_multitask5"
    with gzip.open(HERE / "fallback_confidence.jsonl.gz", "wt") as out:
        for folder in sorted(p for p in root.iterdir() if (p / "records.jsonl.gz").exists()):
            rows: dict[str, dict[str, dict]] = {}
            with gzip.open(folder / "records.jsonl.gz", "rt") as lines:
                for r in map(json.loads, lines):
                    rows.setdefault(r["id"], {})[r["condition"]] = r
            task = next(iter(rows)).rsplit("-", 2)[0]
            questions = _questions(data_dir / f"{TASK_FILES.get(folder.name, task)}.jsonl")
            for pid, by in rows.items():
                rel = by[RELEASE]
                if rel["path"] != "transfer" or rel["transfer_tokens"] > 0:
                    continue
                q = questions[pid]
                if str(q["answer"]).strip() != str(rel["gold"]).strip():
                    raise ValueError(f"{pid}: {DATA_DIR_HINT}")
                row = {"task": folder.name, "id": pid, "flagged": bool(rel.get("selector_fallback"))}
                cands = [("none", by["large_direct"], None)]
                for h in HEURISTIC_ROWS:
                    cond = (
                        f"relay:{h}:small_confidence" if h == "full" else f"relay:{h}@0.25:small_confidence"
                    )
                    cands.append((h, by[cond], by[cond]["transfer_text"]))
                for name, r, text in cands:
                    line = _first_line(r["output"])
                    prompt = transfer_prompt(agent, q["question"], text).as_pair()
                    row[name] = {"gold": r["gold_logprob"], "correct": bool(r["correct"]),
                                 "leaked": bool(r["leaked"]),
                                 "conf": _line_confidence(agent, prompt, line) if line else 0.0}  # fmt: skip
                out.write(json.dumps(row) + "\n")


def main(argv: list[str]) -> None:
    what = argv[0] if argv else ""
    if what == "always":
        return always()
    if what not in ("verify", "paraphrase", "transfer", "fallback"):
        raise SystemExit(__doc__)
    agent = Agent.from_pretrained(LARGE, dtype="bfloat16")
    if what == "verify":
        verify(agent)
    elif what == "paraphrase":
        paraphrase(agent)
    elif what == "transfer":
        transfer(agent)
    else:
        fallback(agent, Path(argv[1]))


if __name__ == "__main__":
    main(sys.argv[1:])
