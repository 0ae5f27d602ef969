"""Paddle Lite's ``opt``: its targets, one conversion in a child process, the fused-op report.

Lite conversion goes through ``paddlelite.lite.Opt`` (the Python binding of ``paddle_lite_opt``),
run in a child process. For each target a fused-op report compares op counts by type in the
inference model and in the optimised model: ``Opt`` writes the optimised program once more as
protobuf for that, since a ``.nb`` file cannot be read back from Python.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import subprocess
import sys
import tempfile
from pathlib import Path

from ..core.errors import PaddleQAError
from ..runtime.bundle import program_op_counts

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Target:
    """A Paddle Lite target: the ``valid_places`` given to ``Opt`` and the precisions it takes."""

    places: str
    precisions: tuple[str, ...]
    runs_here: bool  # can this machine (x86 Linux) execute its .nb through paddlelite?
    note: str


# Strategies by name. ``int8``/``int16`` are opt's weight-only quantization (weights stored in
# int8/int16, dequantized at load); ``fp16`` runs fp16 kernels and exists for ARM only.
TARGETS: dict[str, Target] = {
    "arm": Target("arm", ("fp32", "fp16", "int8", "int16"), False,
                  "ARM CPU (phones, boards); no ARM runtime on this x86 machine: check its x86 "
                  "twin and the op report"),
    "x86": Target("x86", ("fp32", "int8", "int16"), True,
                  "x86 CPU; runs here through paddlelite.lite.MobileConfig"),
}
WEIGHT_QUANT = {"int8": "QUANT_INT8", "int16": "QUANT_INT16"}


_OPT_CHILD = """
import json, sys
import zlib  # noqa: before paddle's bundled zlib (see paddleqa/__init__.py)
from paddlelite.lite import Opt
a = json.loads(sys.argv[1])
o = Opt()
o.set_model_file(a["model"]); o.set_param_file(a["params"]); o.set_valid_places(a["places"])
o.set_model_type(a["type"]); o.set_optimize_out(a["out"])
if a["fp16"]:
    o.enable_fp16()
if a["quant"]:
    o.set_quant_model(True); o.set_quant_type(a["quant"])
o.run()
"""


def lite_optimize(pdmodel: Path, pdiparams: Path, target: str, precision: str, out_prefix: Path,
                  *, model_type: str = "naive_buffer") -> Path:
    """Run ``paddlelite.lite.Opt`` once; returns the written ``.nb`` file (or protobuf folder)."""
    spec = TARGETS[target]
    if precision not in spec.precisions:
        raise PaddleQAError(f"target {target} does not take precision {precision}; "
                            f"it takes {', '.join(spec.precisions)}")
    spec_args = {"model": str(pdmodel), "params": str(pdiparams), "places": spec.places,
                 "type": model_type, "out": str(out_prefix), "fp16": precision == "fp16",
                 "quant": WEIGHT_QUANT.get(precision, "")}
    out_prefix.parent.mkdir(parents=True, exist_ok=True)
    # opt runs in a child process: it can crash outright (SIGSEGV in an ARM pass was seen on a
    # conv graph), which would otherwise kill this process without a word.
    res = subprocess.run([sys.executable, "-c", _OPT_CHILD, json.dumps(spec_args)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if res.returncode != 0:
        how = f"signal {-res.returncode}" if res.returncode < 0 else f"exit {res.returncode}"
        last = [ln for ln in (res.stderr or "").strip().splitlines() if ln.strip()][-3:]
        raise PaddleQAError(
            f"Paddle Lite opt failed ({how}) converting {pdmodel} for {target} ({precision}): "
            f"{' | '.join(last)[:500] or 'no message'}. Re-run with GLOG_v=1 to see the last pass; "
            "an op or pass of this graph is not supported for that target")
    log.debug("opt output: %s", res.stdout[-2000:])
    if model_type == "naive_buffer":
        nb = Path(str(out_prefix) + ".nb")
        if not nb.exists() or nb.stat().st_size == 0:
            raise PaddleQAError(f"Paddle Lite opt wrote no {nb} for target {target} ({precision}); "
                                "run with -v to see opt's log")
        return nb
    return out_prefix


def lite_op_counts(pdmodel: Path, pdiparams: Path, target: str, precision: str) -> dict[str, int]:
    """Op counts of the program ``opt`` produces for ``target`` (same passes as the ``.nb``)."""
    with tempfile.TemporaryDirectory(prefix="paddleqa-opt-") as tmp:
        out = lite_optimize(pdmodel, pdiparams, target, precision, Path(tmp) / "model",
                            model_type="protobuf")
        candidates = [p for p in [out / "model", *out.glob("*model*")] if p.is_file()] if out.is_dir() else []
        if not candidates:
            found = [str(p) for p in Path(tmp).rglob("*")]
            raise PaddleQAError(f"Paddle Lite opt wrote no protobuf program (found: {found})")
        return program_op_counts(candidates[0])


def same_as_fp32(nb: Path, pdmodel: Path, pdiparams: Path, target: str) -> bool:
    """True when an "fp16" ``.nb`` stores its weights as fp32 (same size as the fp32 file).

    Sizes, not hashes: two opt runs in one process do not always write identical bytes.
    """
    with tempfile.TemporaryDirectory(prefix="paddleqa-opt-") as tmp:
        ref = lite_optimize(pdmodel, pdiparams, target, "fp32", Path(tmp) / "model")
        return nb.stat().st_size > 0.9 * ref.stat().st_size


def fusion_report(before: dict[str, int], after: dict[str, int]) -> dict:
    """What ``opt`` changed: op totals, op types that appeared (fusions) or vanished."""
    types = sorted(set(before) | set(after))
    delta = {t: after.get(t, 0) - before.get(t, 0) for t in types if after.get(t, 0) != before.get(t, 0)}
    return {
        "ops_before": sum(before.values()), "ops_after": sum(after.values()),
        "new_op_types": sorted(t for t in after if t not in before),
        "removed_op_types": sorted(t for t in before if t not in after),
        "delta_by_type": delta,
    }
