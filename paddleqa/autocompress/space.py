"""The student plans autocompress searches over, and what each costs before it is trained.

A plan (:class:`Candidate`) is a student shape for ``distill.student`` (family, depth, width,
heads, FFN, conv blocks, factorised embedding width) plus the form of its embedding tables in
the Lite export (``fp32`` or ``int8``, see :mod:`paddleqa.models.int8tables`). The space
(:class:`SearchSpace`) is the product of a few lists; shapes that cannot exist (a width that is
not a multiple of the head size, conv blocks on an ERNIE student) are left out, not errors.

Not searched, on purpose: channel pruning of a trained student (``prune``) and int8 graphs of the
whole model (``quantize``) act on a *trained* student, so they come after the plan is chosen.
But the budget is the deployed model's: when the run prunes channels, each plan carries the
share of FLOPs pruning will leave it (``pruned_flops``), and is timed and sized in that form
(:func:`paddleqa.autocompress.latency.deployed_student`).
"""
from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import logging
from typing import Any

from ..core.config import opt

log = logging.getLogger(__name__)

KINDS = ("mobilenet", "ernie")
EMBEDDING_FORMS = ("fp32", "int8")


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One student plan: its ``distill.student`` shape and its embedding-table form."""

    kind: str
    hidden_size: int
    num_heads: int
    num_layers: int
    intermediate_size: int
    conv_blocks: int = 0
    expand_ratio: int = 2
    embedding_size: int = 0
    embeddings: str = "fp32"
    # The share of its FLOPs the chain's channel pruning (prune.flops_ratio, l1norm/fpgm) leaves
    # the trained student: it is timed and sized in that deployed form (1 = as trained).
    pruned_flops: float = 1.0

    @property
    def name(self) -> str:
        tag = "m" if self.kind == "mobilenet" else "e"
        conv = f"-c{self.conv_blocks}" if self.kind == "mobilenet" else ""
        emb = f"-e{self.embedding_size}" if self.embedding_size else ""
        pruned = f"-p{round(100 * self.pruned_flops)}" if self.pruned_flops < 1 else ""
        return (f"{tag}-h{self.hidden_size}-l{self.num_layers}{conv}-f{self.intermediate_size}"
                f"{emb}-{self.embeddings}{pruned}")

    def student(self) -> dict[str, Any]:
        """The ``distill.student`` overrides of this plan."""
        out = {"kind": self.kind, "hidden_size": self.hidden_size, "num_heads": self.num_heads,
               "num_layers": self.num_layers, "intermediate_size": self.intermediate_size,
               "embedding_size": self.embedding_size}  # (0 for ernie: a base section's width goes)
        if self.kind == "mobilenet":
            out.update(conv_blocks=self.conv_blocks, expand_ratio=self.expand_ratio)
        return out

    def shape_key(self) -> str:
        """What the latency of the plan depends on (everything: the table form changes the graph;
        ``pruned_flops`` only when set, so tables timed before it existed keep their keys)."""
        fields = dataclasses.asdict(self)
        if fields["pruned_flops"] == 1.0:
            del fields["pruned_flops"]
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


@dataclasses.dataclass
class SearchSpace:
    """The student plans to consider: the product of these lists."""

    kinds: list[str] = opt(factory=lambda: ["mobilenet"], help="student families: mobilenet "
                           "(conv + attention) and/or ernie")
    hidden_sizes: list[int] = opt(factory=lambda: [64, 96, 128], help="hidden widths")
    head_size: int = opt(32, help="width of one attention head (heads = hidden / head_size)")
    num_layers: list[int] = opt(factory=lambda: [1, 2], help="attention layers")
    conv_blocks: list[int] = opt(factory=lambda: [1, 2], help="mobilenet: inverted-residual "
                                 "conv blocks before the attention layers")
    expand_ratio: int = opt(2, help="mobilenet: channel expansion inside a conv block")
    ffn_ratios: list[int] = opt(factory=lambda: [2, 4], help="FFN width as a multiple of hidden")
    embedding_sizes: list[int] = opt(factory=lambda: [16, 32], help="mobilenet: factorised "
                                     "embedding widths (0 = a full hidden-wide table)")
    embedding_forms: list[str] = opt(factory=lambda: ["fp32", "int8"], help="embedding tables "
                                     "of the Lite export: fp32 and/or int8 (other backends: fp32)")
    max_candidates: int = opt(200, help="refuse a space larger than this (each plan is exported "
                              "and timed)")

    def __post_init__(self) -> None:
        for name in ("kinds", "hidden_sizes", "num_layers", "ffn_ratios", "embedding_forms"):
            if not getattr(self, name):
                raise ValueError(f"space.{name} must list at least one value")
        bad = [k for k in self.kinds if k not in KINDS]
        if bad:
            raise ValueError(f"unknown space.kinds {bad}; valid: {', '.join(KINDS)}")
        bad = [f for f in self.embedding_forms if f not in EMBEDDING_FORMS]
        if bad:
            raise ValueError(f"unknown space.embedding_forms {bad}; valid: {', '.join(EMBEDDING_FORMS)}")
        if self.head_size < 1 or self.expand_ratio < 1:
            raise ValueError("space.head_size and space.expand_ratio must be >= 1")
        for name in ("hidden_sizes", "num_layers", "ffn_ratios"):
            if min(getattr(self, name)) < 1:
                raise ValueError(f"space.{name} must be >= 1, got {getattr(self, name)}")
        if "mobilenet" in self.kinds and (not self.conv_blocks or min(self.conv_blocks) < 0):
            raise ValueError("space.conv_blocks must list values >= 0 for mobilenet students")
        if self.embedding_sizes and min(self.embedding_sizes) < 0:
            raise ValueError("space.embedding_sizes must be >= 0 (0 = no factorisation)")
        if not [h for h in self.hidden_sizes if h % self.head_size == 0]:
            raise ValueError(f"no space.hidden_sizes {self.hidden_sizes} is a multiple of "
                             f"space.head_size {self.head_size}")
        if self.max_candidates < 1:
            raise ValueError("space.max_candidates must be >= 1")


def candidates(space: SearchSpace, *, embedding_forms: tuple[str, ...] | None = None,
               pruned_flops: float = 1.0) -> list[Candidate]:
    """Every plan of the space, smallest first; ``embedding_forms`` narrows the table forms (a
    backend without int8 tables); ``pruned_flops`` < 1: the run prunes conv channels to that share
    of FLOPs, so only plans with conv blocks can go through it, and each carries the share.
    Raises ValueError past ``space.max_candidates``."""
    forms = embedding_forms if embedding_forms is not None else tuple(space.embedding_forms)
    out, unprunable = [], 0
    for kind in space.kinds:
        convs = space.conv_blocks if kind == "mobilenet" else [0]
        embs = (space.embedding_sizes or [0]) if kind == "mobilenet" else [0]
        for h, n, c, r, e, form in itertools.product(space.hidden_sizes, space.num_layers, convs,
                                                     space.ffn_ratios, embs, forms):
            if h % space.head_size or (e and e >= h):
                continue  # no such model / a factorisation that is not smaller
            if pruned_flops < 1 and not c:
                unprunable += 1  # the run's channel pruning would refuse it
                continue
            out.append(Candidate(kind, h, h // space.head_size, n, r * h, c, space.expand_ratio, e,
                                 form, pruned_flops if pruned_flops < 1 else 1.0))
    if unprunable:
        log.warning("%d plan(s) without conv blocks left out: the run prunes conv channels "
                    "(prune.method l1norm/fpgm), which needs them", unprunable)
    out = sorted(set(out), key=lambda c: (c.hidden_size, c.num_layers, c.conv_blocks,
                                          c.intermediate_size, c.embedding_size, c.embeddings, c.kind))
    if len(out) > space.max_candidates:
        raise ValueError(f"the search space holds {len(out)} plans, more than space.max_candidates "
                         f"({space.max_candidates}); shorten its lists or raise the cap (each plan "
                         "is exported and timed, a few seconds each)")
    return out
