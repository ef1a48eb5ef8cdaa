"""`tokenrelay eval` on tiny real models: every output, a cache that really spares the models, bad input."""

from __future__ import annotations

import csv
import json
from collections import Counter

import pytest

from selector.agents import Agent
from selector.cli import main
from selector.evaluation import EvalConfig, OutputCache, build_grid, pareto_front, run_eval
from selector.relay import RelayConfig
from selector.scorer import ScorerConfig, TokenSelector


class CountingAgent(Agent):
    """The real agent, counting the prompts that reach the model (the cache must spare them)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls: Counter = Counter()

    def generate(self, prompts, **kwargs):
        self.calls["generate"] += len(prompts)
        return super().generate(prompts, **kwargs)

    def score(self, prompts, targets, **kwargs):
        self.calls["score"] += len(prompts)
        return super().score(prompts, targets, **kwargs)

    def answer_and_score(self, prompts, targets, **kwargs):
        self.calls["answer_and_score"] += len(prompts)
        return super().answer_and_score(prompts, targets, **kwargs)

    def hidden_states_of(self, prompts, continuations, **kwargs):
        self.calls["hidden_states_of"] += len(prompts)
        return super().hidden_states_of(prompts, continuations, **kwargs)


@pytest.fixture(scope="module")
def agents(tiny_lm_dir, tiny_plain_lm_dir):
    small = CountingAgent.from_pretrained(tiny_lm_dir, device="cpu")
    large = CountingAgent.from_pretrained(tiny_plain_lm_dir, device="cpu")
    return small, large


@pytest.fixture(scope="module")
def hidden_selector_dir(tiny_lm_dir, tmp_path_factory):
    """A (random-weight) trained selector of the `hidden` backbone, fitted to the tiny small model."""
    small = Agent.from_pretrained(tiny_lm_dir, device="cpu")
    config = ScorerConfig(
        hidden_layer=-1, hidden_size=32, small_model=str(tiny_lm_dir), d_model=32,
        granularity="word", small_vocab_size=len(small.tokenizer),
    )  # fmt: skip
    return TokenSelector(config).save_pretrained(tmp_path_factory.mktemp("sel") / "tiny-selector")


def _config(data, tiny_lm_dir, tiny_plain_lm_dir, out, **kw) -> EvalConfig:
    relay = RelayConfig(small=str(tiny_lm_dir), large=str(tiny_plain_lm_dir), reason_tokens=10, answer_tokens=3,
                        batch_size=2, granularity="word", device="cpu")  # fmt: skip
    options = {
        "data": str(data), "relay": relay, "out": str(out),
        "selectors": ["none", "full", "first", "selfinfo", "random", "oracle"], "budgets": [0.25, 0.5],
        "gates": ["always", "agreement"], "large_reason_tokens": 8, "plot": False, **kw,
    }  # fmt: skip
    return EvalConfig(**options)


def _reset(agents):
    for a in agents:
        a.calls.clear()


def test_cli_writes_every_output_with_a_row_per_condition(
    tiny_lm_dir, tiny_plain_lm_dir, arithmetic_jsonl, hidden_selector_dir, tmp_path, capsys
):
    out = tmp_path / "eval"
    args = ["eval", "--data", str(arithmetic_jsonl), "--relay.small", str(tiny_lm_dir), "--relay.large", str(tiny_plain_lm_dir),
            "--out", str(out), "--selectors", json.dumps(["none", "full", "selfinfo", str(hidden_selector_dir)]),
            "--budgets", "[0.25, 0.5]", "--gates", "[always, confidence, agreement, small_confidence]", "--relay.tau", "0.5", "--relay.small-tau", "0.5",
            "--relay.reason-tokens", "10", "--relay.answer-tokens", "3", "--large-reason-tokens", "8", "--relay.batch-size", "2",
            "--relay.granularity", "word", "--relay.device", "cpu"]  # fmt: skip
    assert main(args) == 0
    printed = capsys.readouterr().out
    for name in ("results.md", "results.csv", "results.json", "records.jsonl", "accuracy_vs_tokens.png",
                 "accuracy_vs_latency.png", "cache/outputs.jsonl"):  # fmt: skip
        assert (out / name).stat().st_size > 0, name
    result = json.loads((out / "results.json").read_text())
    config = _config(arithmetic_jsonl, tiny_lm_dir, tiny_plain_lm_dir, out,
                     selectors=["none", "full", "selfinfo", str(hidden_selector_dir)],
                     gates=["always", "confidence", "agreement", "small_confidence"])  # fmt: skip
    ids = [c.id for c in build_grid(config)]
    # 3 model baselines + per gate: none, full, selfinfo x 2 budgets, trained x 2 budgets.
    assert len(ids) == 3 + 4 * (2 + 2 * 2) and len(set(ids)) == len(ids)
    assert [r["condition"] for r in result["rows"]] == ids
    assert "relay:tiny-selector@0.25:agreement" in ids
    with (out / "results.csv").open() as f:
        assert [row["condition"] for row in csv.DictReader(f)] == ids
    table = (out / "results.md").read_text()
    for row in result["rows"]:
        assert f"| {row['title']} |" in table
        assert row["title"] in printed
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert len(records) == len(ids) * 5
    assert Counter(r["condition"] for r in records) == dict.fromkeys(ids, 5)

    rows = {r["condition"]: r for r in result["rows"]}
    for row in rows.values():
        assert row["n"] == 5 and 0 <= row["accuracy"] <= 1
        assert row["end_to_end"] > 0
        assert row["end_to_end"] == pytest.approx(sum(row["latency"].values()))  # sequential accounting
    assert (
        rows["large_direct"]["latency"]["large_direct"] > 0 and rows["large_direct"]["transfer_rate"] is None
    )
    assert rows["large_direct"]["leakage"] == 0 and rows["large_direct"]["gold_logprob"] == pytest.approx(
        result["mean_f_none"]
    )
    own = rows["large_reasoning"]
    assert 1 <= own["output_tokens"] <= 8 and 1 <= rows["small_reasoning"]["output_tokens"] <= 10
    assert 1 <= rows["large_direct"]["output_tokens"] <= 3
    assert (
        own["latency"]["large_prefill"] > 0
        and own["latency"]["small_reasoning"] == 0
        and own["leakage"] is None
    )
    assert (
        rows["small_reasoning"]["latency"]["small_reasoning"] > 0
        and rows["small_reasoning"]["gold_logprob"] is None
    )
    for gate in ("always", "confidence", "agreement", "small_confidence"):
        none, full = rows[f"relay:none:{gate}"], rows[f"relay:full:{gate}"]
        assert none["transferred_tokens"] == 0 and none["leakage"] == 0
        assert full["transferred_tokens"] >= rows[f"relay:selfinfo@0.5:{gate}"]["transferred_tokens"]
        assert (
            rows[f"relay:selfinfo@0.25:{gate}"]["transferred_tokens"]
            <= rows[f"relay:selfinfo@0.5:{gate}"]["transferred_tokens"]
        )
        assert 0 <= full["transfer_rate"] <= 1 and full["gain_n"] == result["full_helps"]
        assert 0 <= full["leakage"] <= 1
    always = rows["relay:full:always"]
    assert always["transfer_rate"] == 1 and always["latency"]["large_direct"] == 0
    assert always["transfer_ratio"] == pytest.approx(1.0) and always["latency"]["small_reasoning"] > 0
    assert rows["relay:none:always"]["gold_logprob"] == pytest.approx(result["mean_f_none"])
    assert always["gold_logprob"] == pytest.approx(result["mean_f_all"])
    if always["gain_n"]:  # f(kept) is f(all) and f(none) exactly: the same cached scores
        assert always["gain_recovered"] == pytest.approx(1.0)
        assert rows["relay:none:always"]["gain_recovered"] == pytest.approx(0.0)
    for b in (0.25, 0.5):
        sel = rows[f"relay:selfinfo@{b}:always"]
        assert sel["transfer_ratio"] <= b + 1e-9
    trained = rows["relay:tiny-selector@0.5:always"]
    assert trained["latency"]["selection"] > 0 and trained["transfer_rate"] == 1
    # Paired statistics: the trained selector against the best heuristic (here selfinfo, the only
    # one) at each budget and gate, and against the full transfer and no transfer; checked against the records.
    paired = {(p["condition"], p["reference"]): p for p in result["paired"]}
    assert len(paired) == 4 * 2 * 3 and "## Paired comparisons" in table
    lp = {(r["condition"], r["id"]): r["gold_logprob"] for r in records}
    qids = sorted({r["id"] for r in records})
    for gate in ("always", "confidence", "agreement", "small_confidence"):
        for b in (0.25, 0.5):
            row = paired[(f"relay:tiny-selector@{b}:{gate}", "best heuristic")]
            assert row["reference_logprob"] == "selfinfo"
            diffs = [lp[(row["condition"], q)] - lp[(f"relay:selfinfo@{b}:{gate}", q)] for q in qids]
            assert row["gold_logprob"]["n"] == 5
            assert row["gold_logprob"]["mean_diff"] == pytest.approx(sum(diffs) / 5)
            assert (
                row["gold_logprob"]["ci_low"]
                <= row["gold_logprob"]["mean_diff"]
                <= row["gold_logprob"]["ci_high"]
            )
            full = paired[(f"relay:tiny-selector@{b}:{gate}", "full transfer")]
            assert full["reference_logprob"] == "full"
            nothing = paired[(f"relay:tiny-selector@{b}:{gate}", "no transfer")]
            diffs = [lp[(row["condition"], q)] - lp[(f"relay:none:{gate}", q)] for q in qids]
            assert nothing["gold_logprob"]["mean_diff"] == pytest.approx(sum(diffs) / 5)
    for r in records:
        if r["condition"].startswith("relay:") and r["path"] == "transfer":
            assert set(r["stages"]) >= {"small_reasoning", "selection", "large_prefill", "large_decode"}
            assert r["leaked"] in (True, False) and r["gold_logprob"] is not None


def test_second_run_calls_no_model_and_reports_the_same_numbers(
    agents, tiny_lm_dir, tiny_plain_lm_dir, arithmetic_jsonl, tmp_path
):
    config = _config(arithmetic_jsonl, tiny_lm_dir, tiny_plain_lm_dir, tmp_path / "e")
    _reset(agents)
    first = run_eval(config, agents=agents, progress=False)
    small, large = agents
    assert small.calls["generate"] > 0 and large.calls["generate"] > 0 and large.calls["score"] > 0
    assert large.calls["answer_and_score"] > 0  # relay answers and their gold log-probs share a prefill
    assert small.calls["score"] == 0
    cache_file = tmp_path / "e" / "cache" / "outputs.jsonl"
    first_records = (tmp_path / "e" / "records.jsonl").read_text()
    assert any(json.loads(x)["latency_s"] > 0 for x in first_records.splitlines())
    lines = cache_file.read_text().count("\n")
    assert lines == first["cache"]["entries"]  # nothing computed twice within one run
    _reset(agents)
    second = run_eval(config, agents=agents, progress=False)
    assert small.calls == Counter() and large.calls == Counter()  # not one prompt reached a model
    assert cache_file.read_text().count("\n") == lines
    assert sum(second["cache"]["misses"].values()) == 0
    assert second["rows"] == first["rows"]  # latency included: measured once, served from the cache
    second_records = (tmp_path / "e" / "records.jsonl").read_text()
    assert second_records == first_records  # per question too: answers, stages, latency


def test_batch_one_relay_rows_resume_from_the_direct_prompt_and_rerun_from_the_cache(
    agents, tiny_lm_dir, tiny_plain_lm_dir, arithmetic_jsonl, tmp_path
):
    """At batch 1 a gated relay's final answer resumes from its direct prompt's KV (computed on first
    use, since the direct answer came from the cache), keyed apart; a rerun reaches no model."""
    config = _config(arithmetic_jsonl, tiny_lm_dir, tiny_plain_lm_dir, tmp_path / "e", selectors=["first"],
                     budgets=[0.5], gates=["agreement"])  # fmt: skip
    config.relay.batch_size = 1
    first = run_eval(config, agents=agents, progress=False)
    records = [json.loads(x) for x in (tmp_path / "e" / "records.jsonl").read_text().splitlines()]
    relayed = [r for r in records if r["condition"].startswith("relay") and r["path"] == "transfer"]
    assert relayed and all(r["stages"]["large_prefill"]["cached_tokens"] > 0 for r in relayed)
    _reset(agents)
    second = run_eval(config, agents=agents, progress=False)
    assert agents[0].calls == Counter() and agents[1].calls == Counter()
    assert second["rows"] == first["rows"]


def test_growing_the_grid_reuses_the_cached_reasoning(
    agents, tiny_lm_dir, tiny_plain_lm_dir, arithmetic_jsonl, tmp_path
):
    kw = {"selectors": ["first", "selfinfo"], "gates": ["always"], "conditions": ["small_reasoning", "relay"]}
    _reset(agents)
    first = run_eval(
        _config(arithmetic_jsonl, tiny_lm_dir, tiny_plain_lm_dir, tmp_path, budgets=[0.5], **kw),
        agents=agents,
        progress=False,
    )
    small, large = agents
    assert small.calls["generate"] == 5
    _reset(agents)
    grown = run_eval(
        _config(arithmetic_jsonl, tiny_lm_dir, tiny_plain_lm_dir, tmp_path, budgets=[0.1, 0.5], **kw),
        agents=agents,
        progress=False,
    )
    assert small.calls["generate"] == 0  # the small model's reasoning came from the cache
    assert large.calls["generate"] <= 2 * 5  # only the new budget's transfers could be new
    old = {r["condition"]: r for r in first["rows"]}
    new = {r["condition"]: r for r in grown["rows"]}
    assert set(new) - set(old) == {"relay:first@0.1:always", "relay:selfinfo@0.1:always"}
    for cid, row in old.items():
        assert new[cid] == row


def test_a_trained_selector_added_later_reads_states_without_regenerating(
    agents, tiny_lm_dir, tiny_plain_lm_dir, arithmetic_jsonl, hidden_selector_dir, tmp_path
):
    kw = {"budgets": [0.5], "gates": ["always"], "conditions": ["small_reasoning", "relay"]}

    def run(selectors):
        _reset(agents)
        config = _config(
            arithmetic_jsonl, tiny_lm_dir, tiny_plain_lm_dir, tmp_path, selectors=selectors, **kw
        )
        return run_eval(config, agents=agents, progress=False)

    small, _ = agents
    first = run(["first"])  # no hidden selector: the cached reasoning records no hidden states
    assert small.calls["generate"] == 5
    grown = run(["first", str(hidden_selector_dir)])
    assert small.calls["generate"] == 0  # the reasoning is the cached one, not generated again
    assert small.calls["hidden_states_of"] == 5  # its states come from one forward over it
    assert grown["cache"]["misses"]["hidden_states"] == 5
    old = {r["condition"]: r for r in first["rows"]}
    new = {r["condition"]: r for r in grown["rows"]}
    assert new["small_reasoning"] == old["small_reasoning"]  # same text, same measured times
    assert "relay:tiny-selector@0.5:always" in new
    # ... but the relay that reads the states pays for their forward, as if generate had computed them
    stage = {}
    for line in (tmp_path / "records.jsonl").read_text().splitlines():
        r = json.loads(line)
        stage[r["condition"], r["id"]] = r["stages"]["small_reasoning"]["seconds"]
    for _, i in [k for k in stage if k[0] == "small_reasoning"]:
        assert stage["relay:tiny-selector@0.5:always", i] > stage["small_reasoning", i]
    again = run(["first", str(hidden_selector_dir)])
    assert small.calls == Counter()  # the states were cached too
    assert again["rows"] == grown["rows"]


def test_the_small_models_own_reasoning_does_not_pay_for_the_selectors_hidden_states(
    tiny_lm_dir, tiny_plain_lm_dir, arithmetic_jsonl, hidden_selector_dir, tmp_path
):
    """One generation serves both rows; only the relay reads hidden states, so only its small-reasoning
    stage carries their forward (a planted 0.3 s delay), not the small model's own answer."""
    import time

    class SlowStates(Agent):
        def _hidden_states(self, *args, **kwargs):
            time.sleep(0.3)
            return super()._hidden_states(*args, **kwargs)

    small = SlowStates.from_pretrained(tiny_lm_dir, device="cpu")
    large = Agent.from_pretrained(tiny_plain_lm_dir, device="cpu")
    config = _config(
        arithmetic_jsonl, tiny_lm_dir, tiny_plain_lm_dir, tmp_path, selectors=[str(hidden_selector_dir)],
        budgets=[0.5], gates=["always"], conditions=["small_reasoning", "relay"],
    )  # fmt: skip

    def stages() -> dict:
        run_eval(config, agents=(small, large), progress=False)
        out = {}
        for line in (tmp_path / "records.jsonl").read_text().splitlines():
            r = json.loads(line)
            out[r["condition"], r["id"]] = r["stages"]["small_reasoning"]["seconds"]
        return out

    stage = stages()
    for i in {i for _, i in stage}:
        own, relay = stage["small_reasoning", i], stage["relay:tiny-selector@0.5:always", i]
        assert relay - own >= 0.3 and own < 0.3
    assert stages() == stage  # the cache keeps the split


