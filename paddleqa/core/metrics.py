"""The official CMRC 2018 evaluation (EM / F1 / AVERAGE), as one set of pure functions.

This reproduces the CMRC 2018 organisers' ``cmrc2018_evaluate.py`` (v5, run under Python 2.7 with
nltk 3.4.5 and NLTK's English Punkt model), token for token:

* text is lower-cased and stripped;
* *mixed segmentation*: every CJK character (U+4E00..U+9FA5) and every listed punctuation mark is
  its own token; runs of other characters go through :func:`word_tokenize`, which is what
  ``nltk.word_tokenize`` 3.4.5 does: Punkt sentence splitting with the English parameters, then
  the Treebank word tokenizer as nltk 3.4.5 extends it, each sentence on its own;
* EM compares the strings with the listed punctuation removed, against each reference;
* F1 uses the longest common *contiguous* token sequence (punctuation removed) between prediction
  and a reference, precision = lcs/len(pred), recall = lcs/len(ref); max over references;
* a question without a prediction scores 0 (and is counted in ``missing``);
* AVERAGE = (EM + F1) / 2, all in percent.

It is written here rather than imported: no maintained package ships it (PaddleNLP's
``squad_evaluate`` is a bag-of-characters F1 that skips missing predictions; today's nltk no longer
tokenizes as 3.4.5 did). The nltk 3.4.5 tokenizer port, with the Python 2 text semantics the
script relied on, is :mod:`.wordtok`.
"""
from __future__ import annotations

import re
from typing import Callable, Iterable, Mapping, Sequence

from .wordtok import py2_lower, py2_strip, word_tokenize

# The punctuation list of the official script, in its order. Note '……' is a two-character entry
# that a per-character test never matches; it is kept for fidelity.
PUNCTUATION: tuple[str, ...] = (
    "-", ":", "_", "*", "^", "/", "\\", "~", "`", "+", "=",
    "，", "。", "：", "？", "！", "“", "”", "；", "’", "《", "》", "……", "·", "、",
    "「", "」", "（", "）", "－", "～", "『", "』",
)
_PUNCT = frozenset(PUNCTUATION)
_CJK = re.compile("[\u4e00-\u9fa5]")

def _py2_str(value: object) -> str:
    """``str(value)`` as Python 2 prints it, for the prediction values the official script reads."""
    if isinstance(value, float) and value == value and abs(value) != float("inf"):
        text = format(value, ".12g")
        return text if any(c in text for c in ".e") else text + ".0"
    return str(value)


# --- the metric ---------------------------------------------------------------------------------
WordTokenizer = Callable[[str], Sequence[str]]


def mixed_segmentation(
    text: str, remove_punctuation: bool = False, tokenize: WordTokenizer = word_tokenize
) -> list[str]:
    """Tokens of ``text`` as the official script segments them."""
    text = py2_strip(py2_lower(str(text)))
    segs: list[str] = []
    run = ""
    for ch in text:
        if remove_punctuation and ch in _PUNCT:
            continue
        if _CJK.match(ch) or ch in _PUNCT:
            if run:
                segs.extend(tokenize(run))
                run = ""
            segs.append(ch)
        else:
            run += ch
    if run:
        segs.extend(tokenize(run))
    return segs


def strip_punctuation(text: str) -> str:
    """Lower-cased, stripped ``text`` without the listed punctuation (the EM normal form)."""
    return "".join(ch for ch in py2_strip(py2_lower(str(text))) if ch not in _PUNCT)


def longest_common_substring(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common contiguous token sequence of ``a`` and ``b``."""
    best = 0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0] * (len(b) + 1)
        for j, y in enumerate(b):
            if x == y:
                cur[j + 1] = prev[j] + 1
                if cur[j + 1] > best:
                    best = cur[j + 1]
        prev = cur
    return best


def f1_score(
    references: Iterable[str], prediction: str, tokenize: WordTokenizer = word_tokenize
) -> float:
    """Max over references of the LCS-based F1 (0..1)."""
    pred = mixed_segmentation(prediction, remove_punctuation=True, tokenize=tokenize)
    best = 0.0
    for ref in references:
        gold = mixed_segmentation(ref, remove_punctuation=True, tokenize=tokenize)
        lcs = longest_common_substring(gold, pred)
        if lcs == 0:
            continue
        precision, recall = lcs / len(pred), lcs / len(gold)
        best = max(best, 2 * precision * recall / (precision + recall))
    return best


def exact_match(references: Iterable[str], prediction: str) -> float:
    """1.0 if the punctuation-stripped prediction equals any punctuation-stripped reference."""
    pred = strip_punctuation(prediction)
    return float(any(strip_punctuation(ref) == pred for ref in references))


def question_scores(
    references: Mapping[str, Sequence[str]], predictions: Mapping[str, str]
) -> dict[str, tuple[float, float]]:
    """Question id -> (EM, F1), each 0..1, for every question in ``references``; a missing
    prediction scores (0, 0). Sums of these, times 100 over the question count, are the official
    EM and F1 (summed as the official script sums them, so the rounding matches)."""
    out = {}
    for qid, refs in references.items():
        key = py2_strip(str(qid))
        if key not in predictions:
            out[key] = (0.0, 0.0)
            continue
        pred = _py2_str(predictions[key])
        out[key] = (exact_match(refs, pred), f1_score(refs, pred))
    return out


def cmrc_scores(
    references: Mapping[str, Sequence[str]], predictions: Mapping[str, str],
    scores: Mapping[str, tuple[float, float]] | None = None,
) -> dict[str, float | int]:
    """EM, F1 and AVERAGE in percent over every question in ``references``.

    ``references`` maps question id -> reference answer texts; ``predictions`` maps question id ->
    predicted text (leaderboard format). Missing predictions score 0 and are counted; predictions
    for unknown ids are ignored (and counted in ``extra``). ``scores``: :func:`question_scores`
    of the same arguments, when the caller has them already.
    """
    scores = question_scores(references, predictions) if scores is None else scores
    total = len(references)
    em = f1 = 0.0
    for q_em, q_f1 in scores.values():
        em += q_em
        f1 += q_f1
    em_pct = 100.0 * em / total if total else 0.0
    f1_pct = 100.0 * f1 / total if total else 0.0
    return {
        "em": round(em_pct, 3),
        "f1": round(f1_pct, 3),
        "average": round((em_pct + f1_pct) / 2, 3),
        "total": total,
        "missing": sum(py2_strip(str(q)) not in predictions for q in references),
        "extra": len(set(map(str, predictions)) - {py2_strip(str(q)) for q in references}),
    }
