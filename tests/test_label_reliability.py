"""Label quality you can see: split-half reliability, antithetic masks, the solo labeler, reference agreement."""

from __future__ import annotations

import pytest
import torch

from tests.test_labelers import RECORD, PlantedF, _item
from training.label_job import LabelConfig
from training.labelers import (
    AblationLabeler,
    LabelInput,
    LooLabeler,
    SoloLabeler,
    draw_masks,
    get_labeler,
    reference_agreement,
    spearman,
    top_agreement,
)


def _planted(n: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, generator=gen, dtype=torch.float64)


def test_split_half_is_high_for_a_clean_signal_and_low_for_noise():
    n = 10
    clean = AblationLabeler(masks=64, alpha=1e-4, seed=1)(None, _item(n), cache=PlantedF(-3.0, _planted(n)))
    assert clean.reliability_kind == "split_half"
    assert clean.reliability > 0.95
    assert clean.reliability_top == 1.0  # both halves keep the same top quarter
    # f that does not depend on the units at all: pure (deterministic) noise
    noise = AblationLabeler(masks=64, alpha=1e-4, seed=1)(
        None, _item(n), cache=PlantedF(-3.0, torch.zeros(n, dtype=torch.float64), noise=1.0)
    )
    assert noise.reliability is not None and abs(noise.reliability) < 0.6
    assert noise.reliability < clean.reliability - 0.4
    assert noise.reliability_top is not None and noise.reliability_top < 1.0


