"""The one n-best span post-processor: window logits -> answer text per question. Pure numpy."""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np


@dataclasses.dataclass
class Span:
    text: str
    score: float
    start: int  # character offset in the context
    end: int  # exclusive
    probability: float = 0.0


def best_spans(
    start_logits: np.ndarray,
    end_logits: np.ndarray,
    offsets: np.ndarray,
    example_index: np.ndarray,
    contexts: Sequence[str],
    *,
    n_best: int = 20,
    max_answer_length: int = 64,
) -> list[list[Span]]:
    """N-best answer spans for every example.

    ``start_logits``/``end_logits``: ``[windows, seq]`` (columns past a window's length are ignored
    because their offsets are -1); ``offsets``: ``[windows, seq, 2]`` character offsets of context
    tokens, -1 elsewhere; ``example_index``: the example each window belongs to. A span's score is
    start logit + end logit; it must lie inside the context, end at or after its start, and cover
    at most ``max_answer_length`` tokens. ``n_best`` start and end candidates are tried per window;
    the best ``n_best`` spans per example come back best first, with softmax probabilities over
    them. Examples with no valid span get an empty list.
    """
    if n_best < 1:
        raise ValueError(f"n_best must be >= 1, got {n_best}")
    if max_answer_length < 1:
        raise ValueError(f"max_answer_length must be >= 1, got {max_answer_length}")
    start_logits = np.asarray(start_logits, dtype=np.float64)
    end_logits = np.asarray(end_logits, dtype=np.float64)
    n_ex = len(contexts)
    candidates: list[dict[tuple[int, int], float]] = [dict() for _ in range(n_ex)]
    for w in range(start_logits.shape[0]):
        width = min(start_logits.shape[1], offsets.shape[1])
        valid = offsets[w, :width, 0] >= 0
        if not valid.any():
            continue
        s_log = np.where(valid, start_logits[w, :width], -np.inf)
        e_log = np.where(valid, end_logits[w, :width], -np.inf)
        k = min(n_best, int(valid.sum()))
        top_s = np.argsort(-s_log, kind="stable")[:k]
        top_e = np.argsort(-e_log, kind="stable")[:k]
        # All start/end pairs of the top-k at once: end >= start, length within the limit.
        ss, ee = np.meshgrid(top_s, top_e, indexing="ij")
        ok = (ee >= ss) & (ee - ss + 1 <= max_answer_length)
        ss, ee = ss[ok], ee[ok]
        scores = s_log[ss] + e_log[ee]
        order = np.argsort(-scores, kind="stable")
        starts, ends = offsets[w, ss[order], 0].tolist(), offsets[w, ee[order], 1].tolist()
        # Best pair first, so a span's first pair is its best in this window; once n_best spans
        # are taken, a lower-scoring pair cannot enter an example's n_best (ties are still taken,
        # as the final ranking breaks them by position). Exact, and the loop stays short.
        cands, taken, floor = candidates[int(example_index[w])], set(), -np.inf
        for a, b, score in zip(starts, ends, scores[order].tolist()):
            if len(taken) >= n_best and score < floor:
                break
            if (a, b) in taken:
                continue
            taken.add((a, b))
            floor = score
            if score > cands.get((a, b), -np.inf):
                cands[(a, b)] = score
    out: list[list[Span]] = []
    for i, cands in enumerate(candidates):
        ranked = sorted(cands.items(), key=lambda kv: (-kv[1], kv[0]))[:n_best]
        if not ranked:
            out.append([])
            continue
        scores = np.array([s for _, s in ranked])
        probs = np.exp(scores - scores.max())
        probs /= probs.sum()
        out.append([
            Span(text=contexts[i][a:b], score=sc, start=a, end=b, probability=float(p))
            for ((a, b), sc), p in zip(ranked, probs)
        ])
    return out


def predictions_from_spans(qids: Sequence[str], spans: Sequence[list[Span]]) -> dict[str, str]:
    """Leaderboard format ``{qid: best answer text}`` (empty text when a question has no span)."""
    return {q: (s[0].text if s else "") for q, s in zip(qids, spans)}
