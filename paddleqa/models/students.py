"""Students: smaller models started from a teacher, one builder per family (``STUDENTS``).

``ernie``: a smaller ERNIE (fewer layers, narrower, fewer heads, smaller FFN), with the
embeddings and every k-th teacher layer (or the layers ``init_layers`` names) copied where
shapes allow. ``mobilenet``: the MobileNetV2-style conv + attention student
(:mod:`.mobile`), its conv blocks and attention layers copied from a hybrid teacher's where
shapes match, its factorised embeddings from the teacher's by truncated SVD.

A builder takes the teacher and the student's shape (distill's ``StudentConfig``: 0 means "as
the teacher") and returns ``(student, layers)``: the teacher layer (1-based) behind each student
layer, the default layer map of the intermediate distillation losses. paddle loads only when a
builder runs.
"""
from __future__ import annotations

import logging
import re
from typing import Callable

import numpy as np

from ..core.errors import ConfigError
from .weights import copy_matching, spaced_layers

log = logging.getLogger(__name__)


def build_ernie_student(teacher, spec):
    """A smaller ERNIE QA model; returns (student, teacher layer behind each student layer)."""
    from paddlenlp.transformers import ErnieConfig, ErnieForQuestionAnswering

    t = teacher.config
    cfg = t.to_dict()
    cfg.update(
        num_hidden_layers=spec.num_layers or t.num_hidden_layers,
        hidden_size=spec.hidden_size or t.hidden_size,
        num_attention_heads=spec.num_heads or t.num_attention_heads,
        intermediate_size=spec.intermediate_size or t.intermediate_size,
        hidden_dropout_prob=spec.dropout,
        attention_probs_dropout_prob=spec.dropout,
    )
    if cfg["hidden_size"] % cfg["num_attention_heads"]:
        raise ConfigError(f"student hidden_size {cfg['hidden_size']} is not a multiple of its "
                          f"{cfg['num_attention_heads']} heads")
    n_s = cfg["num_hidden_layers"]
    layers = list(spec.init_layers) or spaced_layers(n_s, t.num_hidden_layers)
    if any(not 1 <= x <= t.num_hidden_layers for x in layers):
        raise ConfigError(f"student.init_layers {layers}: the teacher has layers 1..{t.num_hidden_layers}")
    student = ErnieForQuestionAnswering(ErnieConfig(**cfg))
    if spec.init == "teacher":
        init_from_teacher(student, teacher, layers)
    return student, layers


def init_from_teacher(student, teacher, layers: list[int]) -> tuple[int, int]:
    """Copy every teacher tensor whose shape matches; student layer i <- teacher layer layers[i]."""
    pattern = re.compile(r"(\.layers\.)(\d+)(\.)")
    return copy_matching(student, teacher, lambda name: pattern.sub(
        lambda m: f"{m.group(1)}{layers[int(m.group(2))] - 1}{m.group(3)}", name, count=1))


def build_mobile_student(teacher, spec):
    """A mobile student shaped by ``spec`` (distill's StudentConfig); returns (student, layers).

    ``spec.num_layers`` counts its transformer layers (0 = one). With ``init: teacher`` the
    embeddings, the span head and the transformer layers (from the teacher's top layers) are
    copied where shapes match; the conv blocks start random. Factorised embeddings
    (``spec.embedding_size``) start from the teacher's by truncated SVD (:func:`svd_embeddings`).
    """
    from .mobile import MobileQAConfig, MobileQAForQuestionAnswering

    t = teacher.config
    n_tf = spec.num_layers or 1
    cfg = MobileQAConfig(
        vocab_size=t.vocab_size, hidden_size=spec.hidden_size or t.hidden_size,
        num_attention_heads=spec.num_heads or t.num_attention_heads,
        intermediate_size=spec.intermediate_size or t.intermediate_size,
        max_position_embeddings=t.max_position_embeddings, type_vocab_size=t.type_vocab_size,
        pad_token_id=t.pad_token_id, hidden_act=t.hidden_act, initializer_range=t.initializer_range,
        hidden_dropout_prob=spec.dropout, attention_probs_dropout_prob=spec.dropout,
        conv_blocks=spec.conv_blocks, expand_ratio=spec.expand_ratio, kernel_size=spec.kernel_size,
        num_transformer_layers=n_tf, embedding_size=spec.embedding_size)
    student = MobileQAForQuestionAnswering(cfg)

    layers = spaced_layers(cfg.num_hidden_layers, t.num_hidden_layers)
    if spec.init == "teacher":
        copy_matching(student, teacher, _teacher_names(teacher, cfg, layers))
        if student.mobile.embeddings_project is not None:
            svd_embeddings(student, teacher)
    return student, layers


