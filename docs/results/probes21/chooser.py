"""Second design (docs/results/probes21/preregistration.md): a ridge per option predicts each recorded transfer's
gain from trace-level features; leave one task out; the chosen option's recorded value is the selector's."""

import numpy as np
import torch
from common import ROOTS, WORK, fmt, records_by_id, release_key, write_json

from selector.evaluation.paired import paired_comparison

FAMILY = {"se2": "se", "se3": "se", "se4": "se"}
OPTS = ["first", "last", "random", "selfinfo", "release"]
HEUR = ["first", "last", "random", "selfinfo"]
ALPHAS = [10.0, 100.0, 1000.0, 10000.0]


def key(h, gate):
    return f"relay:{h}@0.25:{gate}"


rows = []  # one per problem
for folder in sorted(ROOTS):
    items = {it["id"]: it for it in torch.load(WORK / "feats" / f"{folder}.pt", weights_only=False)}
    by = records_by_id(folder)
    for pid, c in sorted(by.items()):
        it = items.get(pid)
        sc = {h: c[key(h, "small_confidence")] for h in HEUR}
        rel_sc = c[release_key(c, "small_confidence")]
        test_vals = {
            **{h: sc[h]["gold_logprob"] for h in HEUR},
            "release": rel_sc["gold_logprob"],
            "none": c[key("first", "small_confidence")]["f_none"]
            if sc["first"]["path"] == "transfer"
            else sc["first"]["gold_logprob"],
            "full": c["relay:full:small_confidence"]["gold_logprob"],
        }
        path = sc["first"]["path"]
        # training targets: the always gate where recorded, else the gate's transfers
        tr = None
        if key("first", "always") in c:
            ra = c[release_key(c, "always")]
            tr = {h: c[key(h, "always")]["gold_logprob"] for h in HEUR}
            tr["release"] = ra["gold_logprob"]
        elif path == "transfer":
            tr = {h: sc[h]["gold_logprob"] for h in HEUR}
            tr["release"] = rel_sc["gold_logprob"]
        x = None
        if it is not None:
            sp = rel_sc.get("small_prob")
            dp = rel_sc.get("direct_prob")
            extra = [
                np.log(it["n"]),
                np.log1p(len(it["counts"]) and sum(it["counts"])),
                float(it["finish"] == "length"),
                float(sp) if sp is not None else 0.0,
                float(dp) if dp is not None else 0.0,
                float(bool(rel_sc.get("selector_fallback"))),
            ]
            x = np.concatenate([it["H"].float().mean(0).numpy(), it["q"].float().numpy(), np.array(extra)])
        rows.append(
            dict(
                folder=folder,
                fam=FAMILY.get(folder, folder),
                id=pid,
                x=x,
                f_none=sc["first"]["f_none"],
                path=path,
                train={k: float(np.clip(v - sc["first"]["f_none"], -20, 20)) for k, v in tr.items()}
                if tr and x is not None
                else None,
                test=test_vals,
            )
        )


def ridge_fit(X, Y, alpha):
    mu, sd = X.mean(0), X.std(0) + 1e-6
    Z = (X - mu) / sd
    ym = Y.mean(0)
    K = Z @ Z.T
    A = np.linalg.solve(K + alpha * np.eye(len(Z)), Y - ym)
    W = Z.T @ A
    return lambda Xn: ((Xn - mu) / sd) @ W + ym


def fit_with_cv(train_rows):
    X = np.stack([r["x"] for r in train_rows])
    Y = np.array([[r["train"][o] for o in OPTS] for r in train_rows])
    fams = sorted({r["fam"] for r in train_rows})
    fold = {f: i % 5 for i, f in enumerate(fams)}
    g = np.array([fold[r["fam"]] for r in train_rows])
    best = []
    for j in range(len(OPTS)):
        err = {a: 0.0 for a in ALPHAS}
        for k in range(5):
            tr, te = g != k, g == k
            if te.sum() == 0:
                continue
            for a in ALPHAS:
                pred = ridge_fit(X[tr], Y[tr][:, [j]], a)(X[te])[:, 0]
                err[a] += float(((pred - Y[te][:, j]) ** 2).sum())
        best.append(min(ALPHAS, key=lambda a: err[a]))
    models = [ridge_fit(X, Y[:, [j]], best[j]) for j in range(len(OPTS))]
    return (lambda Xn: np.stack([m(Xn)[:, 0] for m in models], 1)), best


chosen = {}
for fam in sorted({r["fam"] for r in rows}):
    train_rows = [r for r in rows if r["fam"] != fam and r["train"] is not None]
    test_rows = [r for r in rows if r["fam"] == fam]
    predict, alphas = fit_with_cv(train_rows)
    for r in test_rows:
        if r["x"] is None or r["path"] == "direct":
            choice = "none" if r["x"] is None else "direct"
        else:
            p = predict(r["x"][None])[0]
            choice = OPTS[int(p.argmax())] if p.max() >= 0 else "none"
        chosen[(r["folder"], r["id"])] = choice
    print(fam, "alphas", alphas, flush=True)


out = {}
print(
    "\n| task | n | choices (transfer path) | gold log-prob | vs best heuristic (which) | vs full transfer | vs release |"
)
print("|---|---|---|---|---|---|---|")
pool = {k: [] for k in ["new", "full", "release", *HEUR]}
won, lost, below = [], [], []
for folder in sorted(ROOTS):
    rs = [r for r in rows if r["folder"] == folder]
    new = []
    counts = {}
    for r in rs:
        ch = chosen[(folder, r["id"])]
        counts[ch] = counts.get(ch, 0) + 1
        v = r["test"]["none"] if ch in ("none", "direct") else r["test"][ch]
        new.append(v)
    vals = {h: [r["test"][h] for r in rs] for h in [*HEUR, "full", "release"]}
    best = max(HEUR, key=lambda h: np.mean(vals[h]))
    for k in pool:
        pool[k].extend(new if k == "new" else vals[k])
    vb, vf, vr = (
        paired_comparison(new, vals[best]),
        paired_comparison(new, vals["full"]),
        paired_comparison(new, vals["release"]),
    )
    if vb["ci_low"] > 0:
        won.append(folder)
    if vb["ci_high"] < 0:
        lost.append(folder)
    if vf["mean_diff"] < 0:
        below.append(folder)
    out[folder] = dict(
        choices=counts, mean=float(np.mean(new)), best=best, vs_best=vb, vs_full=vf, vs_release=vr
    )
    choices = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
    cells = [folder, len(rs), choices, f"{np.mean(new):.2f}", f"{fmt(vb)} ({best})", fmt(vf), fmt(vr)]
    print("| " + " | ".join(map(str, cells)) + " |")
best = max(HEUR, key=lambda h: np.mean(pool[h]))
cells = [
    "pooled",
    len(pool["new"]),
    "",
    f"{np.mean(pool['new']):.2f}",
    f"{fmt(paired_comparison(pool['new'], pool[best]))} ({best})",
    fmt(paired_comparison(pool["new"], pool["full"])),
    fmt(paired_comparison(pool["new"], pool["release"])),
]
print("| " + " | ".join(map(str, cells)) + " |")
print(f"\nwon {len(won)}: {won}\nlost {len(lost)}: {lost}\nmean below full on {len(below)}: {below}")
write_json(str(WORK / "chooser.json"), out, indent=1)
