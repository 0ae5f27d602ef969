"""Distillation losses for span-extraction QA, chosen by name from small registries.

Prediction-layer losses (``PREDICTION_LOSSES``) compare the student's start/end logits with the
teacher's; intermediate losses (``INTERMEDIATE_LOSSES``) compare hidden states or attention maps
through a layer map. Every loss masks padding: a padded position takes no probability mass and
adds nothing to an average.

The combined objective of ``paddleqa distill`` is

    L = alpha * CE(student, gold spans) + (1 - alpha) * prediction_loss
        + sum_k weight_k * intermediate_loss_k

with ``span_kd`` = T^2 * KL(softmax(teacher / T) || softmax(student / T)), averaged over the start
and end distributions (Hinton et al.; the T^2 keeps gradient sizes comparable across T).
"""
from __future__ import annotations

from typing import Callable, Sequence

import paddle
import paddle.nn.functional as F

NEG = -1e4  # logit given to padding: exp(NEG / T) underflows to 0 for any T used in practice


def _masked(logits: paddle.Tensor, mask: paddle.Tensor) -> paddle.Tensor:
    return paddle.where(mask.astype("bool"), logits, paddle.full_like(logits, NEG))


def span_ce(start_logits, end_logits, start_positions, end_positions, mask) -> paddle.Tensor:
    """Cross-entropy against the gold start/end token (the [CLS] position when absent)."""
    s = F.cross_entropy(_masked(start_logits, mask), start_positions.reshape([-1, 1]))
    e = F.cross_entropy(_masked(end_logits, mask), end_positions.reshape([-1, 1]))
    return (s + e) / 2


def span_kd(student: Sequence[paddle.Tensor], teacher: Sequence[paddle.Tensor], mask: paddle.Tensor,
            temperature: float = 1.0) -> paddle.Tensor:
    """T^2 * KL(p_teacher || p_student) at temperature T, mean over batch and over start/end."""
    total = 0.0
    for s, t in zip(student, teacher):
        log_p_s = F.log_softmax(_masked(s, mask) / temperature, axis=-1)
        log_p_t = F.log_softmax(_masked(t, mask) / temperature, axis=-1)
        p_t = paddle.exp(log_p_t)
        kl = (p_t * (log_p_t - log_p_s)).sum(axis=-1)  # padding: p_t == 0 there
        total = total + kl.mean()
    return total / len(student) * temperature ** 2


def span_mse(student: Sequence[paddle.Tensor], teacher: Sequence[paddle.Tensor], mask: paddle.Tensor,
             temperature: float = 1.0) -> paddle.Tensor:
    """Mean squared difference of the logits on real tokens (temperature unused)."""
    m = mask.astype(student[0].dtype)
    total = 0.0
    for s, t in zip(student, teacher):
        total = total + (((s - t) ** 2) * m).sum() / m.sum()
    return total / len(student)


def hidden_mse(student_states: Sequence[paddle.Tensor], teacher_states: Sequence[paddle.Tensor],
               layer_map: Sequence[tuple[int, int]], mask: paddle.Tensor,
               projections: Sequence[Callable] | None = None) -> paddle.Tensor:
    """MSE between mapped hidden states (index 0 = embeddings output), real tokens only.

    ``projections[i]`` maps student width to teacher width for pair ``i`` when they differ
    (learned linear layers owned by the distiller, as in TinyBERT).
    """
    m = mask.astype(student_states[0].dtype).unsqueeze(-1)
    total = 0.0
    for i, (s_layer, t_layer) in enumerate(layer_map):
        s = student_states[s_layer]
        if projections is not None and projections[i] is not None:
            s = projections[i](s)
        t = teacher_states[t_layer]
        total = total + (((s - t) ** 2) * m).sum() / (m.sum() * t.shape[-1])
    return total / max(len(layer_map), 1)


def attention_mse(student_attn: Sequence[paddle.Tensor], teacher_attn: Sequence[paddle.Tensor],
                  layer_map: Sequence[tuple[int, int]], mask: paddle.Tensor,
                  projections: Sequence[Callable] | None = None) -> paddle.Tensor:
    """MSE between mapped attention maps ([batch, heads, q, k]; layer indices from 1).

    When head counts differ, both sides are averaged over heads first. Rows and columns of
    padding are masked out. ``projections``: unused (the intermediate losses share a signature).
    """
    m = mask.astype(student_attn[0].dtype)
    pair = (m.unsqueeze(-1) * m.unsqueeze(-2)).unsqueeze(1)  # [batch, 1, q, k]
    total = 0.0
    for s_layer, t_layer in layer_map:
        s, t = student_attn[s_layer - 1], teacher_attn[t_layer - 1]
        if s.shape[1] != t.shape[1]:
            s, t = s.mean(axis=1, keepdim=True), t.mean(axis=1, keepdim=True)
        total = total + (((s - t) ** 2) * pair).sum() / (pair.sum() * s.shape[1])
    return total / max(len(layer_map), 1)


PREDICTION_LOSSES: dict[str, Callable] = {"span_kd": span_kd, "span_mse": span_mse}
INTERMEDIATE_LOSSES: dict[str, Callable] = {"hidden_mse": hidden_mse, "attention_mse": attention_mse}


def lookup(registry: dict[str, Callable], name: str, kind: str) -> Callable:
    try:
        return registry[name]
    except KeyError:
        raise ValueError(f"unknown {kind} {name!r}; valid: {', '.join(registry)}") from None