def test_a_selector_whose_floor_is_above_every_score_sends_nothing(
    agents, tiny_lm_dir, tiny_plain_lm_dir, arithmetic_jsonl, tmp_path
):
    """ScorerConfig.min_score reaches the relay: nothing kept, so each answer is the no-transfer one."""
    small, _ = agents
    config = ScorerConfig(
        hidden_layer=-1, hidden_size=32, small_model=str(tiny_lm_dir), d_model=32,
        granularity="word", small_vocab_size=len(small.tokenizer), min_score=1e6,
    )  # fmt: skip
    floored = TokenSelector(config).save_pretrained(tmp_path / "floored")
    kw = {"budgets": [0.5], "gates": ["always"], "conditions": ["relay"], "selectors": ["none", str(floored)]}
    run_eval(
        _config(arithmetic_jsonl, tiny_lm_dir, tiny_plain_lm_dir, tmp_path / "out", **kw),
        agents=agents,
        progress=False,
    )
    records = [
        json.loads(x) for x in (tmp_path / "out" / "records.jsonl").read_text().splitlines() if x.strip()
    ]
    mine = {r["id"]: r for r in records if r["condition"] == "relay:floored@0.5:always"}
    none = {r["id"]: r for r in records if r["condition"] == "relay:none:always"}
    assert mine and mine.keys() == none.keys()
    for key, rec in mine.items():
        assert rec["transfer_tokens"] == 0 and rec["reasoning_tokens"] > 0
        assert rec["gold_logprob"] == pytest.approx(none[key]["gold_logprob"], abs=1e-5)
        assert rec["output"] == none[key]["output"]


