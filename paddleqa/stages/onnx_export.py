"""ONNX export: the fp32 inference model through paddle2onnx, and its dynamic-int8 twin.

``export_onnx`` writes ``onnx/model.onnx``; ``quantize_onnx`` (``export --onnx-int8``) writes
``onnx/model.int8.onnx`` with ``onnxruntime.quantization.quantize_dynamic`` after turning
paddle2onnx's Constant-node weights into initializers, which that tool needs.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

from ..core.errors import PaddleQAError
from ..runtime.bundle import stdout_to_stderr

log = logging.getLogger(__name__)


def export_onnx(pdmodel: Path, pdiparams: Path, dest: Path, *, opset: int = 13) -> Path:
    """Convert an fp32 inference model to ONNX with paddle2onnx (written to a temp name, then
    renamed, so a kill never leaves a half-written file that looks finished)."""
    try:
        import paddle2onnx
    except Exception as exc:  # noqa: BLE001 -- missing, or a release built for another Paddle
        raise PaddleQAError(f"onnx export needs paddle2onnx 1.x for Paddle 2.6 ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0] if str(exc) else ''}); install the pinned "
                            "one: pip install -c constraints.txt paddle2onnx") from None
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp")
    with stdout_to_stderr():  # paddle2onnx prints its progress to stdout
        ok = paddle2onnx.export(str(pdmodel), str(pdiparams), str(tmp), opset_version=opset,
                                enable_onnx_checker=True, verbose=False)
    if ok is False or not tmp.exists() or tmp.stat().st_size == 0:
        raise PaddleQAError(f"paddle2onnx could not convert {pdmodel} at opset {opset}; try "
                            "another onnx_opset")
    os.replace(tmp, dest)
    log.info("onnx: %s (%.2f MiB, opset %d)", dest, dest.stat().st_size / 2**20, opset)
    return dest


def quantize_onnx(src: Path, dest: Path) -> Path:
    """int8 weights + dynamically quantized activations for ONNX Runtime (``quantize_dynamic``:
    no calibration data; MatMul becomes MatMulInteger with per-call activation scales; conv
    layers stay fp32)."""
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
        from onnxruntime.quantization.registry import IntegerOpsRegistry
    except ImportError:
        raise PaddleQAError("onnx_int8 needs ONNX Runtime's quantization tools: pip install -c "
                            "constraints.txt onnxruntime") from None
    import onnx
    from onnx import numpy_helper

    # paddle2onnx writes every weight as a Constant node; quantize_dynamic only quantizes a
    # MatMul whose weight is an initializer (else it silently leaves the graph fp32), so the
    # constants become initializers first.
    model = onnx.load(str(src))
    graph = model.graph
    for node in [n for n in graph.node if n.op_type == "Constant"]:
        value = next((a for a in node.attribute if a.name == "value"), None)
        if value is not None:
            array = numpy_helper.to_array(value.t)
            graph.initializer.append(numpy_helper.from_array(array, node.output[0]))
            graph.node.remove(node)
    _fold_constant_products(graph)
    prepared = dest.with_name(f".{dest.name}.fp32.tmp")
    tmp = dest.with_name(f".{dest.name}.tmp")
    onnx.save(model, str(prepared))
    try:
        # Every integer op of ONNX Runtime's dynamic registry except Conv: a quantized Conv
        # becomes ConvInteger, which its CPU provider cannot run (a mobile student's conv blocks).
        ops = [op for op in IntegerOpsRegistry if op != "Conv"]
        quantize_dynamic(str(prepared), str(tmp), weight_type=QuantType.QInt8, op_types_to_quantize=ops)
    finally:
        prepared.unlink(missing_ok=True)
    os.replace(tmp, dest)  # complete or absent, as with export_onnx
    log.info("onnx int8: %s (%.2f MiB)", dest, dest.stat().st_size / 2**20)
    return dest


def _fold_constant_products(graph) -> None:
    """Replace each Mul of two initializers by its product, then drop unused initializers.

    paddle2onnx masks an embedding with a padding index as ``Mul(weight, mask)``, the mask a
    second table of the weight's size; folded, the table is one initializer that Gather reads,
    and quantize_dynamic can quantize it (the int8 file loses both fp32 copies).
    """
    from onnx import numpy_helper

    inits = {i.name: i for i in graph.initializer}
    for node in [n for n in graph.node if n.op_type == "Mul" and all(i in inits for i in n.input)]:
        a, b = (numpy_helper.to_array(inits[i]) for i in node.input)
        graph.initializer.append(numpy_helper.from_array((a * b).astype(a.dtype), node.output[0]))
        graph.node.remove(node)
    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    for init in [i for i in graph.initializer if i.name not in used]:
        graph.initializer.remove(init)
