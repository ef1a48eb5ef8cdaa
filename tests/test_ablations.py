"""Ablation scripts: each config in configs/ablations/ runs one tiny step end to end, and resumes."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest

from scripts import ablate_gate, ablate_labelers, ablate_scorer
from selector.agents import Agent
from selector.data import load_examples
from selector.relay import Relay
from selector.shards import ShardWriter
from selector.units import split_units
from tests.selector_fixtures import make_tiny_bert, synthetic_records
from training.labelers import count_forwards, score_passes

ABLATIONS = Path(__file__).parent.parent / "configs" / "ablations"
TRAIN_YAML = str(Path(__file__).parent.parent / "configs" / "train.yaml")


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def records(small_tok, tiny_lm_dir):
    return synthetic_records(small_tok, 16, hidden=32, model=str(tiny_lm_dir))


def _write(path: Path, recs: list[dict]) -> str:
    ShardWriter(path).write(recs)
    return str(path)


def regranulate(records: list[dict], granularity: str, tokenizer) -> list[dict]:
    """The synthetic sentence-labelled traces cut into finer units; a unit takes its sentence's label."""
    out = []
    for rec in records:
        units = split_units(rec["reasoning"], granularity, tokenizer=tokenizer)
        sentences = list(zip(rec["unit_starts"], rec["unit_ends"], rec["labels"]))
        labels = [
            next(y for s, e, y in sentences if s <= u.start < e) + 0.01 * (k % 3) for k, u in enumerate(units)
        ]
        out.append(
            {
                **rec,
                "granularity": granularity,
                "unit_starts": [u.start for u in units],
                "unit_ends": [u.end for u in units],
                "unit_token_counts": [1] * len(units),
                "labels": labels,
            }
        )
    return out


