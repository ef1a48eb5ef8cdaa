"""A session probe: where the released (answer-stated) stop head stops at p >= 0.9, read against the stop labels
measured through the relay (traces done at every boundary left out, as train_stop_head --labels does).

    python docs/results/stop_enough/released_vs_measured.py
"""

import collections
import glob
import json
from pathlib import Path

import numpy as np
import torch

from selector.stop_head import StopHead
from selector.traces import load_traces


def main() -> None:
    head = StopHead.from_pretrained("checkpoints/qwen2.5-coder-0.5b-stop-head")
    records = {}
    for path in glob.glob("runs/stop_enough/all_*.jsonl"):
        for line in Path(path).read_text().splitlines():
            rec = json.loads(line)
            records[rec["id"]] = rec
    # per task: traces, stopped, premature under the measured label, tokens saved, tokens an oracle stop saves
    agg = collections.defaultdict(lambda: [0, 0, 0, 0.0, 0.0])
    for folder in glob.glob("runs/real/lab/traces_*"):
        for t in load_traces(folder):
            rec = records.get(t["id"])
            if rec is None or all(rec["labels"]):
                continue
            states = np.asarray(t["hidden_states"], dtype=np.float32)[[k - 1 for k in rec["points"]]]
            with torch.no_grad():
                probs = head(torch.tensor(states)).numpy()
            hit = next((j for j, p in enumerate(probs) if p >= 0.9), None)
            first = next((j for j, y in enumerate(rec["labels"]) if y), None)
            a = agg[t["id"].rsplit("-", 2)[0]]
            a[0] += 1
            if hit is not None:
                a[1] += 1
                a[2] += not rec["labels"][hit]
                a[3] += 1 - rec["points"][hit] / rec["tokens"]
            if first is not None:
                a[4] += 1 - rec["points"][first] / rec["tokens"]
    for task, (n, stopped, premature, saved, oracle) in sorted(agg.items()):
        print(f"{task:26s} traces {n:3d} stopped {stopped / n:.2f} premature(measured) {premature / n:.2f} "
              f"saved {saved / n:.2f} oracle saved {oracle / n:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