def test_cut_short_cache_line_is_dropped(tmp_path):
    cache = OutputCache(tmp_path)
    cache.put([{"key": "a", "kind": "score", "value": {"logprob": -1.0}}])
    with cache.path.open("a") as f:
        f.write('{"key": "b", "kind": "score", "val')  # killed mid-write
    reopened = OutputCache(tmp_path)
    assert len(reopened) == 1 and reopened.get("a")["value"]["logprob"] == -1.0
    reopened.put([{"key": "c", "kind": "score", "value": {}}])
    assert len(OutputCache(tmp_path)) == 2


def test_pareto_front():
    points = [(1.0, 0.5), (2.0, 0.4), (2.0, 0.7), (3.0, 0.7), (0.5, 0.1)]
    assert pareto_front(points) == [4, 0, 2]


BAD = [
    (("--selectors", "[none, magic]"), "unknown selector 'magic'"),
    (("--budgets", "[0.25, 1.5]"), "ratio budget"),
    (("--relay.budget-kind", "topk", "--budgets", "[-1]"), "k >= 0"),
    (("--gates", "[always, sometimes]"), "unknown gate"),
    (("--conditions", "[relay, magic]"), "unknown condition"),
    (("--relay.tau", "2"), "tau"),
    (("--budgets", "[]"), "at least one budget"),
    (("--relay.small", "null"), "--relay.small is required"),
    (("--relay.concurrent", "true"), "eval does not take relay.concurrent"),
    (("--relay.early_stop", "confidence"), "eval does not take relay.early_stop"),
    (("--relay.keep_answer_line", "true"), "eval does not take relay.keep_answer_line"),
    (("--relay.budget", "0.5"), "eval does not take relay.budget"),
    (("--budget-kind", "topk"), "use --relay.budget_kind"),
]