def _mtimes(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


def _outputs(out: Path, stem: str) -> dict:
    for suffix in ("md", "csv", "json", "png"):
        assert (out / f"{stem}.{suffix}").stat().st_size > 0, suffix
    return json.loads((out / f"{stem}.json").read_text())


# --------------------------------------------------------------------------- scorer


def _scorer_config(name: str, out: Path, tiny_lm_dir, **kw) -> ablate_scorer.ScorerAblationConfig:
    config = ablate_scorer.config_from_yaml(ABLATIONS / name)
    overrides = {
        "trainer.max_epochs": 1,
        "trainer.accelerator": "cpu",
        "trainer.log_every_n_steps": 1,
        "data.batch_size": 8,
        "data.small_model": str(tiny_lm_dir),
        "model.scorer.d_model": 32,
    }
    return replace(
        config,
        train_config=TRAIN_YAML,
        out=str(out),
        overrides=overrides,
        infer_traces=3,
        infer_repeats=2,
        **kw,
    )


def _check_variants(summary: dict, values: list[str]) -> None:
    assert [v["variant"] for v in summary["variants"]] == values
    assert summary["same_val_split"] is True
    for v in summary["variants"]:
        m = v["metrics"]
        assert -1 <= m["spearman"] <= 1 and 0 <= m["ndcg@10"] <= 1, m
        assert all(math.isfinite(m[f"gain@{b}"]) for b in (0.1, 0.25, 0.5))
        assert v["checkpoint"] == "best" and v["checkpoint_path"].endswith("best.ckpt")
        assert v["n_train"] > 0 and v["n_val"] > 0 and v["steps"] > 0
        assert v["train_seconds"] > 0 and v["traces_per_s"] > 0 and v["infer_ms_per_trace"] > 0
        assert (Path(v["release"]) / "model.safetensors").exists()


def _saved_scorers(summary: dict) -> list[dict]:
    """The scorer config each variant's release was saved with."""
    return [
        json.loads((Path(v["release"]) / "config.json").read_text())["scorer"] for v in summary["variants"]
    ]


def test_scorer_loss_ablation_runs_and_resumes(tmp_path, records, tiny_lm_dir):
    data = _write(tmp_path / "labels", records)
    out = tmp_path / "out"
    config = _scorer_config("scorer_loss.yaml", out, tiny_lm_dir, data=data, values=["listwise", "pairwise"])
    ablate_scorer.run_ablation(config, progress=False)
    before = _mtimes(out / "variants")
    # Rerun with one more value: only the new variant trains, the finished ones are reused as they are.
    summary = ablate_scorer.run_ablation(replace(config, values=None), progress=False)
    after = _mtimes(out / "variants")
    assert {k: after[k] for k in before} == before
    assert any(k.startswith("bce_top_q/") for k in after) and "bce_top_q.json" in after
    _check_variants(summary, ["listwise", "pairwise", "bce_top_q"])
    assert all(f"--data.data={data}" in v["args"] for v in summary["variants"])
    assert {a for v in summary["variants"] for a in v["args"] if a.startswith("--model.loss=")} == {
        "--model.loss=listwise",
        "--model.loss=pairwise",
        "--model.loss=bce_top_q",
    }
    table = (out / "scorer_loss.md").read_text()
    assert "| bce_top_q |" in table and "gain_recovered@0.25" in table
    with pytest.raises(ValueError, match="other settings"):  # results of another data set are not mixed in
        ablate_scorer.run_ablation(replace(config, seed=1), progress=False)


def test_scorer_backbone_ablation_hidden_vs_encoder(tmp_path, records, tiny_lm_dir):
    bert = make_tiny_bert(tmp_path / "tiny-bert")
    config = _scorer_config(
        "scorer_backbone.yaml",
        tmp_path / "out",
        tiny_lm_dir,
        data=_write(tmp_path / "labels", records),
        encoder=str(bert),
        variant_overrides={"encoder": {"model.scorer.max_length": 128}},
    )
    summary = ablate_scorer.run_ablation(config, progress=False)
    _check_variants(summary, ["hidden", "encoder"])
    saved = _saved_scorers(summary)
    assert [s["backbone"] for s in saved] == ["hidden", "encoder"]
    assert saved[1]["encoder"] == str(bert)
    _outputs(tmp_path / "out", "scorer_backbone")


def test_scorer_head_ablation_transformer_vs_mlp(tmp_path, records, tiny_lm_dir):
    config = _scorer_config(
        "scorer_head.yaml", tmp_path / "out", tiny_lm_dir, data=_write(tmp_path / "labels", records)
    )
    # a train config that releases elsewhere (as the demo's does) must not receive the variants
    elsewhere = tmp_path / "train_elsewhere.yaml"
    elsewhere.write_text(
        Path(TRAIN_YAML).read_text().replace("dirpath: null ", f"dirpath: {tmp_path / 'shipped'} ")
    )
    assert str(tmp_path / "shipped") in elsewhere.read_text()
    summary = ablate_scorer.run_ablation(replace(config, train_config=str(elsewhere)), progress=False)
    assert not (tmp_path / "shipped").exists()
    _check_variants(summary, ["transformer", "mlp"])
    assert [s["head"] for s in _saved_scorers(summary)] == ["transformer", "mlp"]
    _outputs(tmp_path / "out", "scorer_head")


def test_scorer_encoder_layers_ablation_cuts_the_encoder(tmp_path, records, tiny_lm_dir):
    bert = make_tiny_bert(tmp_path / "tiny-bert")  # 2 layers
    config = _scorer_config(
        "scorer_encoder_layers.yaml",
        tmp_path / "out",
        tiny_lm_dir,
        data=_write(tmp_path / "labels", records),
        encoder=str(bert),
        values=["1", "2"],
    )
    config = replace(config, overrides={**config.overrides, "model.scorer.max_length": 128})
    summary = ablate_scorer.run_ablation(config, progress=False)
    _check_variants(summary, ["1", "2"])
    saved = _saved_scorers(summary)
    assert [(s["backbone"], s["encoder_layers"], s["encoder"]) for s in saved] == [
        ("encoder", 1, str(bert)),
        ("encoder", 2, str(bert)),
    ]
    _outputs(tmp_path / "out", "scorer_encoder_layers")


def test_scorer_granularity_ablation_reads_one_label_folder_per_granularity(
    tmp_path, records, small_tok, tiny_lm_dir
):
    labels = {g: _write(tmp_path / g, regranulate(records, g, small_tok)) for g in ("token", "word")}
    labels["sentence"] = _write(tmp_path / "sentence", records)
    config = _scorer_config("scorer_granularity.yaml", tmp_path / "out", tiny_lm_dir, labels=labels)
    summary = ablate_scorer.run_ablation(config, progress=False)
    _check_variants(summary, ["token", "word", "sentence"])
    units = {v["variant"]: v["mean_units"] for v in summary["variants"]}
    assert units["token"] > units["word"] > units["sentence"]
    _outputs(tmp_path / "out", "scorer_granularity")
    with pytest.raises(ValueError, match="labelled-traces folder per value"):
        replace(config, labels={"word": "x"})


# --------------------------------------------------------------------------- labelers


def test_labeler_ablation_runs_and_resumes_without_the_model(tmp_path, records, tiny_lm_dir):
    agent = Agent.from_pretrained(tiny_lm_dir, device="cpu")
    config = replace(
        ablate_labelers.config_from_yaml(ABLATIONS / "labelers.yaml"),
        traces=_write(tmp_path / "traces", records[:2]),
        model=str(tiny_lm_dir),
        out=str(tmp_path / "out"),
        masks=[4, 2],
        min_gain=-1e9,
        max_traces=2,
        batch_size=8,
    )
    with count_forwards(agent.model) as first:
        result = ablate_labelers.run_ablation(config, agent=agent, progress=False)
    assert first[0] > 0
    summary = _outputs(tmp_path / "out", "labelers")
    rows = {r["labeler"]: r for r in summary["rows"]}
    assert set(rows) == {"loo", "ablation@2", "ablation@4", "gradient", "random", "full"}
    assert rows["loo"]["spearman_vs_loo"] == 1.0 and rows["full"]["gain_recovered"] == 1.0
    for name in ("ablation@2", "ablation@4", "gradient"):
        assert rows[name]["spearman_vs_loo"] is None or -1 <= rows[name]["spearman_vs_loo"] <= 1
        assert rows[name]["est_seconds"] > 0
    assert rows["gradient"]["forward_passes"] == 1 + score_passes(2, 8)
    n_units = [len(r["unit_starts"]) for r in records[:2]]
    assert rows["loo"]["forward_passes"] == sum(score_passes(n + 2, 8) for n in n_units) / 2
    assert result["qualifying"] == [r["id"] for r in records[:2]]
    assert "| sentence | ablation@4 |" in (tmp_path / "out" / "labelers.md").read_text()
    # A rerun reads every f(S) and every per-trace result from disk: the model never runs.
    with count_forwards(agent.model) as second:
        again = ablate_labelers.run_ablation(config, agent=agent, progress=False)
    assert second[0] == 0 and again["rows"] == result["rows"]
    with pytest.raises(ValueError, match="other settings"):
        ablate_labelers.run_ablation(replace(config, keep_prob=0.3), agent=agent, progress=False)


# --------------------------------------------------------------------------- gate


def test_gate_sweep_is_exact_and_resumes(tmp_path, tiny_lm_dir, tiny_plain_lm_dir, arithmetic_jsonl, capsys):
    out = tmp_path / "out"
    common = [
        "--relay.small",
        str(tiny_lm_dir),
        "--relay.large",
        str(tiny_plain_lm_dir),
        "--data",
        str(arithmetic_jsonl),
        "--relay.reason_tokens",
        "12",
        "--relay.answer_tokens",
        "4",
        "--relay.granularity",
        "word",
        "--relay.device",
        "cpu",
        "--relay.reuse_prompt",  # tau 1 = never + always exactly only when both final prompts are prefilled whole
        "false",
    ]
    argv = [
        "--config",
        str(ABLATIONS / "gate.yaml"),
        *common,
        "--out",
        str(out),
        "--taus",
        "[0, 0.5, 1]",
        "--relay.score_gold",
        "true",
    ]
    assert ablate_gate.main(argv) == 0
    assert "| agreement |" in capsys.readouterr().out
    summary = _outputs(out, "gate_sweep")
    rows = summary["rows"]
    by = {(r["gate"], r["tau"]): r for r in rows}
    assert [(r["gate"], r["tau"]) for r in rows] == [
        ("never", None),
        ("always", None),
        ("confidence", 0.0),
        ("confidence", 0.5),
        ("confidence", 1.0),
        ("agreement", None),
    ]
    never, always = by[("never", None)], by[("always", None)]
    assert never["transfer_rate"] == 0 and always["transfer_rate"] == 1 and never["leak_rate"] == 0
    zero, one = by[("confidence", 0.0)], by[("confidence", 1.0)]  # tau 0: never transfers; 1: always (p < 1)
    assert zero["accuracy"] == never["accuracy"] and zero["latency_s"] == pytest.approx(never["latency_s"])
    assert one["transfer_rate"] == 1 and one["accuracy"] == always["accuracy"]
    assert one["latency_s"] == pytest.approx(never["latency_s"] + always["latency_s"])
    assert math.isfinite(never["gold_logprob"]) and zero["gold_logprob"] == never["gold_logprob"]
    assert one["gold_logprob"] == always["gold_logprob"]
    # The sweep is the engine's: its cache holds the model outputs, and its records the per-question runs.
    assert (out / "cache").is_dir() and (out / "results.json").is_file()

    # Exact: a relay gated at tau takes the same path and gives the same answer for every question.
    config = ablate_gate.config_from_yaml(ABLATIONS / "gate.yaml")
    relay = replace(
        config.relay,
        small=str(tiny_lm_dir),
        large=str(tiny_plain_lm_dir),
        reason_tokens=12,
        answer_tokens=4,
        granularity="word",
        device="cpu",
        score_gold=True,
        reuse_prompt=False,
    )
    config = replace(config, relay=relay, data=str(arithmetic_jsonl), out=str(out))
    small = Agent.from_pretrained(tiny_lm_dir, device="cpu")
    large = Agent.from_pretrained(tiny_plain_lm_dir, device="cpu")
    examples = load_examples(arithmetic_jsonl)
    direct = Relay(None, large, "none", config.relay_config("never")).run(examples, progress=False)
    always = Relay(small, large, "selfinfo", config.relay_config("always")).run(examples, progress=False)
    tau = sorted(d.direct_prob for d in direct)[2]  # a threshold that splits the questions
    gated = Relay(small, large, "selfinfo", replace(config.relay_config("confidence"), tau=tau)).run(
        examples, progress=False
    )
    for g, d, t in zip(gated, direct, always):
        go = d.direct_prob < tau
        assert g.path == ("transfer" if go else "direct")
        assert g.answer == (t.answer if go else d.answer)
    # A new tau list, rerun: nothing is generated again, and the new row matches the gated relay.
    with count_forwards(small.model) as s_calls, count_forwards(large.model) as l_calls:
        result = ablate_gate.run_sweep(replace(config, taus=[tau]), small=small, large=large, progress=False)
    assert s_calls[0] == 0 and l_calls[0] == 0
    row = next(r for r in result["rows"] if r["gate"] == "confidence")
    assert row["transfer_rate"] == sum(g.path == "transfer" for g in gated) / 5
    assert row["accuracy"] == sum(bool(g.correct) for g in gated) / 5
    with pytest.raises(ValueError, match="other settings"):
        ablate_gate.run_sweep(
            replace(config, relay=replace(relay, budget=0.5)), small=small, large=large, progress=False
        )
    with pytest.raises(ValueError, match="eval does not take relay.early_stop"):
        replace(config, relay=replace(relay, early_stop="confidence"))


# --------------------------------------------------------------------------- CLI


@pytest.mark.parametrize("module", [ablate_labelers, ablate_scorer, ablate_gate], ids=lambda m: m.__name__)
def test_help_and_bad_options(module, capsys):
    with pytest.raises(SystemExit) as exit_info:
        module.main(["--help"])
    assert exit_info.value.code == 0
    assert "--config" in capsys.readouterr().out
    yaml = {ablate_labelers: "labelers.yaml", ablate_scorer: "scorer_loss.yaml", ablate_gate: "gate.yaml"}[
        module
    ]
    bad = {
        ablate_labelers: ["--masks", "[0]"],
        ablate_scorer: ["--axis", "optimizer"],
        ablate_gate: ["--taus", "[1.5]"],
    }[module]
    assert module.main(["--config", str(ABLATIONS / yaml), *bad]) == 2
    assert "error" in capsys.readouterr().err
