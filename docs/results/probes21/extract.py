"""Phase A: per problem of a committed evaluation, rebuild the relay's view of the small model's reasoning
(teacher-forced forward over the recorded text), per-unit features, and set-level labels from the records:
for each heuristic transfer S recorded, y_S = gold_logprob(S) - f_none, with S's unit mask.
Usage: python docs/results/probes21/extract.py [FOLDER ...]   (default: all 30; writes $PROBES21_WORK/feats/FOLDER.pt;
skips done ones). Needs the regenerated data in $PROBES21_WORK/data (make_data.sh)."""

import sys
import time
from pathlib import Path

import torch
from common import REPO, ROOTS, WORK, records_by_id, release_key

from selector.agents import Agent
from selector.baselines import load_selector, select_transfer
from selector.data import load_examples
from selector.features import token_units, unit_hidden, unit_scalars
from selector.prompts import reasoning_prompt
from selector.reasoning import view_from_generation
from selector.selection import Budget, build_transfer
from selector.units import unit_token_counts

HEUR = ["first", "last", "random", "selfinfo", "full"]


def main(folders):
    torch.set_num_threads(1)
    small = Agent.from_pretrained(REPO / "models" / "qwen2.5-coder-0.5b-instruct", dtype="bfloat16")
    from transformers import AutoTokenizer

    large_tok = AutoTokenizer.from_pretrained(REPO / "models" / "qwen2.5-coder-1.5b-instruct")
    (WORK / "feats").mkdir(parents=True, exist_ok=True)
    for folder in folders or sorted(ROOTS):
        out = Path(WORK / "feats" / f"{folder}.pt")
        if out.exists():
            continue
        t0 = time.time()
        data = str(WORK / "data" / f"{folder}.jsonl")
        exs = {e.id: e for e in load_examples(data)}
        by = records_by_id(folder)
        items = []
        for pid, c in by.items():
            ex = exs[pid]
            sr = c["small_reasoning"]
            text = sr["reasoning"]
            assert sr["gold"] == ex.answer or str(sr["gold"]).strip() == str(ex.answer).strip(), (
                pid,
                sr["gold"],
                ex.answer,
            )
            p = reasoning_prompt(small, ex.question, choices=ex.choices, images=ex.images)
            ids = small.tokenizer(text, add_special_tokens=False)["input_ids"]
            if small.tokenizer.decode(ids, skip_special_tokens=True) != text:
                print("decode mismatch", pid)
                continue
            enc = small.encode_prompt(p.text, [])
            pi = enc["input_ids"].reshape(-1)
            inp = torch.cat([pi, torch.tensor(ids)])[None]
            with torch.inference_mode():
                o = small.model(input_ids=inp, output_hidden_states=True)
            w = pi.shape[0]
            logits = o.logits[0, w - 1 : -1].float().log_softmax(-1)
            lps = logits.gather(1, torch.tensor(ids)[:, None])[:, 0].tolist()
            hid = o.hidden_states[-1][0, w:].float()
            qvec = o.hidden_states[-1][0, :w].float().mean(0)
            view = view_from_generation(
                ex.question, text, ids, lps, small.tokenizer, granularity="sentence", hidden_states=hid
            )
            n = len(view.units)
            if n == 0:
                continue
            counts = unit_token_counts(view.reasoning, view.units, large_tok)
            uot = token_units(view, as_array=True)
            H = (
                unit_hidden(view, "mean", uot)
                if view.token_spans is not None
                else torch.zeros(n, hid.shape[1])
            )
            S = unit_scalars(view, uot)
            sets = []
            for h in HEUR:
                for gate in ("always", "small_confidence"):
                    key = f"relay:{h}@0.25:{gate}" if h != "full" else f"relay:full:{gate}"
                    r = c.get(key)
                    if r is None or r["path"] != "transfer":
                        continue
                    sel = load_selector(h)
                    try:
                        mask = select_transfer(
                            sel, view, counts, Budget.ratio(1.0 if h == "full" else 0.25)
                        ).mask
                    except ValueError:
                        break
                    t = build_transfer(view.reasoning, view.units, mask, counts)
                    if t.text != r["transfer_text"]:
                        print("mask mismatch", folder, pid, h)
                        break
                    sets.append((h, mask, r["gold_logprob"] - r["f_none"]))
                    break
            rel = release_key(c, "small_confidence")
            items.append(
                dict(
                    id=pid,
                    n=n,
                    counts=counts,
                    H=H.half(),
                    S=S,
                    q=qvec.half(),
                    sets=sets,
                    f_none=sr["f_none"],
                    f_all=sr["f_all"],
                    finish=sr.get("small_finish"),
                    gate_path=c[rel]["path"] if rel else None,
                    rel_gold=c[rel]["gold_logprob"] if rel else None,
                    reasoning=text,
                    question=ex.question,
                    gold=ex.answer,
                    units=[(u.start, u.end) for u in view.units],
                )
            )
        torch.save(items, out)
        print(
            folder,
            len(items),
            "problems",
            sum(len(i["sets"]) for i in items),
            "sets",
            "%.0fs" % (time.time() - t0),
            flush=True,
        )


if __name__ == "__main__":
    main(sys.argv[1:])
