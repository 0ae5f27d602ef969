"""How sure a score is: bootstrap confidence intervals over questions, single and paired.

Pure numpy over per-question scores (0..100), so every caller -- ``evaluate``, ``score``,
``compare`` and the run report -- gets the same interval for the same predictions. Resampling is
seeded; the percentile bootstrap is used (questions are the unit that is resampled).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from .metrics import cmrc_scores, question_scores

DEFAULT_RESAMPLES = 1000
DEFAULT_SEED = 0


def _check(values: Sequence[float], resamples: int, level: float) -> np.ndarray:
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    if not 0 < level < 1:
        raise ValueError(f"level must be between 0 and 1, got {level}")
    return np.asarray(values, dtype=np.float64)


def _resampled_means(values: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """Means of ``resamples`` samples of len(values) questions drawn with replacement."""
    rng = np.random.default_rng(seed)
    n = len(values)
    means = np.empty(resamples)
    # In chunks, so that 1,000 resamples of 10k questions never hold 10M indices at once.
    step = max(1, 2_000_000 // max(n, 1))
    for lo in range(0, resamples, step):
        hi = min(resamples, lo + step)
        idx = rng.integers(0, n, size=(hi - lo, n))
        means[lo:hi] = values[idx].mean(axis=1)
    return means


def bootstrap_ci(values: Sequence[float], *, resamples: int = DEFAULT_RESAMPLES,
                 seed: int = DEFAULT_SEED, level: float = 0.95) -> list[float] | None:
    """``[low, high]`` interval of the mean of ``values`` (None for no values), rounded to 3 places."""
    arr = _check(values, resamples, level)
    if arr.size == 0:
        return None
    means = _resampled_means(arr, resamples, seed)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return [round(float(low), 3), round(float(high), 3)]


def paired_bootstrap(a: Sequence[float], b: Sequence[float], *, resamples: int = DEFAULT_RESAMPLES,
                     seed: int = DEFAULT_SEED, level: float = 0.95) -> dict:
    """Mean difference ``a - b`` over the same questions, its interval, and the share of
    resamples in which the difference has the other sign (a one-sided bootstrap p-value)."""
    x, y = _check(a, resamples, level), _check(b, resamples, level)
    if x.shape != y.shape:
        raise ValueError(f"paired scores need the same questions: {x.size} vs {y.size} values")
    if x.size == 0:
        return {"delta": None, "ci95": None, "p_other_sign": None}
    diff = x - y
    means = _resampled_means(diff, resamples, seed)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    delta = float(diff.mean())
    other = float(np.mean(means <= 0) if delta > 0 else np.mean(means >= 0) if delta < 0 else 1.0)
    return {"delta": round(delta, 3), "ci95": [round(float(low), 3), round(float(high), 3)],
            "p_other_sign": round(other, 4)}


def scores_with_intervals(references: Mapping[str, Sequence[str]], predictions: Mapping[str, str], *,
                          resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED) -> dict:
    """The official scores (:func:`~paddleqa.core.metrics.cmrc_scores`) plus ``em_ci95`` and
    ``f1_ci95``: 95% bootstrap intervals over the questions (``resamples`` 0 = no intervals)."""
    per_question = question_scores(references, predictions)  # scored once, for both
    scores = cmrc_scores(references, predictions, per_question)
    if resamples:
        per_q = per_question.values()
        scores["em_ci95"] = bootstrap_ci([100.0 * em for em, _ in per_q], resamples=resamples, seed=seed)
        scores["f1_ci95"] = bootstrap_ci([100.0 * f1 for _, f1 in per_q], resamples=resamples, seed=seed)
        scores["ci_resamples"] = resamples
    return scores


def ratio_ci(a: Sequence[float], b: Sequence[float], *, resamples: int = DEFAULT_RESAMPLES,
             seed: int = DEFAULT_SEED, level: float = 0.95) -> list[float] | None:
    """Interval of mean(a) / mean(b) over the same questions, both resampled together (e.g. a
    student's F1 retention against its teacher's F1); None when there are no questions or b's
    mean is 0."""
    x, y = _check(a, resamples, level), _check(b, resamples, level)
    if x.shape != y.shape:
        raise ValueError(f"paired scores need the same questions: {x.size} vs {y.size} values")
    if x.size == 0 or y.mean() == 0:
        return None
    rng = np.random.default_rng(seed)
    n = x.size
    ratios = []
    step = max(1, 2_000_000 // n)
    for lo in range(0, resamples, step):
        idx = rng.integers(0, n, size=(min(resamples, lo + step) - lo, n))
        den = y[idx].mean(axis=1)
        ratios.append(np.where(den > 0, x[idx].mean(axis=1) / np.where(den > 0, den, 1), np.nan))
    ratios = np.concatenate(ratios)
    ratios = ratios[~np.isnan(ratios)]
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(ratios, [tail, 100 - tail])
    return [round(float(low), 4), round(float(high), 4)]
