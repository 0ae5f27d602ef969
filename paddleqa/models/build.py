"""QA models: PaddleNLP Auto classes from a hub name or folder, or an ERNIE built from scratch."""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np

from ..core.config import opt
from ..core.errors import PaddleQAError
from ..core.safeload import verify_model_folder
from .tables import parse_std

log = logging.getLogger(__name__)


@dataclasses.dataclass
class ArchConfig:
    """A from-scratch encoder (used when no pretrained model is given): ERNIE, or the
    MobileNetV2-style conv + attention hybrid (:mod:`paddleqa.models.mobile`)."""

    kind: str = opt("ernie", help="family: ernie (Transformer layers) or mobilenet (inverted-"
                    "residual conv blocks, then num_layers Transformer layers)")
    num_layers: int = opt(4, help="Transformer layers")
    hidden_size: int = opt(256, help="hidden width")
    num_heads: int = opt(4, help="attention heads (must divide hidden_size)")
    intermediate_size: int = opt(1024, help="FFN width")
    max_position_embeddings: int = opt(512, help="longest sequence the model can take")
    dropout: float = opt(0.1, help="hidden and attention dropout probability")
    conv_blocks: int = opt(2, help="mobilenet: inverted-residual conv blocks before the Transformer")
    expand_ratio: int = opt(4, help="mobilenet: channel expansion inside a conv block")
    kernel_size: int = opt(5, help="mobilenet: depthwise kernel width (odd)")
    embedding_size: int = opt(0, help="mobilenet: factorised embeddings this wide (0 = hidden_size)")
    embeddings_from: str = opt("", help="start the word embeddings from a trained table: jieba-lac, "
                               "lac-char, lac-word (installed packages) or a table file "
                               "(word2vec .txt/.vec, .npy or a Paddle tensor + its vocab); '' = random")
    embeddings_std: str = opt("unit", help="scale of the table rows: unit (1/sqrt(width)), table "
                              "(the table's own) or a number (per-element std)")

    def __post_init__(self) -> None:
        if self.kind not in ARCHITECTURES:
            raise ValueError(f"arch.kind {self.kind!r} is unknown; valid: {', '.join(ARCHITECTURES)}")
        if self.kind == "mobilenet" and (self.conv_blocks < 0 or self.expand_ratio < 1 or
                                         self.kernel_size % 2 == 0 or self.embedding_size < 0):
            raise ValueError("arch.conv_blocks must be >= 0, expand_ratio >= 1, kernel_size odd and "
                             "embedding_size >= 0")
        for name in ("num_layers", "hidden_size", "num_heads", "intermediate_size",
                     "max_position_embeddings"):
            if getattr(self, name) < 1:
                raise ValueError(f"arch.{name} must be >= 1, got {getattr(self, name)}")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"arch.num_heads ({self.num_heads}) must divide arch.hidden_size "
                             f"({self.hidden_size})")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"arch.dropout must be in [0, 1), got {self.dropout}")
        parse_std(self.embeddings_std)


def ernie_config(arch: ArchConfig, vocab_size: int, pad_token_id: int = 0):
    """The ``ErnieConfig`` of a from-scratch encoder: what finetune builds a QA model from and
    pretrain an MLM model from, so a pretrained folder has the shape finetune would build."""
    from paddlenlp.transformers import ErnieConfig

    return ErnieConfig(
        vocab_size=vocab_size,
        hidden_size=arch.hidden_size,
        num_hidden_layers=arch.num_layers,
        num_attention_heads=arch.num_heads,
        intermediate_size=arch.intermediate_size,
        max_position_embeddings=arch.max_position_embeddings,
        hidden_dropout_prob=arch.dropout,
        attention_probs_dropout_prob=arch.dropout,
        type_vocab_size=4,
        pad_token_id=pad_token_id,
    )


def _ernie(arch: ArchConfig, vocab_size: int, pad_token_id: int):
    from paddlenlp.transformers import ErnieForQuestionAnswering

    return ErnieForQuestionAnswering(ernie_config(arch, vocab_size, pad_token_id))


def mobile_config(arch: ArchConfig, vocab_size: int, pad_token_id: int = 0):
    """The ``MobileQAConfig`` of a from-scratch hybrid (ERNIE's embedding settings + the conv stack)."""
    from .mobile import MobileQAConfig

    cfg = ernie_config(arch, vocab_size, pad_token_id).to_dict()
    for key in ("num_hidden_layers", "model_type", "architectures", "transformers_version",
                "paddlenlp_version"):
        cfg.pop(key, None)
    return MobileQAConfig(
        conv_blocks=arch.conv_blocks, expand_ratio=arch.expand_ratio, kernel_size=arch.kernel_size,
        num_transformer_layers=arch.num_layers, embedding_size=arch.embedding_size, **cfg)


def _mobilenet(arch: ArchConfig, vocab_size: int, pad_token_id: int):
    from .mobile import MobileQAForQuestionAnswering

    return MobileQAForQuestionAnswering(mobile_config(arch, vocab_size, pad_token_id))


def _ernie_mlm(arch: ArchConfig, vocab_size: int, pad_token_id: int):
    from paddlenlp.transformers import ErnieForMaskedLM

    return ErnieForMaskedLM(ernie_config(arch, vocab_size, pad_token_id))


