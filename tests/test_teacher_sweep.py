"""The teacher ablation's effect columns: paired against the base, and an arm against each variant
it varies (benchmarks/teacher_sweep.with_effects); budgets kept apart (merged)."""
from __future__ import annotations

import pytest

from benchmarks.teacher_sweep import ARM_OF, FACTORS, merged, render, with_effects
from conftest import write_json


def _row(tmp_path, name, answers, validation):
    preds = write_json(tmp_path / f"{name}.json", dict(zip(("q1", "q2", "q3"), answers)))
    return {"name": name, "change": name, "params": 1, "train_questions": 3, "validation_em": 0.0,
            "validation_f1": 0.0, "train_seconds": {"base": 60, "hybrid": 60, "hybrid_deep": 120,
                                                     "hybrid_lac": 60}[name],
            "predictions": str(preds), "validation_file": str(validation)}


def _call(rows, steps):
    return {"machine": {"cpu": "cpu", "cores": 2}, "command": f"c {steps}", "nproc": 2, "config": "x.yaml",
            "steps": steps, "rows": rows}


def test_a_size_arm_is_compared_with_the_variant_it_varies(tmp_path, tiny_json):
    assert set(ARM_OF) <= set(FACTORS) and {o for v in ARM_OF.values() for o in v} <= set(FACTORS)
    rows = [_row(tmp_path, "base", ["错", "错", "错"], tiny_json),
            _row(tmp_path, "hybrid", ["7天", "错", "错"], tiny_json),  # one of three right
            _row(tmp_path, "hybrid_deep", ["7天", "3个工作日", "错"], tiny_json)]  # two of three
    rows = with_effects(rows, resamples=200)
    by = {r["name"]: r for r in rows}
    assert "f1_effect" not in by["base"]
    assert by["hybrid"]["f1_effect"] == pytest.approx(100 / 3, abs=0.01)
    assert by["hybrid_deep"]["f1_effect"] == pytest.approx(200 / 3, abs=0.01)
    assert "arms" not in by["hybrid"]  # an ingredient of the base, not an arm
    [arm] = by["hybrid_deep"]["arms"]
    assert arm["vs"] == "hybrid" and arm["delta"] == pytest.approx(100 / 3, abs=0.01)
    assert arm["ci95"][0] <= arm["delta"] <= arm["ci95"][1]
    text = render({"budgets": {"1": _call(rows, 1)}})
    assert "`hybrid_deep` vs `hybrid`" in text and "2.0x its training time (pre-training included)" in text


def test_arms_are_paired_without_a_base_and_budgets_make_separate_tables(tmp_path, tiny_json):
    short = _call(with_effects([_row(tmp_path, "base", ["错", "错", "错"], tiny_json)]), 150)
    record = merged({**short}, _call([_row(tmp_path, "hybrid", ["7天", "错", "错"], tiny_json)], 556))
    # a later call at the same budget adds its arm to that table; the hybrid measured before is kept
    (tmp_path / "later").mkdir()
    record = merged(record, _call([_row(tmp_path / "later", "hybrid_lac", ["7天", "3个工作日", "错"], tiny_json)], 556))
    assert set(record["budgets"]) == {"150", "556"}
    long = {r["name"]: r for r in record["budgets"]["556"]["rows"]}
    assert list(long) == ["hybrid", "hybrid_lac"]
    assert "f1_effect" not in long["hybrid_lac"]  # no base at this budget
    [arm] = long["hybrid_lac"]["arms"]
    assert arm["vs"] == "hybrid" and arm["delta"] == pytest.approx(100 / 3, abs=0.01)
    text = render(record)
    assert text.index("### 556 steps") < text.index("### 150 steps")
    assert "`hybrid_lac` vs `hybrid`" in text


def test_a_reproduced_row_keeps_its_comparison_with_a_row_measured_elsewhere(tmp_path, tiny_json):
    record = merged(None, _call([_row(tmp_path, "hybrid", ["7天", "错", "错"], tiny_json),
                                 _row(tmp_path, "hybrid_lac", ["7天", "3个工作日", "错"], tiny_json)], 556))
    (tmp_path / "hybrid.json").unlink()  # the hybrid's predictions are gone (another machine)
    (tmp_path / "again").mkdir()
    again = _row(tmp_path / "again", "hybrid_lac", ["7天", "3个工作日", "错"], tiny_json)
    kept = {r["name"]: r for r in merged(record, _call([again], 556))["budgets"]["556"]["rows"]}
    [arm] = kept["hybrid_lac"]["arms"]
    assert arm["vs"] == "hybrid" and arm["earlier_call"] and arm["delta"] == pytest.approx(100 / 3, abs=0.01)
    # a re-run with other scores does not inherit the old comparison
    other = {**_row(tmp_path / "again", "hybrid_lac", ["错", "错", "错"], tiny_json), "validation_f1": 5.0}
    changed = {r["name"]: r for r in merged(record, _call([other], 556))["budgets"]["556"]["rows"]}
    assert not changed["hybrid_lac"].get("arms")


def _finetune_folder(folder, answers, validation, steps):
    """A finished finetune folder as the headline teacher leaves it (metrics, predictions, config)."""
    folder.mkdir()
    write_json(folder / "validation_predictions.json", dict(zip(("q1", "q2", "q3"), answers)))
    write_json(folder / "metrics.json", {"params": 7, "train_questions": 3, "global_step": steps, "epochs": 2.5,
                                         "validation_em": 0.0, "validation_f1": 0.0, "validation_total": 3,
                                         "train_seconds": 60.0})
    (folder / "resolved_config.yaml").write_text(
        f"validation_file: {validation}\narch: {{kind: mobilenet, conv_blocks: 2, num_layers: 2, "
        "hidden_size: 128, embeddings_from: jieba-lac}\n", encoding="utf-8")
    return folder


def test_every_variant_is_paired_with_the_reference_folder_at_its_own_budget(tmp_path, tiny_json):
    from benchmarks.teacher_sweep import REFERENCE, reference_row

    folder = _finetune_folder(tmp_path / "teacher", ["7天", "错", "错"], tiny_json, steps=556)
    with pytest.raises(SystemExit, match="trained 556 steps, not --steps 150"):
        reference_row(folder, 150)  # not at equal steps: refused before anything trains
    ref = reference_row(folder, 556)
    assert ref["name"] == REFERENCE and "jieba-lac" in ref["change"] and "2 conv + 2 attention" in ref["change"]
    variant = _row(tmp_path, "hybrid_lac", ["7天", "3个工作日", "错"], tiny_json)
    rows = {r["name"]: r for r in merged(None, _call([ref, variant], 556))["budgets"]["556"]["rows"]}
    assert list(rows)[0] == REFERENCE and "arms" not in rows[REFERENCE]
    arm = {a["vs"]: a for a in rows["hybrid_lac"]["arms"]}[REFERENCE]
    assert arm["delta"] == pytest.approx(100 / 3, abs=0.01)
    (folder / "validation_predictions.json").unlink()
    with pytest.raises(SystemExit, match="validation_predictions.json is missing"):
        reference_row(folder, 556)
