"""int8 embedding tables for Paddle Lite: an int8 table and a per-row fp32 scale, dequantised in
the graph.

Lite's ``opt`` keeps ``lookup_table`` weights in fp32 even under weight-only quantization, and
the character table is most of a small student's bytes. Here every ``nn.Embedding`` of a model
is replaced by :class:`Int8Embedding`: row ``r`` is stored as ``round(w_r / s_r)`` in int8 with
``s_r = max|w_r| / 127`` (symmetric, per row), and the graph computes
``cast(gather(table_int8, ids), float32) * gather(scale, ids)``. Lite runs that on x86 and ARM
(its host ``gather`` kernel takes int8 data, ``cast`` int8 -> fp32); the padding row is stored as
zeros, so padding ids still embed to 0 as ``nn.Embedding(padding_idx=...)`` does.

Written by hand because nothing in the stack does it: PaddleSlim's quantizers and ``opt``'s
``--quant_model`` leave embedding lookups in fp32. Paddle's static-graph ``gather`` and ``cast``
wrappers reject int8 in their Python dtype checks although the operators (and Lite's kernels)
take it, so the two ops are appended with ``LayerHelper`` when tracing. Paddle Inference has no
int8 ``gather`` kernel on CPU, and Lite none for uint8 (both checked): so a table is stored
either as int8 (``storage="int8"``, the Lite graph) or as uint8 with a zero point of 128
(``storage="uint8"``: ``(cast(gather(table_u8, ids)) - 128) * gather(scale, ids)``, the Paddle
Inference graph); both hold the same 8-bit values and compute the same embeddings. ONNX int8
quantizes its Gather itself.
"""
from __future__ import annotations

import numpy as np

from ..core.errors import PaddleQAError


def _layer_base():
    import paddle

    return paddle.nn.Layer


def quantize_rows(weight: np.ndarray, padding_idx: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(int8 table, fp32 scale [rows, 1])`` of a 2-D table; all-zero rows get scale 1."""
    w = np.asarray(weight, dtype=np.float32)
    if w.ndim != 2 or not np.isfinite(w).all():
        raise PaddleQAError(f"an embedding table must be a finite 2-D array, got shape {w.shape}")
    scale = np.abs(w).max(axis=1) / 127.0
    scale[scale == 0] = 1.0
    q = np.clip(np.rint(w / scale[:, None]), -127, 127).astype(np.int8)
    if padding_idx is not None:
        q[padding_idx] = 0
    return q, scale[:, None].astype(np.float32)


def _append(kind: str, x, attrs: dict, inputs: dict, dtype):
    from paddle.base.layer_helper import LayerHelper

    helper = LayerHelper(kind)
    out = helper.create_variable_for_type_inference(dtype=dtype)
    helper.append_op(type=kind, inputs={"X": x, **inputs}, outputs={"Out": out}, attrs=attrs)
    return out


STORAGES = {"int8": 0, "uint8": 128}  # storage dtype -> zero point (see the module doc)


class Int8Embedding(_layer_base()):
    """An embedding lookup from an 8-bit table with a per-row scale (see the module doc)."""

    def __init__(self, weight: np.ndarray, padding_idx: int | None = None, storage: str = "int8"):
        import paddle

        super().__init__()
        if storage not in STORAGES:
            raise PaddleQAError(f"unknown table storage {storage!r}; valid: {', '.join(STORAGES)}")
        q, scale = quantize_rows(weight, padding_idx)
        self.zero_point = STORAGES[storage]
        if self.zero_point:
            q = (q.astype(np.int16) + self.zero_point).astype(np.uint8)
        self.num_embeddings, self.embedding_dim = q.shape
        self.register_buffer("qweight", paddle.to_tensor(q), persistable=True)
        self.register_buffer("qscale", paddle.to_tensor(scale), persistable=True)

    def dequantized(self) -> np.ndarray:
        return (self.qweight.numpy().astype(np.float32) - self.zero_point) * self.qscale.numpy()

    def forward(self, ids):
        import paddle

        flat = paddle.reshape(ids, [-1])
        if paddle.in_dynamic_mode():  # embedding's kernel takes int8, not uint8; gather the reverse
            rows = paddle.cast(paddle.gather(self.qweight, flat) if self.zero_point
                               else paddle.nn.functional.embedding(flat, self.qweight), "float32")
        else:  # tracing: the ops take int8, their Python wrappers do not (see the module doc)
            rows = _append("gather", self.qweight, {"overwrite": True}, {"Index": flat},
                           self.qweight.dtype)
            rows = _append("cast", rows, {"in_dtype": self.qweight.dtype,
                                          "out_dtype": paddle.float32}, {}, paddle.float32)
        if self.zero_point:
            rows = rows - float(self.zero_point)
        out = rows * paddle.gather(self.qscale, flat)
        dims = paddle.shape(ids)  # dynamic axes stay dynamic; the width is static for shape inference
        return paddle.reshape(out, [dims[i] for i in range(len(ids.shape))] + [self.embedding_dim])


def quantize_embeddings(model, storage: str = "int8") -> dict:
    """Replace every ``nn.Embedding`` of ``model`` (in place) by :class:`Int8Embedding` with
    ``storage`` (int8: the Lite graph; uint8: the Paddle Inference graph).

    Returns the report export records: the tables (name, rows, width), their fp32 and int8
    bytes (scales included), and the largest absolute change of any table entry.
    """
    import paddle.nn as nn

    tables, fp32_bytes, int8_bytes, max_err = [], 0, 0, 0.0
    for parent_name, parent in list(model.named_sublayers(include_self=True)):
        for child_name, child in list(parent.named_children()):
            if not isinstance(child, nn.Embedding):
                continue
            weight = child.weight.numpy()
            pad = child._padding_idx
            if pad is not None and pad < 0:
                pad += weight.shape[0]
            q8 = Int8Embedding(weight, pad, storage)
            keep = np.ones(len(weight), bool)
            if pad is not None:
                keep[pad] = False
            max_err = max(max_err, float(np.abs(q8.dequantized()[keep] - weight[keep]).max()))
            setattr(parent, child_name, q8)
            rows, width = weight.shape
            tables.append({"name": f"{parent_name}.{child_name}".lstrip("."), "rows": rows,
                           "width": width})
            fp32_bytes += rows * width * 4
            int8_bytes += rows * width + rows * 4
    if not tables:
        raise PaddleQAError("export.embeddings=int8: the model has no nn.Embedding table to "
                            "quantize; use embeddings: fp32")
    return {"tables": tables, "fp32_bytes": fp32_bytes, "int8_bytes": int8_bytes,
            "max_abs_error": max_err}