@pytest.mark.parametrize("extra, message", BAD)
def test_bad_input_fails_before_any_model_loads(extra, message, arithmetic_jsonl, tmp_path, capsys):
    args = ["eval", "--data", str(arithmetic_jsonl), "--relay.small", "/no/small", "--relay.large", "/no/large",
            "--out", str(tmp_path / "o"), *extra]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and "/no/large" not in err
    assert not (tmp_path / "o").exists()


def test_missing_data_column_is_named(tmp_path, capsys):
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"id": "a", "problem": "1+1?", "answer": "2"}) + "\n")
    args = [
        "eval",
        "--data",
        str(data),
        "--relay.small",
        "/no/small",
        "--relay.large",
        "/no/large",
        "--out",
        str(tmp_path / "o"),
    ]
    assert main(args) == 2
    assert "question" in capsys.readouterr().err
    args += ["--columns.question", "problem"]
    assert main(args) == 2  # now it is the missing model that stops it
    assert "/no/large" in capsys.readouterr().err


def test_selector_that_does_not_fit_the_small_model_is_named(
    tiny_lm_dir, tiny_plain_lm_dir, arithmetic_jsonl, tmp_path, capsys
):
    wide = TokenSelector(
        ScorerConfig(hidden_layer=-1, hidden_size=64, small_model=str(tiny_lm_dir), d_model=32)
    )
    path = wide.save_pretrained(tmp_path / "wide-selector")
    out = tmp_path / "o"
    args = ["eval", "--data", str(arithmetic_jsonl), "--relay.small", str(tiny_lm_dir), "--relay.large", str(tiny_plain_lm_dir),
            "--out", str(out), "--selectors", json.dumps(["first", str(path)]), "--relay.device", "cpu"]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "wide-selector" in err and "64-wide hidden states" in err
    assert not (out / "cache" / "outputs.jsonl").exists() or not (out / "cache" / "outputs.jsonl").read_text()


