"""Phase C: leave-one-task-out training of the set-value selector (see docs/results/probes21/preregistration.md);
writes $PROBES21_WORK/masks.json ($MASKS; GROUPING=category holds out a reasoning-gym category at a time): {folder: {id: mask}} for every held-out problem with units."""

import glob
import os
import zlib
from pathlib import Path

import numpy as np
import torch
from common import HERE, WORK, read_json, write_json

from selector.selection import Budget, select_units

FAMILY = {"se2": "se", "se3": "se", "se4": "se"}
if os.environ.get("GROUPING") == "category":
    FAMILY = read_json(HERE / "categories.json")
items = {
    Path(p).stem: torch.load(p, weights_only=False) for p in sorted(glob.glob(str(WORK / "feats" / "*.pt")))
}
fams = sorted({FAMILY.get(f, f) for f in items})


def feats(it):
    return torch.cat([it["H"].float(), it["S"].float()], 1)


class MLP(torch.nn.Module):
    def __init__(self, d):
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(d, 64), torch.nn.GELU(), torch.nn.Dropout(0.1), torch.nn.Linear(64, 1)
        )

    def forward(self, x):
        return self.net(x)[:, 0]


def train(train_items, seed):
    torch.manual_seed(seed)
    its = [it for it in train_items if it["sets"]]
    X = torch.cat([feats(it) for it in train_items])
    mu, sd = X.mean(0), X.std(0).clamp_min(1e-4)
    Xs = [(feats(it) - mu) / sd for it in its]
    model = MLP(X.shape[1])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-2)
    g = torch.Generator().manual_seed(seed)
    for _epoch in range(30):
        model.train()
        order = torch.randperm(len(its), generator=g).tolist()
        for b in range(0, len(order), 32):
            batch = order[b : b + 32]
            xs, idx, sid, ys, ws = [], [], [], [], []
            off, nset = 0, 0
            for k in batch:
                it = its[k]
                xs.append(Xs[k])
                for _, m, y in it["sets"]:
                    on = [off + i for i, v in enumerate(m) if v]
                    idx.extend(on)
                    sid.extend([nset] * len(on))
                    ys.append(float(np.clip(y, -20, 20)))
                    ws.append(1.0 / len(it["sets"]))
                    nset += 1
                off += Xs[k].shape[0]
            s = model(torch.cat(xs))
            pred = torch.zeros(nset).index_add(
                0, torch.tensor(sid, dtype=torch.long), s[torch.tensor(idx, dtype=torch.long)]
            )
            err = torch.nn.functional.huber_loss(pred, torch.tensor(ys), delta=1.0, reduction="none")
            loss = (err * torch.tensor(ws)).sum() / len(batch)
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    return model, mu, sd


def in_domain() -> dict:
    """GROUPING=problem: four folds of problems (by a hash of the id) across every task; each fold's problems are
    scored by a selector trained on the other three folds of all tasks, its own task included."""
    fold = {f: {it["id"]: zlib.crc32(it["id"].encode()) % 4 for it in items[f]} for f in items}
    out = {f: {} for f in items}
    for k in range(4):
        tr = [it for f in items for it in items[f] if fold[f][it["id"]] != k]
        models = [train(tr, seed) for seed in (0, 1, 2)]
        for f in items:
            for it in items[f]:
                if fold[f][it["id"]] != k:
                    continue
                x = feats(it)
                with torch.no_grad():
                    s = torch.stack([m((x - mu) / sd) for m, mu, sd in models]).mean(0).tolist()
                mask = select_units(s, it["counts"], Budget.ratio(0.25), min_score=0.0)
                out[f][it["id"]] = {"mask": mask, "scores": s}
        print("fold", k, "train traces", len(tr), flush=True)
    return out


def main():
    if os.environ.get("GROUPING") == "problem":
        write_json(os.environ.get("MASKS", str(WORK / "masks_problem.json")), in_domain())
        return
    out = {}
    for fam in fams:
        test = [f for f in items if FAMILY.get(f, f) == fam]
        tr = [it for f in items if FAMILY.get(f, f) != fam for it in items[f]]
        models = [train(tr, seed) for seed in (0, 1, 2)]
        for f in test:
            out[f] = {}
            for it in items[f]:
                x = feats(it)
                with torch.no_grad():
                    s = torch.stack([m((x - mu) / sd) for m, mu, sd in models]).mean(0).tolist()
                mask = select_units(s, it["counts"], Budget.ratio(0.25), min_score=0.0)
                out[f][it["id"]] = {"mask": mask, "scores": s}
            sent = np.mean([any(v["mask"]) for v in out[f].values()]) if out[f] else 0
            print(fam, f, "train traces", len(tr), f"sent any {sent:.2f}", flush=True)
    write_json(os.environ.get("MASKS", str(WORK / "masks.json")), out)


if __name__ == "__main__":
    main()