def _mobilenet_mlm(arch: ArchConfig, vocab_size: int, pad_token_id: int):
    from .mobile import MobileQAForMaskedLM

    return MobileQAForMaskedLM(mobile_config(arch, vocab_size, pad_token_id))


# arch.kind -> builder of a randomly initialised QA model, and of its masked-LM twin (pretrain):
# the same encoder under the same prefix, so a pre-trained folder loads into the QA model
ARCHITECTURES = {"ernie": _ernie, "mobilenet": _mobilenet}
MLM_ARCHITECTURES = {"ernie": _ernie_mlm, "mobilenet": _mobilenet_mlm}


def build_from_scratch(arch: ArchConfig, vocab_size: int, pad_token_id: int = 0):
    return ARCHITECTURES[arch.kind](arch, vocab_size, pad_token_id)


def build_mlm_from_scratch(arch: ArchConfig, vocab_size: int, pad_token_id: int = 0):
    return MLM_ARCHITECTURES[arch.kind](arch, vocab_size, pad_token_id)


def widen_token_types(model, n_types: int) -> int:
    """Give ``model`` at least ``n_types`` token types, in place; returns how many it had.

    Type ``i`` of the wider table starts as a copy of type ``i mod old`` (types 4-7 as 0-3), so
    the widened model computes exactly what it did before until training tells the new types
    apart: a pretrained model (ERNIE 3.0 has 4 types) keeps what it knows, and a from-scratch one
    draws the same random weights as without the new types. Updates ``model.config`` so that the
    saved folder reloads with the wider table."""
    import paddle

    old = int(getattr(model.config, "type_vocab_size", 0) or 0)
    if old >= n_types:
        return old
    found = False
    for layer in model.sublayers():
        emb = getattr(layer, "token_type_embeddings", None)
        if emb is None or not isinstance(emb, paddle.nn.Embedding):
            continue
        w = emb.weight.numpy()
        wide = paddle.nn.Embedding(n_types, w.shape[1])
        wide.weight.set_value(w[np.arange(n_types) % w.shape[0]])
        layer.token_type_embeddings = wide
        found = True
    if not found:
        raise PaddleQAError(f"{type(model).__name__} has no token_type_embeddings table to widen "
                            f"to {n_types} token types; turn word_marks and entity_marks off for this model")
    model.config.type_vocab_size = n_types
    return old


def load_model(name_or_dir: str):
    """A PaddleNLP QA model from a folder or hub name, with clear errors when it cannot load.

    A local folder is checked first (:func:`paddleqa.core.safeload.verify_model_folder`): its
    pickles may hold only arrays, and a folder a paddleqa stage wrote must still match the
    sha256 that stage recorded."""
    from paddlenlp.transformers import AutoModelForQuestionAnswering

    path = Path(name_or_dir)
    if path.exists():
        if not path.is_dir():
            raise PaddleQAError(f"model {path}: expected a model folder, got a file")
        if not (path / "config.json").exists() and not (path / "model_config.json").exists():
            hint = ""
            if (path / "model").is_dir():
                hint = f"; did you mean {path / 'model'}?"
            raise PaddleQAError(f"model folder {path} has no config.json{hint}")
        verify_model_folder(path)  # before anything in it is unpickled
        try:
            own = own_class(architecture_of(path))  # paddleqa's classes are unknown to Auto*
            if own is not None:
                return own.from_pretrained(str(path))
            return AutoModelForQuestionAnswering.from_pretrained(str(path))
        except Exception as exc:
            raise PaddleQAError(f"cannot load the model in {path}: {type(exc).__name__}: {exc}") from None
    try:
        return AutoModelForQuestionAnswering.from_pretrained(str(name_or_dir))
    except Exception as exc:  # offline hub lookups fail with OSError/ValueError/requests errors
        raise PaddleQAError(
            f"cannot load model {name_or_dir!r}: no such folder, and the model hub is unreachable or "
            f"does not know it ({type(exc).__name__}). Pass a local model folder instead."
        ) from None


def own_class(architecture: str):
    """paddleqa's class for a folder's ``architectures[0]`` (unknown to PaddleNLP's Auto
    classes), or None for PaddleNLP's own."""
    if architecture == "CompactErnieForQuestionAnswering":
        from .compact import CompactErnieForQuestionAnswering

        return CompactErnieForQuestionAnswering
    if architecture in ("MobileQAForQuestionAnswering", "MobileQAForMaskedLM"):  # pretrain's folder
        from .mobile import MobileQAForQuestionAnswering

        return MobileQAForQuestionAnswering
    return None


def architecture_of(folder: Path) -> str:
    """``architectures[0]`` of a model folder's ``config.json`` ('' when there is none)."""
    import json

    try:
        cfg = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ""
    archs = cfg.get("architectures") or [""]
    return archs[0]


def count_params(model) -> dict[str, int]:
    """Total, embedding and non-embedding parameter counts."""
    total = emb = 0
    for name, p in model.named_parameters():
        n = int(np.prod(p.shape))
        total += n
        if "embeddings" in name:
            emb += n
    return {"params": total, "embedding_params": emb, "non_embedding_params": total - emb}