def test_a_novelty_fallback_is_reported_per_problem_and_per_condition(
    agents, tiny_lm_dir, tiny_plain_lm_dir, arithmetic_jsonl, tmp_path
):
    """Every trace beyond the novelty threshold: the selector sends nothing (answers as no transfer),
    each record says the fallback handled it, and the results give the share."""
    small, _ = agents
    config = ScorerConfig(
        hidden_layer=-1, hidden_size=32, small_model=str(tiny_lm_dir), d_model=32, granularity="word",
        small_vocab_size=len(small.tokenizer), min_score=-1e6, novelty_fallback="nothing",
    )  # fmt: skip
    selector = TokenSelector(config)
    selector.net.novelty.threshold.fill_(-1.0)  # novelty is >= 0: every trace is novel
    folder = selector.save_pretrained(tmp_path / "wary")
    kw = {"budgets": [0.5], "gates": ["always"], "conditions": ["relay"], "selectors": ["none", str(folder)]}
    result = run_eval(
        _config(arithmetic_jsonl, tiny_lm_dir, tiny_plain_lm_dir, tmp_path / "out", **kw),
        agents=agents,
        progress=False,
    )
    records = [
        json.loads(x) for x in (tmp_path / "out" / "records.jsonl").read_text().splitlines() if x.strip()
    ]
    mine = {r["id"]: r for r in records if r["condition"] == "relay:wary@0.5:always"}
    none = {r["id"]: r for r in records if r["condition"] == "relay:none:always"}
    assert mine and mine.keys() == none.keys()
    for key, rec in mine.items():
        assert rec["selector_fallback"] and rec["transfer_tokens"] == 0
        assert rec["output"] == none[key]["output"]
        assert not none[key]["selector_fallback"]
    rates = {row["condition"]: row["fallback_rate"] for row in result["rows"]}
    assert rates["relay:wary@0.5:always"] == 1.0 and rates["relay:none:always"] == 0.0
    assert "novelty fallback" in (tmp_path / "out" / "results.md").read_text()


