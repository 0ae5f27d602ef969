"""The official CMRC 2018 metric on hand-computed cases."""
import pytest

from paddleqa.core.metrics import cmrc_scores, exact_match, f1_score, longest_common_substring, mixed_segmentation, strip_punctuation


def test_mixed_segmentation_splits_cjk_and_punctuation_and_words():
    assert mixed_segmentation("2010年Hello World！") == ["2010", "年", "hello", "world", "！"]
    assert mixed_segmentation("《红楼梦》", remove_punctuation=True) == ["红", "楼", "梦"]
    # '-' is in the official punctuation list, so it splits runs of other characters
    assert mixed_segmentation("400-820") == ["400", "-", "820"]


def test_chinese_partial_answer():
    # ref 北京大学 (4 tokens), pred 北京 (2): lcs 2, P 1, R 0.5 -> F1 2/3
    assert f1_score(["北京大学"], "北京") == pytest.approx(2 / 3)
    assert exact_match(["北京大学"], "北京") == 0.0


def test_lcs_is_contiguous_not_bag_of_tokens():
    # bag-of-characters overlap would be 2; the longest contiguous common run is 1
    assert longest_common_substring(list("甲乙丙丁"), list("甲丙")) == 1
    # P = 1/2, R = 1/4 -> F1 = 1/3
    assert f1_score(["甲乙丙丁"], "甲丙") == pytest.approx(1 / 3)


def test_english_is_lowercased_and_word_tokenized():
    assert f1_score(["Hello World"], "hello") == pytest.approx(2 / 3)
    assert exact_match(["Hello World"], "HELLO WORLD") == 1.0


def test_mixed_script_answer():
    # ref -> ["2010", "年"], pred -> ["2010"]: F1 2/3
    assert f1_score(["2010年"], "2010") == pytest.approx(2 / 3)
    assert exact_match(["2010年"], "2010") == 0.0


def test_punctuation_is_ignored_for_em_and_f1():
    assert exact_match(["《红楼梦》"], "红楼梦") == 1.0
    assert f1_score(["《红楼梦》"], "红楼梦") == 1.0
    assert exact_match(["北京，上海"], "北京上海") == 1.0
    assert strip_punctuation(" A-B：c ") == "abc"
    # The official list holds '……' as one two-character entry, which a per-character test never
    # matches, so an ellipsis is NOT stripped: fidelity to the official script.
    assert exact_match(["等等"], "等等……") == 0.0


def test_max_over_references():
    assert f1_score(["上海", "北京大学"], "北京") == pytest.approx(2 / 3)
    assert exact_match(["上海", "北京"], "北京") == 1.0


def test_empty_prediction_scores_zero():
    assert f1_score(["北京"], "") == 0.0
    assert exact_match(["北京"], "") == 0.0


def test_corpus_scores_count_missing_as_zero():
    refs = {"q1": ["北京大学"], "q2": ["2010年"], "q3": ["红楼梦"]}
    preds = {"q1": "北京大学", "q2": "2010", "unknown": "x"}
    s = cmrc_scores(refs, preds)
    assert s["total"] == 3 and s["missing"] == 1 and s["extra"] == 1
    assert s["em"] == pytest.approx(100 / 3, abs=1e-3)
    assert s["f1"] == pytest.approx(100 * (1 + 2 / 3) / 3, abs=1e-3)
    assert s["average"] == pytest.approx((s["em"] + s["f1"]) / 2, abs=1e-3)


def test_gold_fed_back_scores_100(tiny_json):
    from paddleqa.text.dataset import gold_references

    refs = gold_references(tiny_json)
    s = cmrc_scores(refs, {q: r[0] for q, r in refs.items()})
    assert (s["em"], s["f1"], s["missing"]) == (100.0, 100.0, 0)
