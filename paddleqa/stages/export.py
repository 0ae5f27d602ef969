"""Export: a QA model -> Paddle inference model -> Paddle Lite ``.nb`` per target and precision.

The one export wrapper lives here (:class:`QAExportWrapper`): every input the model reads is an
explicit graph input (``input_ids, token_type_ids, position_ids, attention_mask``), because
PaddleNLP's ERNIE builds position ids with ``paddle.ones(dynamic_shape)`` which Lite cannot
place ("no valid out_shape" at ``fill_constant``). Dropout is removed before tracing (Lite's
dropout-elimination pass leaves inference dropouts in the graph).

Lite conversion goes through ``paddlelite.lite.Opt`` (the Python binding of ``paddle_lite_opt``).
For each target a fused-op report compares op counts by type in the inference model and in the
optimised model: ``Opt`` writes the optimised program once more as protobuf for that, since a
``.nb`` file cannot be read back from Python.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ..core.config import opt, to_dict
from ..core.errors import PaddleQAError
from ..core.io import write_json
from ..core.manifest import sha256_path, write_manifest
from ..models.build import count_params, load_model
from ..models import INPUT_DTYPES, INPUT_NAMES, OUTPUT_NAMES
from ..runtime.bundle import (
    BUNDLE,
    INFERENCE_PREFIX,
    ONNX_FILE,
    TOKENIZER_FILES,
    copy_tokenizer,
    program_op_counts,
    resolve_model_dir,
    stdout_to_stderr,
)
from ..text.features import feature_params_for
from ..text.tokenizer import load_tokenizer

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


@dataclasses.dataclass
class ExportConfig:
    """Export a QA model to a Paddle inference model and Paddle Lite ``.nb`` bundles."""

    model: str = opt("", help="model folder (any paddleqa/PaddleNLP QA model), or a finetune/"
                     "distill/prune output folder holding model/")
    out_dir: str = opt("", help="export folder: inference/, one bundle folder per target and "
                       "precision, metrics.json with the op report, manifest.json")
    targets: list[str] = opt(factory=lambda: ["arm", "x86"], help=f"Lite targets: {', '.join(TARGETS)}")
    precisions: list[str] = opt(factory=lambda: ["fp32"], help="fp32, fp16 (ARM only), int8/int16 "
                                "(opt's weight-only quantization); each target gets the ones it takes")
    max_seq_len: int = opt(0, help="window length recorded in the bundle; 0 = as trained")
    static_seq_len: bool = opt(False, help="fix the sequence axis to max_seq_len in the graph "
                               "(default: dynamic batch and sequence axes)")
    inference_model: str = opt("", help="convert this existing inference model prefix (e.g. an "
                               "int8 model from `paddleqa quantize`, PREFIX.pdmodel/.pdiparams) "
                               "instead of tracing `model`; the tokenizer still comes from `model`")
    onnx: bool = opt(False, help="also convert the fp32 inference model to ONNX (paddle2onnx) "
                     "into onnx/model.onnx, runnable by ONNX Runtime: a peer backend for bench")
    onnx_opset: int = opt(13, help="ONNX opset of the onnx/ export")

    def __post_init__(self) -> None:
        for name in ("model", "out_dir"):
            if not getattr(self, name):
                raise ValueError(f"{name} is required")
        if not self.targets:
            raise ValueError(f"targets must name at least one of: {', '.join(TARGETS)}")
        unknown = [t for t in self.targets if t not in TARGETS]
        if unknown:
            raise ValueError(f"unknown target(s) {', '.join(unknown)}; valid: {', '.join(TARGETS)}")
        valid = sorted({p for t in TARGETS.values() for p in t.precisions})
        bad = [p for p in self.precisions if p not in valid]
        if bad or not self.precisions:
            raise ValueError(f"unknown precision(s) {', '.join(bad) or '(none given)'}; valid: {', '.join(valid)}")
        if not any(p in TARGETS[t].precisions for t in self.targets for p in self.precisions):
            raise ValueError(f"no target among {self.targets} takes precisions {self.precisions}")
        if self.max_seq_len < 0:
            raise ValueError(f"max_seq_len must be >= 0, got {self.max_seq_len}")


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


def _same_as_fp32(nb: Path, pdmodel: Path, pdiparams: Path, target: str) -> bool:
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


def _bundle_readme(target: str, precision: str, bundle: dict) -> str:
    spec = TARGETS[target]
    return f"""# paddleqa Paddle Lite bundle: {target}, {precision}

`model.nb` is a Paddle Lite model optimised by `opt` for **{target}** ({spec.note}).
Tokenize with `vocab.txt` (an ERNIE WordPiece vocab: `[CLS] question [SEP] context [SEP]`,
at most {bundle['max_seq_len']} tokens per window, windows every {bundle['doc_stride']} tokens
of context). `bundle.json` lists the inputs, their shapes and dtypes.

