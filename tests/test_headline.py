"""The headline of `make bench`: best student vs the fp32 teacher, computed from report rows."""
from __future__ import annotations

import pytest

from benchmarks.pipeline import headline


def _row(name, backend, precision, f1, ms, size, source="distill"):
    return {"name": name, "source": source, "backend": backend, "precision": precision,
            "dev_f1": f1, "latency_ms_p50": ms, "file_bytes": size}


ROWS = [
    _row("teacher", "dygraph", "fp32", 20.0, 40.0, 6_000_000, source=None),
    _row("teacher inference fp32", "paddle-inference", "fp32", None, 30.0, 6_100_000, source="teacher"),
    _row("teacher lite x86-fp32", "lite-x86", "fp32", None, 32.0, 6_050_000, source="teacher"),
    _row("distill", "dygraph", "fp32", 21.0, 20.0, 4_000_000, source="teacher"),
    _row("inference fp32", "paddle-inference", "fp32", 21.0, 8.0, 4_100_000),
    _row("int8 ptq", "paddle-inference", "int8", 19.0, 6.0, 3_800_000),  # below 97% of 20
    _row("lite arm-fp32", "lite-arm", "fp32", None, None, 4_020_000),
    _row("lite arm-int8 (ptq)", "lite-arm", "int8", None, None, 3_700_000, source="int8 ptq"),
]


def test_fastest_qualifying_student_against_the_fastest_teacher_form():
    h = headline(ROWS)
    # int8 is faster but under 97% of the teacher's F1, so the fp32 inference model wins
    assert h["student"] == "inference fp32"
    assert h["teacher_latency_row"] == "teacher inference fp32"  # not the slower dygraph
    assert h["speedup"] == pytest.approx(30.0 / 8.0)
    # the smaller int8 ARM file is not shipped: its graph's F1 (the int8 twin) does not qualify
    assert h["student_file_row"] == "lite arm-fp32" and h["teacher_file_row"] == "teacher lite x86-fp32"
    assert h["student_file_f1_row"] in {"distill", "inference fp32"} and h["student_file_f1"] == 21.0
    assert h["shrink"] == pytest.approx(6_050_000 / 4_020_000)
    assert h["met"] == {"latency": False, "size": False, "f1": True}


def test_an_int8_arm_file_ships_when_its_int8_twin_qualifies():
    rows = [{**r, "dev_f1": 19.8} if r["name"] == "int8 ptq" else r for r in ROWS]
    h = headline(rows)
    assert h["student"] == "int8 ptq"  # now the fastest qualifying artifact
    assert h["student_file_row"] == "lite arm-int8 (ptq)" and h["student_file_f1_row"] == "int8 ptq"
    assert h["shrink"] == pytest.approx(6_050_000 / 3_700_000)


def test_no_qualifying_student_falls_back_to_the_most_accurate():
    rows = [r if r["name"] == "teacher" else {**r, "dev_f1": r["dev_f1"] and r["dev_f1"] - 5}
            for r in ROWS]
    h = headline(rows)
    assert h["student"] in {"distill", "inference fp32"} and h["met"]["f1"] is False


def test_no_timed_student_gives_no_headline():
    assert headline([ROWS[0], ROWS[6]])["student"] is None


def test_without_a_qualifying_student_the_chains_product_is_the_headline():
    """Nothing reaches 97%: the fastest form of the deployed model, not the most accurate row;
    its int8 ARM file ships with the F1 of the graph it was converted from."""
    rows = [r if r["name"] == "teacher" else {**r, "dev_f1": r["dev_f1"] and r["dev_f1"] - 5}
            for r in ROWS]
    h = headline(rows, deployed="distill")
    assert h["student"] == "int8 ptq" and h["qualifying"] is False  # 6 ms, F1 14
    assert h["student_file_row"] == "lite arm-int8 (ptq)" and h["student_file_f1_row"] == "int8 ptq"
    assert h["student_file_f1"] == 14.0 and h["met"]["f1"] is False


def test_the_plan_file_follows_the_autocompress_section(tmp_path):
    from pathlib import Path

    from benchmarks.pipeline import plan_file

    run = Path("runs/x")
    assert plan_file({"run_dir": "runs/x"}, run) is None  # no section: the config's own student
    assert plan_file({"autocompress": {"speedup": 6}}, run) == run / "autocompress" / "plan.yaml"
    out = str(tmp_path / "search")
    assert plan_file({"autocompress": {"out_dir": out}}, run) == Path(out) / "plan.yaml"


def test_the_headline_names_the_chosen_plan_and_its_verdict():
    from benchmarks.pipeline import plan_lines

    assert plan_lines(None) == []  # --no-autocompress: nothing about a search
    ac = {"plan_file": "runs/x/autocompress/plan.yaml", "chosen": "m-h64", "budget": "6x",
          "criterion_met": False, "validation_f1": 29.9, "teacher_validation_f1": 37.8}
    text = " ".join(plan_lines(ac))
    assert "m-h64" in text and "not met" in text and "29.90" in text and "37.80" in text
    assert "not met" not in " ".join(plan_lines({**ac, "criterion_met": True}))


def test_a_dygraph_folder_at_97_percent_is_not_the_shipped_student():
    # the distilled folder qualifies, but no deployed form does: the headline is the chain's
    # product (the deployed forms), and its F1 criterion is not met
    rows = [{**r, "dev_f1": 19.0} if r["name"] == "inference fp32" else r for r in ROWS]
    h = headline(rows, deployed="distill")
    assert h["student"] != "distill" and h["student"] in {"inference fp32", "int8 ptq"}
    assert h["met"]["f1"] is False
