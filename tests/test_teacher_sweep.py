"""The teacher ablation's effect columns: paired against the base, and a size arm against the
variant it varies (benchmarks/teacher_sweep.with_effects)."""
from __future__ import annotations

import pytest

from benchmarks.teacher_sweep import ARM_OF, FACTORS, render, with_effects
from conftest import write_json


def _row(tmp_path, name, answers, validation):
    preds = write_json(tmp_path / f"{name}.json", dict(zip(("q1", "q2", "q3"), answers)))
    return {"name": name, "change": name, "params": 1, "train_questions": 3, "validation_em": 0.0,
            "validation_f1": 0.0, "train_seconds": {"base": 60, "hybrid": 60, "hybrid_deep": 120}[name],
            "predictions": str(preds), "validation_file": str(validation)}


def test_a_size_arm_is_compared_with_the_variant_it_varies(tmp_path, tiny_json):
    assert set(ARM_OF) <= set(FACTORS) and set(ARM_OF.values()) <= set(FACTORS)
    rows = [_row(tmp_path, "base", ["错", "错", "错"], tiny_json),
            _row(tmp_path, "hybrid", ["7天", "错", "错"], tiny_json),  # one of three right
            _row(tmp_path, "hybrid_deep", ["7天", "3个工作日", "错"], tiny_json)]  # two of three
    rows = with_effects(rows, resamples=200)
    by = {r["name"]: r for r in rows}
    assert "f1_effect" not in by["base"]
    assert by["hybrid"]["f1_effect"] == pytest.approx(100 / 3, abs=0.01)
    assert by["hybrid_deep"]["f1_effect"] == pytest.approx(200 / 3, abs=0.01)
    assert "f1_vs_arm_of" not in by["hybrid"]  # an ingredient of the base, not an arm
    deep = by["hybrid_deep"]
    assert deep["arm_of"] == "hybrid" and deep["f1_vs_arm_of"] == pytest.approx(100 / 3, abs=0.01)
    lo, hi = deep["f1_vs_arm_of_ci95"]
    assert lo <= deep["f1_vs_arm_of"] <= hi
    text = render({"machine": {"cpu": "cpu", "cores": 2}, "command": "c", "nproc": 2, "config": "x.yaml",
                   "steps": 1, "rows": rows})
    assert "`hybrid_deep` vs `hybrid`" in text and "2.0x its training time (pre-training included)" in text