Inputs (batch B, sequence S <= {bundle['max_seq_len']}):

| name | dtype | shape | value |
| --- | --- | --- | --- |
| input_ids | int64 | [B, S] | token ids, padding = {bundle['pad_token_id']} |
| token_type_ids | int64 | [B, S] | 0 question, 1 context{', 2/3 tokens found on both sides' if bundle['overlap_types'] else ''} |
| position_ids | int64 | [B, S] | 0, 1, ..., S-1 |
| attention_mask | float32 | [B, S] | 1 real token, 0 padding |

Outputs: `start_logits`, `end_logits`, float32 [B, S]; the answer is the best-scoring
(start <= end, at most max_answer_length tokens, inside the context) span.

## C++ (Paddle Lite light API)

```cpp
#include "paddle_api.h"
using namespace paddle::lite_api;
MobileConfig config;
config.set_model_from_file("model.nb");
config.set_threads(2);  // ARM
auto predictor = CreatePaddlePredictor<MobileConfig>(config);
const char* names[] = {{"input_ids", "token_type_ids", "position_ids"}};
for (int i = 0; i < 3; ++i) {{
  auto t = predictor->GetInput(i);          // inputs are in the order of the table above
  t->Resize({{1, S}});
  std::copy(ids[i], ids[i] + S, t->mutable_data<int64_t>());
}}
auto mask = predictor->GetInput(3);
mask->Resize({{1, S}});
std::copy(mask_values, mask_values + S, mask->mutable_data<float>());
predictor->Run();
const float* start = predictor->GetOutput(0)->data<float>();
const float* end = predictor->GetOutput(1)->data<float>();
```

## Java (Android)

```java
MobileConfig config = new MobileConfig();
config.setModelFromFile(dir + "/model.nb");
config.setThreads(2);
PaddlePredictor predictor = PaddlePredictor.createPaddlePredictor(config);
Tensor ids = predictor.getInput(0);
ids.resize(new long[]{{1, S}});
ids.setData(inputIds);  // long[]; likewise inputs 1-2 (long[]) and 3 (float[])
predictor.run();
float[] start = predictor.getOutput(0).getFloatData();
```

