"""Where the released relay's accuracy goes on the four Xeon samples (eighteenth session; seconds, no model):

    python docs/results/latency_amx_se3_rep8/where_accuracy.py

Per question of each sample's live `calibrated+stop=head` records: the relay's path (direct or transfer) against the
large model's own reasoning and the small model's own reasoning on the same question; and how well two signals tell a
right direct answer from a wrong one (AUROC): the gate's own (the direct answer's probability) and the small model's
probability of the large model's direct answer (small_direct.json, written by small_direct.py)."""

import glob
import json
from pathlib import Path

from selector.answers import answers_match

ROOT = Path("docs/results")
SAMPLES = {
    "1": "latency_amx_se3",
    "6": "latency_amx_se3_rep6",
    "7": "latency_amx_se3_rep7",
    "8": "latency_amx_se3_rep8",
}


def auroc(pos: list[float], neg: list[float]) -> float:
    return sum((p > n) + 0.5 * (p == n) for p in pos for n in neg) / (len(pos) * len(neg))


def main() -> None:
    small_direct = json.loads((ROOT / "latency_amx_se3_rep8" / "small_direct.json").read_text())
    paths = {
        "direct": [0, 0, 0, 0],
        "transfer": [0, 0, 0, 0],
    }  # questions, relay right, own right, small right
    signals = []  # (direct answer right, its probability, small model's probability of it, the two agree)
    for sample, folder in SAMPLES.items():
        records: dict[str, dict] = {}
        for line in (ROOT / folder / "eval_records.jsonl").read_text().splitlines():
            r = json.loads(line)
            records.setdefault(r["condition"], {})[r["id"]] = r
        live = next(f for f in glob.glob(str(ROOT / folder / "live" / "*.jsonl")) if "stop=head" in f)
        for r in map(json.loads, Path(live).read_text().splitlines()):
            row = paths["transfer" if r["path"] == "transfer" else "direct"]
            row[0] += 1
            row[1] += bool(r["correct"])
            row[2] += bool(records["large_reasoning"][r["id"]]["correct"])
            row[3] += bool(records["small_reasoning"][r["id"]]["correct"])
        for i, d in records["large_direct"].items():
            s = small_direct[sample][i]
            agree = bool(d["direct_answer"]) and answers_match(s["small_direct"], d["direct_answer"])
            signals.append((bool(d["correct"]), d["direct_prob"], s.get("small_p_of_large", 0.0), agree))
    for path, (n, relay, own, small) in paths.items():
        print(f"{path}: {n} questions, relay right {relay}, large own reasoning {own}, small alone {small}")
    right = [s for s in signals if s[0]]
    wrong = [s for s in signals if not s[0]]
    print(
        f"direct answers right {len(right)} of {len(signals)}; the small model's direct answer agrees on "
        f"{sum(s[3] for s in signals)}"
    )
    print(
        f"AUROC (direct answer right): its probability {auroc([s[1] for s in right], [s[1] for s in wrong]):.3f}, "
        f"the small model's probability of it {auroc([s[2] for s in right], [s[2] for s in wrong]):.3f}"
    )


if __name__ == "__main__":
    main()