def _teacher_names(teacher, cfg, layers: list[int]):
    """Maps a student tensor name to its teacher counterpart. Student layers count conv blocks
    first, then transformer layers; student layer ``u`` (1-based) takes teacher layer
    ``layers[u - 1]`` when both are of the same kind: a transformer layer of an ERNIE teacher, or
    a conv block / transformer layer of a mobile (hybrid) teacher."""
    prefix = teacher.base_model_prefix
    t_conv = getattr(teacher.config, "conv_blocks", 0) if prefix == "mobile" else 0

    def teacher_layer(number: int, conv: bool) -> str | None:
        if conv:
            return f"mobile.blocks.{number - 1}" if number <= t_conv else None
        if number <= t_conv:
            return None
        return (f"mobile.layers.{number - 1 - t_conv}" if prefix == "mobile"
                else f"ernie.encoder.layers.{number - 1}")

    def source(name: str) -> str:
        for part, offset, conv in (("mobile.blocks.", 0, True),
                                   ("mobile.layers.", cfg.conv_blocks, False)):
            if name.startswith(part):
                j, rest = name[len(part):].split(".", 1)
                target = teacher_layer(layers[offset + int(j)], conv)
                return f"{target}.{rest}" if target else ""
        return name.replace("mobile.", f"{prefix}.", 1)

    return source


def svd_embeddings(student, teacher) -> float:
    """Start factorised embeddings from the teacher's: with the truncated SVD W ~ U_k S_k V_k of
    the teacher's word table (vocab x H), the student's word table is U_k S_k, its position and
    type tables are the teacher's projected onto the same k directions (rows @ V_k^T), and --
    when the hidden widths match -- the projection is V_k, so table @ projection is the best
    rank-k approximation of the teacher's tables (Eckart-Young). Returns the relative Frobenius
    error of the word table. (Written here: neither PaddleNLP nor PaddleSlim factorises a
    trained embedding.)"""

    backbone = getattr(teacher, teacher.base_model_prefix)
    if getattr(backbone, "embeddings_project", None) is not None:
        if backbone.embeddings.word_embeddings.weight.shape[1] == student.config.embedding_size:
            return 0.0  # the same factorisation: copy_matching took the tables as they are
        raise ConfigError("distill.student.embedding_size: the teacher's embeddings are factorised "
                          "already; give the student the teacher's embedding_size (copied as they "
                          "are) or use a teacher with full-width embeddings")
    src, dst = backbone.embeddings, student.mobile.embeddings
    k = student.config.embedding_size
    w = src.word_embeddings.weight.numpy().astype(np.float64)
    u, sv, vt = np.linalg.svd(w, full_matrices=False)
    basis = vt[:k]  # k x H_teacher
    dst.word_embeddings.weight.set_value((u[:, :k] * sv[:k]).astype("float32"))
    for name in ("position_embeddings", "token_type_embeddings"):
        table = getattr(src, name).weight.numpy().astype(np.float64)
        getattr(dst, name).weight.set_value((table @ basis.T).astype("float32"))
    proj = student.mobile.embeddings_project
    if list(proj.weight.shape) == list(basis.shape):  # paddle Linear weight: [in, out]
        proj.weight.set_value(basis.astype("float32"))
        proj.bias.set_value(np.zeros(proj.bias.shape, dtype="float32"))
    error = float(np.sqrt((sv[k:] ** 2).sum() / (sv ** 2).sum()))
    log.info("factorised embeddings (%d of %d dims) from the teacher's by SVD: word table relative "
             "error %.3f", k, w.shape[1], error)
    return error


# student kind -> builder (distill's ``student.kind``)
STUDENTS: dict[str, Callable] = {"ernie": build_ernie_student, "mobilenet": build_mobile_student}