def test_top_agreement_scores_only_the_units_a_budget_keeps():
    # 8 units: the top quarter is 2; both put units 0 and 3 on top, the rest in opposite orders
    a = [5.0, 0.1, 0.2, 4.0, 0.3, 0.4, 0.5, 0.6]
    b = [4.0, 0.6, 0.5, 5.0, 0.4, 0.3, 0.2, 0.1]
    assert top_agreement(a, b) == 1.0
    assert spearman(a, b) < 0.5  # the full ranking disagrees on the units that do not matter
    assert top_agreement(a, [-x for x in a]) == 0.0
    assert top_agreement([3.0, 1.0, 2.0], [3.0, 2.0, 1.0], share=0.5) == 0.5  # k = ceil(1.5) = 2
    assert top_agreement([1.0], [2.0]) is None
    with pytest.raises(ValueError, match="equal lengths"):
        top_agreement([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="share"):
        top_agreement([1.0, 2.0], [1.0, 2.0], share=0.0)
    # over random planted rankings, chance agreement of a quarter is about a quarter
    gen = torch.Generator().manual_seed(0)
    chance = [top_agreement(torch.randn(40, generator=gen).tolist(), torch.randn(40, generator=gen).tolist())
              for _ in range(200)]  # fmt: skip
    assert 0.15 < sum(chance) / len(chance) < 0.35


def test_split_half_needs_two_masks_a_half():
    res = AblationLabeler(masks=3)(None, _item(5), cache=PlantedF(0.0, _planted(5)))
    assert res.reliability is None and res.reliability_kind == "split_half"


def test_antithetic_masks_come_in_complementary_pairs_and_stay_nested():
    masks = draw_masks(7, 10, 0.5, seed=2, trace_id="a", antithetic=True)
    for k in range(0, 10, 2):
        assert torch.equal(masks[k + 1], ~masks[k])
    assert torch.equal(draw_masks(7, 4, 0.5, seed=2, trace_id="a", antithetic=True), masks[:4])
    res = AblationLabeler(masks=32, antithetic=True, alpha=1e-4)(
        None, _item(8), cache=PlantedF(1.0, _planted(8, 3))
    )
    assert res.scores == pytest.approx(_planted(8, 3).tolist(), abs=1e-2)
    assert res.reliability > 0.95


def test_solo_is_each_units_value_on_its_own():
    w = torch.tensor([0.5, -1.0, 0.0, 2.0], dtype=torch.float64)
    planted = PlantedF(-3.0, w)
    res = SoloLabeler()(None, _item(4), cache=planted)
    assert res.scores == pytest.approx(w.tolist())  # linear f: solo == loo == the weights
    assert res.f_none == pytest.approx(-3.0) and res.f_all == pytest.approx(-1.5)
    assert {"1000", "0100", "0010", "0001"} <= set(planted.asked)
    assert res.reliability is None  # deterministic: no figure of its own


def test_reference_agreement_gives_a_deterministic_labeler_its_reliability():
    w = _planted(6, 4)
    solo = SoloLabeler()(None, _item(6), cache=PlantedF(0.0, w))
    loo = LooLabeler()(None, _item(6), cache=PlantedF(0.0, w))
    reference_agreement(solo, loo, "loo")
    assert solo.reliability_kind == "vs_loo" and solo.reliability == pytest.approx(1.0)
    assert solo.reliability_top == 1.0
    abl = AblationLabeler(masks=16)(None, _item(6), cache=PlantedF(0.0, w))
    before = abl.reliability
    assert reference_agreement(abl, loo, "loo").reliability == before  # split-half kept


def test_spearman_handles_ties_constants_and_length_mismatch():
    assert spearman([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 1, 2], [1, 1, 2]) == pytest.approx(1.0)
    assert spearman([1, 1, 1], [1, 2, 3]) is None
    assert spearman([1.0], [2.0]) is None
    with pytest.raises(ValueError, match="equal lengths"):
        spearman([1, 2], [1, 2, 3])


def test_solo_on_a_tiny_model_matches_scoring_each_unit_alone(tiny_lm_dir):
    from selector.agents import Agent
    from selector.prompts import answer_target, transfer_prompt
    from selector.units import join_units

    lm = Agent.from_pretrained(tiny_lm_dir, device="cpu")
    item = LabelInput.from_trace(RECORD, "sentence")
    res = get_labeler("solo", batch_size=2)(lm, item)
    n = len(item.units)
    i = n - 1
    only = join_units(RECORD["reasoning"], item.units, [j == i for j in range(n)])
    f_i = lm.score([transfer_prompt(lm, RECORD["question"], only).as_pair()], answer_target("5"))[0].logprob
    assert res.scores[i] == pytest.approx(f_i - res.f_none, abs=1e-4)


def test_label_config_checks_the_reference_and_samples_by_id():
    with pytest.raises(ValueError, match="reference must be one of"):
        LabelConfig(traces="t", model="m", out="o", reference="oracle")
    with pytest.raises(ValueError, match="reference_rate"):
        LabelConfig(traces="t", model="m", out="o", reference="loo", reference_rate=1.5)
    cfg = LabelConfig(traces="t", model="m", out="o", method="solo", reference="loo", reference_rate=0.5)
    picked = [cfg.in_reference_sample(f"id-{k}") for k in range(400)]
    assert 0.4 < sum(picked) / 400 < 0.6
    assert picked == [cfg.in_reference_sample(f"id-{k}") for k in range(400)]  # stable across runs
    assert not LabelConfig(traces="t", model="m", out="o").in_reference_sample("id-1")


def test_label_job_records_reliability_per_trace_and_in_the_summary(tmp_path, tiny_lm_dir):
    import json

    from selector.shards import ShardWriter, read_records
    from training.label_job import run_label

    traces = tmp_path / "traces"
    reasonings = [RECORD["reasoning"], "So 2 + 3 is 5. Then 5 - 0 = 5. Thus 5. Answer: 5"]
    ShardWriter(traces).write(
        [
            {**RECORD, "id": f"t{k}", "reasoning": r, "images": [], "choices": None}
            for k, r in enumerate(reasonings)
        ]
    )
    common = {"accelerator": "cpu", "devices": 1, "progress_bar": False, "batch_size": 2}
    out = tmp_path / "solo"
    cfg = LabelConfig(
        traces=str(traces), model=str(tiny_lm_dir), out=str(out), method="solo", reference="loo",
        reference_rate=1.0, units="sentence", **common,
    )  # fmt: skip
    summary = run_label(cfg)
    rows = read_records(out).to_list()
    assert all(r["label_reliability_kind"] == "vs_loo" for r in rows)
    assert summary["reliability"]["vs_loo"]["traces"] == 2
    assert all(r["label_reliability_top"] is not None for r in rows)
    assert 0.0 <= summary["reliability"]["vs_loo"]["median_top"] <= 1.0
    assert json.loads((out / "summary.json").read_text())["reliability"] == summary["reliability"]
    out = tmp_path / "ablation"
    summary = run_label(
        LabelConfig(
            traces=str(traces), model=str(tiny_lm_dir), out=str(out), masks=8, antithetic=True, **common
        )
    )
    assert set(summary["reliability"]) <= {"split_half"}
    assert {r["label_reliability_kind"] for r in read_records(out).to_list()} == {"split_half"}