def test_a_disagreement_fallback_sends_selfinfo_units_only_where_the_models_disagree(
    agents, tiny_lm_dir, tiny_plain_lm_dir, arithmetic_jsonl, tmp_path
):
    """Every trace novel, gate always (which computes no direct answer by itself): the relay computes the
    large model's direct answer for the check; a trace whose stated answer differs from it sends what the
    selfinfo selector sends, one whose answer agrees sends nothing and answers as without reasoning."""
    from selector.answers import answers_match

    small, _ = agents
    config = ScorerConfig(
        hidden_layer=-1,
        hidden_size=32,
        small_model=str(tiny_lm_dir),
        d_model=32,
        granularity="word",
        small_vocab_size=len(small.tokenizer),
        min_score=1e6,
        novelty_fallback="disagreement",
    )  # fmt: skip  (a floor above every score: without the fallback nothing would be sent)
    selector = TokenSelector(config)
    selector.net.novelty.threshold.fill_(-1.0)  # every trace is novel
    folder = selector.save_pretrained(tmp_path / "asks")
    kw = {"budgets": [0.5], "gates": ["always"], "conditions": ["large_direct", "relay"],
          "selectors": ["none", "selfinfo", str(folder)]}  # fmt: skip
    run_eval(_config(arithmetic_jsonl, tiny_lm_dir, tiny_plain_lm_dir, tmp_path / "out", **kw), agents=agents,
             progress=False)  # fmt: skip
    records = [
        json.loads(x) for x in (tmp_path / "out" / "records.jsonl").read_text().splitlines() if x.strip()
    ]
    by = lambda cond: {r["id"]: r for r in records if r["condition"] == cond}  # noqa: E731
    mine, selfinfo, none = (
        by("relay:asks@0.5:always"),
        by("relay:selfinfo@0.5:always"),
        by("relay:none:always"),
    )
    direct = by("large_direct")
    assert mine and mine.keys() == selfinfo.keys() == none.keys()
    agreed = 0
    for key, rec in mine.items():
        assert rec["selector_fallback"] and rec["direct_answer"] == direct[key]["direct_answer"]
        if rec["small_answer"] is not None and answers_match(rec["small_answer"], rec["direct_answer"] or ""):
            agreed += 1
            assert rec["transfer_tokens"] == 0 and rec["output"] == none[key]["output"]
        else:
            assert rec["transfer_text"] == selfinfo[key]["transfer_text"] and rec["transfer_tokens"] > 0
            assert rec["output"] == selfinfo[key]["output"]
    assert agreed < len(mine)  # the disagreeing branch ran (the agreeing one: test_relay's planted case)