Use the Paddle Lite runtime of the version that wrote this file ({bundle['paddlelite_version']}).
"""


def run(config: ExportConfig) -> dict:
    """Export; writes inference/, TARGET-PRECISION/ bundles, metrics.json (op report), manifest."""
    from importlib import metadata


    started = time.time()
    model_dir = resolve_model_dir(config.model)
    tokenizer = load_tokenizer(str(model_dir))
    params = feature_params_for(str(model_dir), max_seq_len=config.max_seq_len)
    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if config.inference_model:
        pdmodel = Path(config.inference_model + ".pdmodel")
        pdiparams = Path(config.inference_model + ".pdiparams")
        for f in (pdmodel, pdiparams):
            if not f.is_file():
                raise PaddleQAError(f"inference model file {f} not found; pass the PREFIX of "
                                    "PREFIX.pdmodel and PREFIX.pdiparams")
        sizes = {}
    else:
        from ..models.graph import export_inference  # imports paddle: deferred on purpose

        model = load_model(str(model_dir))
        sizes = count_params(model)
        files = export_inference(model, out / INFERENCE_PREFIX,
                                 static_seq_len=params.max_seq_len if config.static_seq_len else 0)
        pdmodel, pdiparams = files["pdmodel"], files["pdiparams"]
        copy_tokenizer(model_dir, pdmodel.parent)  # the inference folder is self-contained
    before = program_op_counts(pdmodel)
    graph_int8 = any("quantize" in op for op in before)  # a PTQ/QAT graph
    log.info("inference model: %d ops%s", sum(before.values()), " (int8 graph)" if graph_int8 else "")
    vocab_hash = sha256_path(model_dir / "vocab.txt") if (model_dir / "vocab.txt").exists() else None
    try:
        lite_version = metadata.version("paddlelite")
    except metadata.PackageNotFoundError:
        lite_version = "unknown"
    bundles, ops_report, outputs, skipped = {}, {}, {"inference_model": pdmodel}, {}
    for target in config.targets:
        spec = TARGETS[target]
        for precision in config.precisions:
            if precision not in spec.precisions:
                log.info("target %s does not take %s: skipped", target, precision)
                continue
            # A quantized graph converted "as is" is an int8 model: name its bundle so.
            label = "int8" if graph_int8 and precision == "fp32" else precision
            name = f"{target}-{label}"
            folder = out / name
            if folder.exists():
                shutil.rmtree(folder)
            tmp = out / f".{name}.tmp"
            if tmp.exists():
                shutil.rmtree(tmp)
            log.info("Paddle Lite opt: %s", name)
            nb = lite_optimize(pdmodel, pdiparams, target, precision, tmp / "model")
            if precision == "fp16" and _same_as_fp32(nb, pdmodel, pdiparams, target):
                # The pip build of opt has no ARM fp16 kernels: enable_fp16() is silently a
                # no-op there. Say so instead of shipping an fp32 file named fp16.
                reason = ("this paddlelite build's opt ignores enable_fp16() (no ARM fp16 "
                          "kernels compiled in): the output was as large as the fp32 file (weights still fp32). Use an "
                          "opt built with ARM fp16 support (LITE_WITH_ARM8_SVE2/ARM82_FP16)")
                log.warning("%s skipped: %s", name, reason)
                skipped[name] = reason
                shutil.rmtree(tmp)
                continue
            after = lite_op_counts(pdmodel, pdiparams, target, precision)
            copy_tokenizer(model_dir, tmp)
            bundle = {
                "format": "paddle-lite-naive-buffer", "target": target, "precision": label,
                "int8_graph": graph_int8,
                "runs_on_this_machine": spec.runs_here, "model_file": "model.nb",
                "model_bytes": nb.stat().st_size, "model_sha256": sha256_path(nb),
                "inputs": [{"name": n, "dtype": INPUT_DTYPES[n], "shape": [-1, -1]} for n in INPUT_NAMES],
                "outputs": [{"name": n, "dtype": "float32", "shape": [-1, -1]} for n in OUTPUT_NAMES],
                "max_seq_len": params.max_seq_len, "doc_stride": params.doc_stride,
                "max_query_length": params.max_query_length, "overlap_types": params.overlap_types,
                "pad_token_id": int(tokenizer.pad_token_id), "vocab_sha256": vocab_hash,
                "tokenizer_files": [f for f in TOKENIZER_FILES if (tmp / f).exists()],
                "paddlelite_version": lite_version,
                "source": {"model": str(model_dir), "model_sha256": sha256_path(model_dir),
                           "inference_model": str(pdmodel), "pdmodel_sha256": sha256_path(pdmodel)},
            }
            write_json(tmp / BUNDLE, bundle)
            (tmp / "README.md").write_text(_bundle_readme(target, precision, bundle), encoding="utf-8")
            tmp.rename(folder)
            nb = folder / nb.name
            bundles[name] = {"path": str(nb), "bytes": nb.stat().st_size,
                             "runs_on_this_machine": spec.runs_here}
            ops_report[name] = {"ops": after, **fusion_report(before, after)}
            outputs[name] = nb
            log.info("%s: %s (%.2f MiB), ops %d -> %d", name, nb, nb.stat().st_size / 2**20,
                     sum(before.values()), sum(after.values()))
    if not bundles:
        raise PaddleQAError(f"no bundle written for targets {config.targets} and precisions "
                            f"{config.precisions}" + "".join(f"; {k}: {v}" for k, v in skipped.items()))
    onnx = None
    if config.onnx:
        if graph_int8:
            raise PaddleQAError("onnx: only fp32 graphs are converted (this inference model is "
                                "int8); export the fp32 model with onnx: true instead")
        onnx_file = export_onnx(pdmodel, pdiparams, out / ONNX_FILE, opset=config.onnx_opset)
        copy_tokenizer(model_dir, onnx_file.parent)
        onnx = {"path": str(onnx_file), "bytes": onnx_file.stat().st_size, "opset": config.onnx_opset}
        outputs["onnx"] = onnx_file
    metrics = {
        **sizes,
        "inference_model_bytes": pdmodel.stat().st_size + pdiparams.stat().st_size,
        "inference_ops": before,
        "bundles": bundles,
        "op_report": ops_report,
        "skipped": skipped,
        "onnx": onnx,
        "feature_params": dataclasses.asdict(params),
    }
    inputs = {"model": model_dir}
    if config.inference_model:
        inputs["inference_model"] = pdmodel
    write_manifest(out, "export", to_dict(config), inputs, outputs, metrics,
                   started=started)
    return metrics


def describe_ops(metrics: dict) -> str:
    """A short text table of the op report (for the CLI)."""
    lines = []
    for name, rep in metrics["op_report"].items():
        delta = ", ".join(f"{k} {v:+d}" for k, v in rep["delta_by_type"].items())
        lines.append(f"{name}: {rep['ops_before']} -> {rep['ops_after']} ops"
                     f"{'; ' + delta if delta else ''}")
    return "\n".join(lines)


