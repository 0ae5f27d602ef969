"""The layer a distillation run optimises: a student, its teacher, and the objective as data.

The objective (:class:`Objective`) is

    L = alpha * CE(student, gold spans) + (1 - alpha) * prediction_loss(student, teacher; T)
        + sum over terms of  weight * loss(student feature, teacher feature; layer pairs)

where each intermediate :class:`Term` names, TextBrewer-style, the feature it compares
(``FEATURES``: hidden states, index 0 = the embeddings' output; or attention maps, from 1), the
loss (by name from :data:`paddleqa.models.losses.INTERMEDIATE_LOSSES`), the ``student:teacher``
layer pairs and its weight, and how a narrower student's hidden states are mapped to the
teacher's width (``PROJECTIONS``). Every loss masks padding.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import paddle
import paddle.nn as nn

from . import losses

# feature name -> (the model output that holds it, the output flag that asks for it)
FEATURES = {"hidden": ("hidden_states", "output_hidden_states"),
            "attention": ("attentions", "output_attentions")}
# how a student feature narrower than the teacher's is compared: learned linear maps (one per
# layer pair, as in TinyBERT; dropped when the student is saved), or not at all (widths must match)
PROJECTIONS = ("linear", "none")


@dataclasses.dataclass(frozen=True)
class Term:
    """One intermediate term of the objective (see the module docstring)."""

    feature: str
    loss: str
    pairs: tuple[tuple[int, int], ...]
    weight: float
    projection: str = "linear"

    def __post_init__(self) -> None:
        if self.feature not in FEATURES:
            raise ValueError(f"unknown feature {self.feature!r}; valid: {', '.join(FEATURES)}")
        losses.lookup(losses.INTERMEDIATE_LOSSES, self.loss, "intermediate loss")
        if self.projection not in PROJECTIONS:
            raise ValueError(f"unknown projection {self.projection!r}; valid: {', '.join(PROJECTIONS)}")
        if self.weight < 0:
            raise ValueError(f"an intermediate term's weight must be >= 0, got {self.weight}")


@dataclasses.dataclass(frozen=True)
class Objective:
    """What the student learns from: gold spans, the teacher's spans and intermediate terms;
    optionally Gaussian noise on its input word embeddings for a share of the windows."""

    alpha: float
    temperature: float
    prediction_loss: str
    terms: tuple[Term, ...] = ()
    noise_prob: float = 0.0
    noise_std: float = 0.0

    @property
    def reads_teacher(self) -> bool:
        """Whether the loss uses the teacher at all (not for a labels-only twin)."""
        return self.alpha < 1 or any(t.weight > 0 for t in self.terms)


class Distiller(nn.Layer):
    """The layer the Trainer optimises: the student plus any width projections.

    ``forward`` returns ``(loss,)`` so PaddleNLP's Trainer needs no custom ``compute_loss``.
    The teacher is held outside the layer tree (a plain list), so it is neither optimised, nor
    synchronised by DataParallel, nor written into checkpoints.
    """

    def __init__(self, student, teacher, objective: Objective, cache=None):
        super().__init__()
        self.student = student
        self._teacher = [teacher]
        # the teacher's outputs per window (paddleqa.models.teachercache), outside the layer tree
        self._cache = [cache]
        self.takes_window = cache is not None  # the Trainer's batches then carry window indices
        self.objective = objective
        self.pad_id = student.config.pad_token_id or 0
        self.prediction_loss = losses.lookup(losses.PREDICTION_LOSSES, objective.prediction_loss,
                                             "prediction_loss")
        s_w, t_w = student.config.hidden_size, teacher.config.hidden_size
        # One learned projection per layer pair of each hidden term whose widths differ.
        self.projections = nn.LayerList()
        self._spans: list[tuple[int, int] | None] = []
        for term in objective.terms:
            if term.feature == "hidden" and s_w != t_w:
                if term.projection == "none":
                    raise ValueError(f"a hidden term with projection 'none' needs equal widths; the "
                                     f"student is {s_w} wide, the teacher {t_w}")
                start = len(self.projections)
                for _ in term.pairs:
                    self.projections.append(nn.Linear(s_w, t_w))
                self._spans.append((start, len(self.projections)))
            else:
                self._spans.append(None)

    def forward(self, input_ids, token_type_ids, start_positions, end_positions, window=None):
        obj = self.objective
        mask = (input_ids != self.pad_id).astype("int64")
        flags = {flag: any(t.feature == name for t in obj.terms if t.weight > 0)
                 for name, (_, flag) in FEATURES.items()}
        common = dict(token_type_ids=token_type_ids, attention_mask=mask, return_dict=True, **flags)
        if self.training and obj.noise_prob > 0 and obj.noise_std > 0:
            embeds = self.student.get_input_embeddings()(input_ids)
            hit = (paddle.rand([embeds.shape[0], 1, 1]) < obj.noise_prob).astype(embeds.dtype)
            embeds = embeds + hit * paddle.randn(embeds.shape, dtype=embeds.dtype) * obj.noise_std
            s_out = self.student(inputs_embeds=embeds, **common)
        else:
            s_out = self.student(input_ids=input_ids, **common)
        s_logits = (s_out.start_logits, s_out.end_logits)
        loss = obj.alpha * losses.span_ce(*s_logits, start_positions, end_positions, mask)
        if not obj.reads_teacher:
            return (loss,)  # gold spans only (a labels-only twin): the teacher is not run
        t_logits, t_feats = self._teacher_outputs(input_ids, common, mask, window)
        if obj.alpha < 1:
            loss = loss + (1 - obj.alpha) * self.prediction_loss(
                s_logits, t_logits, mask, temperature=obj.temperature)
        for term, span in zip(obj.terms, self._spans):
            if term.weight > 0:
                loss = loss + term.weight * self._term_loss(term, span, s_out, t_feats, mask)
        return (loss,)

    def _teacher_outputs(self, input_ids, common: dict, mask, window):
        """((start, end) logits, {output name: states}) of the teacher on this batch: read from
        the cache when it holds every window of the batch, else computed (and then cached)."""
        cache = self._cache[0]
        windows = window.numpy().astype("int64") if cache is not None and window is not None else None
        if windows is not None:
            hit = cache.get(windows, input_ids.shape[1])
            if hit is not None:
                start, end, hidden = hit
                states = [None] * (max(hidden, default=-1) + 1)
                for i, h in hidden.items():
                    states[i] = paddle.to_tensor(h)
                return (paddle.to_tensor(start), paddle.to_tensor(end)), {"hidden_states": states}
        with paddle.no_grad():
            t_out = self._teacher[0](input_ids=input_ids, **common)
        logits = (t_out.start_logits.detach(), t_out.end_logits.detach())
        feats = {attr: getattr(t_out, attr) for attr, _ in FEATURES.values()}
        if windows is not None:
            cache.put(windows, mask.sum(axis=1).numpy(), logits[0].numpy(), logits[1].numpy(),
                      {i: feats["hidden_states"][i].numpy() for i in cache.hidden_layers})
        return logits, feats

    def _term_loss(self, term: Term, span, s_out, t_feats: dict, mask):
        attr = FEATURES[term.feature][0]
        student_states: Sequence = getattr(s_out, attr)
        teacher_states = [x if x is None else x.detach() for x in t_feats[attr]]
        fn = losses.INTERMEDIATE_LOSSES[term.loss]
        projections = list(self.projections)[span[0]: span[1]] if span else None
        return fn(student_states, teacher_states, list(term.pairs), mask, projections)
