"""The one export wrapper: a QA model as a static graph with explicit inputs.

Every input the model reads is an explicit graph input (``input_ids, token_type_ids,
position_ids, attention_mask``), because PaddleNLP's ERNIE builds position ids with
``paddle.ones(dynamic_shape)`` which Lite cannot place ("no valid out_shape" at
``fill_constant``). Dropout is removed before tracing (Lite's dropout-elimination pass leaves
inference dropouts in the graph).
"""
from __future__ import annotations

import logging
from pathlib import Path

from ..core.errors import PaddleQAError
from . import INPUT_DTYPES, INPUT_NAMES

log = logging.getLogger(__name__)



def _layer_base():
    import paddle

    return paddle.nn.Layer


class QAExportWrapper(_layer_base()):
    """``(input_ids, token_type_ids, position_ids, attention_mask) -> (start_logits, end_logits)``.

    ``attention_mask`` is float 1/0 ``[batch, seq]``; every model family of paddleqa (PaddleNLP
    ERNIE, the compact pruned ERNIE, the conv student) turns it into its additive form itself.
    """

    def __init__(self, model):
        super().__init__()
        self.model = model

    # dy2static maps arguments by name: keep `self` as the first parameter's name.
    def forward(self, input_ids, token_type_ids, position_ids, attention_mask):
        out = self.model(input_ids=input_ids, token_type_ids=token_type_ids,
                         position_ids=position_ids, attention_mask=attention_mask)
        if isinstance(out, (tuple, list)):
            return out[0], out[1]
        return out.start_logits, out.end_logits


def strip_dropout(model) -> int:
    """Set every dropout probability to 0 so that tracing emits no dropout op; returns the count.

    ``F.dropout`` returns its input unchanged for p == 0, so neither layers (``nn.Dropout``) nor
    attention modules holding a float ``dropout`` (``nn.MultiHeadAttention``, the compact
    attention) leave anything in the graph.
    """
    import paddle.nn as nn

    n = 0
    for layer in model.sublayers(include_self=True):
        if isinstance(layer, nn.Dropout):
            n += layer.p != 0
            layer.p = 0.0
        elif isinstance(getattr(layer, "dropout", None), float):
            n += layer.dropout != 0
            layer.dropout = 0.0
    return int(n)


def input_spec(static_seq_len: int = 0):
    from paddle.static import InputSpec

    seq = static_seq_len or None
    return [InputSpec([None, seq], INPUT_DTYPES[n], n) for n in INPUT_NAMES]


def export_inference(model, prefix: str | Path, *, static_seq_len: int = 0) -> dict[str, Path]:
    """Trace ``model`` through :class:`QAExportWrapper` into ``PREFIX.pdmodel/.pdiparams``."""
    import paddle

    model.eval()
    removed = strip_dropout(model)
    log.info("dropout removed from %d layers before tracing", removed)
    wrapper = QAExportWrapper(model)
    wrapper.eval()
    prefix = Path(prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    paddle.jit.save(wrapper, str(prefix), input_spec=input_spec(static_seq_len))
    files = {"pdmodel": prefix.with_suffix(".pdmodel"), "pdiparams": prefix.with_suffix(".pdiparams")}
    for f in files.values():
        if not f.exists():
            raise PaddleQAError(f"paddle.jit.save wrote no {f}")
    return files
