"""Bootstrap intervals and the paired comparison of two prediction files."""
from __future__ import annotations

import json

import numpy as np
import pytest

from paddleqa.core.errors import DataError
from paddleqa.core.stats import bootstrap_ci, paired_bootstrap, ratio_ci
from paddleqa.runtime.compare import CompareConfig, compare, question_type, read_predictions, run
from paddleqa.text.dataset import gold_questions

from conftest import TINY, write_json


def test_interval_holds_the_mean_is_seeded_and_narrows_with_more_questions():
    rng = np.random.default_rng(1)
    small = rng.integers(0, 2, 100) * 100.0
    large = rng.integers(0, 2, 5000) * 100.0
    lo, hi = bootstrap_ci(small)
    assert lo <= small.mean() <= hi
    assert bootstrap_ci(small) == bootstrap_ci(small, seed=0)
    assert bootstrap_ci(small, seed=1) != bootstrap_ci(small, seed=2)
    lo2, hi2 = bootstrap_ci(large)
    assert hi2 - lo2 < (hi - lo) / 3
    assert bootstrap_ci([50.0] * 20) == [50.0, 50.0]
    assert bootstrap_ci([]) is None


def test_paired_difference_sees_a_real_gain_and_no_gain():
    rng = np.random.default_rng(2)
    b = rng.uniform(0, 100, 2000)
    a = np.clip(b + rng.normal(3, 5, 2000), 0, 100)
    gain = paired_bootstrap(a, b)
    assert gain["delta"] > 0 and gain["ci95"][0] > 0 and gain["p_other_sign"] < 0.01
    same = paired_bootstrap(b, b)
    assert same["delta"] == 0 and same["ci95"] == [0.0, 0.0]
    with pytest.raises(ValueError, match="same questions"):
        paired_bootstrap(a, b[:10])


def test_retention_interval_holds_the_ratio_and_pairs_the_questions():
    rng = np.random.default_rng(3)
    teacher = rng.uniform(40, 100, 1000)
    student = teacher * 0.9  # exactly 90% on every question: resampling cannot move the ratio
    assert ratio_ci(student, teacher) == [0.9, 0.9]
    noisy = np.clip(teacher + rng.normal(-5, 20, 1000), 0, 100)
    lo, hi = ratio_ci(noisy, teacher)
    assert lo < noisy.mean() / teacher.mean() < hi and hi - lo < 0.1
    assert ratio_ci([1.0], [0.0]) is None


@pytest.mark.parametrize("question,kind", [
    ("他什么时候出生？", "何时 when"), ("为什么要退货？", "为什么 why"), ("客服电话是多少？", "多少/几 how many"),
    ("谁发明了电话？", "谁 who"), ("公司位于哪里？", "哪里 where"), ("这是什么？", "什么 what"),
    ("怎么申请退款？", "怎么 how"), ("请介绍一下", "其他 other"),
])
def test_question_types(question, kind):
    assert question_type(question) == kind


def test_gold_fed_back_against_nothing(tmp_path):
    gold = gold_questions(write_json(tmp_path / "gold.json", TINY))
    truth = {q.qid: q.references[0] for q in gold}
    res = compare(gold, truth, {}, resamples=200)
    assert res["a"]["em"] == 100 and res["b"]["f1"] == 0
    assert res["a"]["errors"]["exact"] == 3 and res["b"]["errors"]["no answer"] == 3
    assert res["f1_delta"]["delta"] == 100 and res["agreement"] == 0
    for key in ("by_question_type", "by_answer_length", "by_context_length"):
        assert sum(g["questions"] for g in res[key]) == 3
    assert len(res["disagreements"]) == 3


def test_boundary_and_wrong_span_errors_and_disagreement_order(tmp_path):
    gold = gold_questions(write_json(tmp_path / "gold.json", TINY))
    a = {"q1": "7天内", "q2": "3个工作日", "q3": "VIP会员"}   # boundary, exact, wrong span
    b = {"q1": "7天", "q2": "3个工作日", "q3": "400-820-1234"}
    res = compare(gold, a, b, resamples=100)
    assert res["a"]["errors"] == {"exact": 1, "boundary": 1, "wrong span": 1, "no answer": 0}
    assert res["agreement"] == round(1 / 3, 4)
    gaps = [abs(d["a_f1"] - d["b_f1"]) for d in res["disagreements"]]
    assert gaps == sorted(gaps, reverse=True) and res["disagreements"][0]["id"] == "q3"


def test_run_writes_markdown_and_html_with_intervals(tmp_path):
    gold = write_json(tmp_path / "gold.json", TINY)
    pa = write_json(tmp_path / "a.json", {"q1": "7天", "q2": "3个工作日", "q3": "400"})
    pb = write_json(tmp_path / "b.json", {"q1": "7天内"})
    res = run(CompareConfig(gold_file=str(gold), pred_a=str(pa), pred_b=str(pb), name_a="teacher",
                            name_b="student", out_dir=str(tmp_path / "cmp"), resamples=100))
    md = (tmp_path / "cmp" / "compare.md").read_text(encoding="utf-8")
    assert "teacher vs student" in md and "95% CI" in md and "By question type" in md
    assert "<table>" in (tmp_path / "cmp" / "compare.html").read_text(encoding="utf-8")
    assert json.loads((tmp_path / "cmp" / "compare.json").read_text())["b"]["missing"] == 2
    assert res["a"]["f1_ci95"][0] <= res["a"]["f1"] <= res["a"]["f1_ci95"][1]


def test_bad_prediction_files_name_the_file(tmp_path):
    with pytest.raises(DataError, match="is a folder"):
        read_predictions(tmp_path)
    bad = tmp_path / "p.json"
    bad.write_text('{"q1": ["list"]}', encoding="utf-8")
    with pytest.raises(DataError, match="p.json"):
        read_predictions(bad)
    bad.write_text("[" * 100_000 + "]" * 100_000, encoding="utf-8")
    with pytest.raises(DataError, match="nested too deeply"):
        read_predictions(bad)
    bad.write_text('{"q1": ' + "9" * 5000 + "}", encoding="utf-8")
    with pytest.raises(DataError, match="p.json: unreadable JSON value"):
        read_predictions(bad)


def test_score_and_compare_commands(tmp_path, capsys):
    from paddleqa import cli

    gold = write_json(tmp_path / "gold.json", TINY)
    pa = write_json(tmp_path / "a.json", {"q1": "7天", "q2": "3个工作日", "q3": "400"})
    pb = write_json(tmp_path / "b.json", {"q1": "7天内"})
    assert cli.main(["-q", "score", str(gold), str(pa), "--resamples", "100"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert scores["em"] == pytest.approx(200 / 3, abs=1e-3)
    assert scores["em_ci95"][0] <= scores["em"] <= scores["em_ci95"][1] and scores["ci_resamples"] == 100
    assert cli.main(["-q", "compare", str(gold), str(pa), str(pb), "--out", str(tmp_path / "c"),
                     "--name-a", "teacher", "--name-b", "student"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["f1_delta"]["delta"] > 0 and out["names"] == {"a": "teacher", "b": "student"}
    assert (tmp_path / "c" / "compare.html").exists()
    assert cli.main(["-q", "score", str(gold), str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err
