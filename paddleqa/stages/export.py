"""Export: a QA model -> Paddle inference model -> Paddle Lite ``.nb`` per target and precision.

The export wrapper (:class:`paddleqa.models.graph.QAExportWrapper`) makes every input the model reads an
explicit graph input (``input_ids, token_type_ids, position_ids, attention_mask``), because
PaddleNLP's ERNIE builds position ids with ``paddle.ones(dynamic_shape)`` which Lite cannot
place ("no valid out_shape" at ``fill_constant``). Dropout is removed before tracing (Lite's
dropout-elimination pass leaves inference dropouts in the graph).

Lite conversion (``opt``, its targets and the fused-op report) lives in :mod:`.lite`, ONNX (fp32
and dynamic int8) in :mod:`.onnx_export`; here each
target and precision becomes one bundle folder (:func:`write_bundle`), and :func:`run` reads as
the steps: trace (or take) the inference model, the bundles, ONNX, metrics and manifest.
"""
from __future__ import annotations

import dataclasses
import logging
import shutil
import time
from importlib import metadata
from pathlib import Path
from typing import Any

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
    ONNX_INT8_FILE,
    TOKENIZER_FILES,
    copy_tokenizer,
    program_op_counts,
    resolve_model_dir,
)
from ..text.features import FeatureParams, feature_params_for
from ..text.tokenizer import load_tokenizer
from .onnx_export import export_onnx, quantize_onnx
from .lite import TARGETS, fusion_report, lite_op_counts, lite_optimize, same_as_fp32

log = logging.getLogger(__name__)

EMBEDDING_FORMS = ("fp32", "int8")
# int8 embedding tables (see models.int8tables): the graph the Lite bundles are converted from
# (int8 storage), and the Paddle Inference model beside OUT/inference/ (uint8 storage)
LITE_INT8_TABLES_PREFIX = "lite-int8-tables/model"
INT8_TABLES_PREFIX = "inference-int8-tables/model"


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
    onnx_int8: bool = opt(False, help="also write onnx/model.int8.onnx: the ONNX model with int8 "
                          "weights and dynamically quantized activations (onnxruntime.quantization."
                          "quantize_dynamic), run by ONNX Runtime's integer kernels; needs onnx: true")
    embeddings: str = opt("fp32", help="embedding tables of the Lite bundles: fp32, or int8 (an "
                          "int8 table + a per-row scale, dequantised in the graph; Lite keeps "
                          "lookup tables fp32 otherwise), and then also inference-int8-tables/ "
                          "for Paddle Inference. inference/ and ONNX stay fp32")

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
        if self.onnx_int8 and not self.onnx:
            raise ValueError("onnx_int8 quantizes the ONNX export: set onnx: true as well")
        if self.embeddings not in EMBEDDING_FORMS:
            raise ValueError(f"unknown embeddings {self.embeddings!r}; valid: {', '.join(EMBEDDING_FORMS)}")
        if self.embeddings == "int8" and self.inference_model:
            raise ValueError("embeddings: int8 re-traces the model with int8 tables; it cannot "
                             "change a given inference_model (export the model itself)")


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
| token_type_ids | int64 | [B, S] | 0 question, 1 context{', 2/3 tokens found on both sides' if bundle['overlap_types'] else ''}{'; +4 for a token inside a jieba word (not its first character)' if bundle.get('word_marks') else ''}{'; +8 x its LAC entity class (paddleqa.text.features.ENTITY_CLASSES)' if bundle.get('entity_marks') else ''} |
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


@dataclasses.dataclass
class ExportSource:
    """What every bundle of one export is made from: the model folder and its inference model."""

    model_dir: Path  # the model folder (tokenizer files, vocab)
    pdmodel: Path
    pdiparams: Path
    params: FeatureParams  # the windows the bundle is tokenized with
    pad_token_id: Any  # the tokenizer's
    ops: dict[str, int]  # op counts of the inference model, before opt
    int8_graph: bool  # a PTQ/QAT graph (its "fp32" bundle is an int8 model)
    vocab_sha256: str | None
    paddlelite_version: str
    seq_len: int = -1  # the graph's fixed window length (--static-seq-len), -1 = dynamic
    embeddings: str = "fp32"  # the graph's embedding tables: fp32 or int8 (models.int8tables)


@dataclasses.dataclass
class Bundle:
    """One bundle written (``nb``, ``ops``) or skipped (``skipped`` says why)."""

    name: str  # TARGET-PRECISION, also its folder
    nb: Path | None = None
    ops: dict[str, int] | None = None  # op counts of the optimised program
    skipped: str = ""


def _inference_model(config: ExportConfig, model_dir: Path, params: FeatureParams,
                     out: Path) -> tuple[Path, Path, dict]:
    """(pdmodel, pdiparams, parameter counts): ``config.inference_model`` as given, else the
    model traced into ``OUT/inference/`` with its tokenizer beside it."""
    if config.inference_model:
        pdmodel = Path(config.inference_model + ".pdmodel")
        pdiparams = Path(config.inference_model + ".pdiparams")
        for f in (pdmodel, pdiparams):
            if not f.is_file():
                raise PaddleQAError(f"inference model file {f} not found; pass the PREFIX of "
                                    "PREFIX.pdmodel and PREFIX.pdiparams")
        return pdmodel, pdiparams, {}
    from ..models.graph import export_inference  # imports paddle: deferred on purpose

    model = load_model(str(model_dir))
    sizes = count_params(model)
    files = export_inference(model, out / INFERENCE_PREFIX,
                             static_seq_len=params.max_seq_len if config.static_seq_len else 0)
    copy_tokenizer(model_dir, files["pdmodel"].parent)  # the inference folder is self-contained
    return files["pdmodel"], files["pdiparams"], sizes


def _int8_tables_model(config: ExportConfig, model_dir: Path, params: FeatureParams,
                       out: Path) -> tuple[Path, Path, dict]:
    """The model traced again with 8-bit embedding tables: int8 storage into
    ``OUT/lite-int8-tables/`` (returned: what the Lite bundles take), and uint8 storage into
    ``OUT/inference-int8-tables/`` with the tokenizer (a Paddle Inference artifact)."""
    import copy

    from ..models.graph import export_inference
    from ..models.int8tables import quantize_embeddings

    static = params.max_seq_len if config.static_seq_len else 0
    model = load_model(str(model_dir))
    for_inference = copy.deepcopy(model)
    report = quantize_embeddings(model)
    log.info("int8 embedding tables: %d tables, %.2f -> %.2f MiB, max |change| %.3g",
             len(report["tables"]), report["fp32_bytes"] / 2**20, report["int8_bytes"] / 2**20,
             report["max_abs_error"])
    files = export_inference(model, out / LITE_INT8_TABLES_PREFIX, static_seq_len=static)
    quantize_embeddings(for_inference, storage="uint8")
    pi = export_inference(for_inference, out / INT8_TABLES_PREFIX, static_seq_len=static)
    copy_tokenizer(model_dir, pi["pdmodel"].parent)
    report["inference"] = {"path": str(pi["pdmodel"].parent),
                           "bytes": pi["pdmodel"].stat().st_size + pi["pdiparams"].stat().st_size}
    return files["pdmodel"], files["pdiparams"], report


def _export_source(model_dir: Path, pdmodel: Path, pdiparams: Path, params: FeatureParams,
                   pad_token_id: Any) -> ExportSource:
    """Describe the inference model once for all its bundles (op counts, int8 or not, versions)."""
    before = program_op_counts(pdmodel)
    graph_int8 = any("quantize" in op for op in before)  # a PTQ/QAT graph
    log.info("inference model: %d ops%s", sum(before.values()), " (int8 graph)" if graph_int8 else "")
    vocab_hash = sha256_path(model_dir / "vocab.txt") if (model_dir / "vocab.txt").exists() else None
    try:
        lite_version = metadata.version("paddlelite")
    except metadata.PackageNotFoundError:
        lite_version = "unknown"
    return ExportSource(model_dir, pdmodel, pdiparams, params, pad_token_id, before, graph_int8,
                        vocab_hash, lite_version)


def _bundle_json(src: ExportSource, target: str, label: str, nb: Path, folder: Path) -> dict:
    """The bundle's ``bundle.json``: inputs, outputs, windows, tokenizer and provenance."""
    params = src.params
    return {
        "format": "paddle-lite-naive-buffer", "target": target, "precision": label,
        "int8_graph": src.int8_graph, "embeddings": src.embeddings,
        "runs_on_this_machine": TARGETS[target].runs_here, "model_file": "model.nb",
        "model_bytes": nb.stat().st_size, "model_sha256": sha256_path(nb),
        "inputs": [{"name": n, "dtype": INPUT_DTYPES[n], "shape": [-1, src.seq_len]} for n in INPUT_NAMES],
        "outputs": [{"name": n, "dtype": "float32", "shape": [-1, src.seq_len]} for n in OUTPUT_NAMES],
        "max_seq_len": params.max_seq_len, "doc_stride": params.doc_stride,
        "max_query_length": params.max_query_length, "overlap_types": params.overlap_types,
        "word_marks": params.word_marks, "entity_marks": params.entity_marks,
        "pad_token_id": int(src.pad_token_id), "vocab_sha256": src.vocab_sha256,
        "tokenizer_files": [f for f in TOKENIZER_FILES if (folder / f).exists()],
        "paddlelite_version": src.paddlelite_version,
        "source": {"model": str(src.model_dir), "model_sha256": sha256_path(src.model_dir),
                   "inference_model": str(src.pdmodel), "pdmodel_sha256": sha256_path(src.pdmodel)},
    }


def write_bundle(src: ExportSource, target: str, precision: str, out: Path) -> Bundle:
    """Write the bundle folder ``OUT/TARGET-PRECISION/``: the ``.nb``, the tokenizer,
    ``bundle.json``, a README, and its op counts for the report.

    It is written as a hidden temp folder and renamed when complete. An fp16 request that ``opt``
    silently compiles as fp32 is skipped with the reason instead.
    """
    # A quantized graph converted "as is" is an int8 model: name its bundle so.
    label = "int8" if src.int8_graph and precision == "fp32" else precision
    name = f"{target}-{label}"
    folder = out / name
    if folder.exists():
        shutil.rmtree(folder)
    tmp = out / f".{name}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    log.info("Paddle Lite opt: %s", name)
    nb = lite_optimize(src.pdmodel, src.pdiparams, target, precision, tmp / "model")
    if precision == "fp16" and same_as_fp32(nb, src.pdmodel, src.pdiparams, target):
        # The pip build of opt has no ARM fp16 kernels: enable_fp16() is silently a
        # no-op there. Say so instead of shipping an fp32 file named fp16.
        reason = ("this paddlelite build's opt ignores enable_fp16() (no ARM fp16 "
                  "kernels compiled in): the output was as large as the fp32 file (weights still fp32). Use an "
                  "opt built with ARM fp16 support (LITE_WITH_ARM8_SVE2/ARM82_FP16)")
        log.warning("%s skipped: %s", name, reason)
        shutil.rmtree(tmp)
        return Bundle(name, skipped=reason)
    after = lite_op_counts(src.pdmodel, src.pdiparams, target, precision)
    copy_tokenizer(src.model_dir, tmp)
    bundle = _bundle_json(src, target, label, nb, tmp)
    write_json(tmp / BUNDLE, bundle)
    (tmp / "README.md").write_text(_bundle_readme(target, precision, bundle), encoding="utf-8")
    tmp.rename(folder)
    nb = folder / nb.name
    log.info("%s: %s (%.2f MiB), ops %d -> %d", name, nb, nb.stat().st_size / 2**20,
             sum(src.ops.values()), sum(after.values()))
    return Bundle(name, nb=nb, ops=after)


def run(config: ExportConfig) -> dict:
    """Export; writes inference/, TARGET-PRECISION/ bundles, metrics.json (op report), manifest."""
    started = time.time()
    model_dir = resolve_model_dir(config.model)
    tokenizer = load_tokenizer(str(model_dir))
    params = feature_params_for(str(model_dir), max_seq_len=config.max_seq_len)
    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pdmodel, pdiparams, sizes = _inference_model(config, model_dir, params, out)
    src = _export_source(model_dir, pdmodel, pdiparams, params, tokenizer.pad_token_id)
    if config.static_seq_len and not config.inference_model:
        src.seq_len = params.max_seq_len
    tables, lite_src = None, src
    if config.embeddings == "int8":
        pdm8, pdi8, tables = _int8_tables_model(config, model_dir, params, out)
        lite_src = _export_source(model_dir, pdm8, pdi8, params, tokenizer.pad_token_id)
        lite_src.seq_len, lite_src.embeddings = src.seq_len, "int8"

    bundles, ops_report, outputs, skipped = {}, {}, {"inference_model": pdmodel}, {}
    if tables:  # the Paddle Inference model with 8-bit tables
        outputs["inference_int8_tables"] = out / f"{INT8_TABLES_PREFIX}.pdmodel"
    for target in config.targets:
        for precision in config.precisions:
            if precision not in TARGETS[target].precisions:
                log.info("target %s does not take %s: skipped", target, precision)
                continue
            b = write_bundle(lite_src, target, precision, out)
            if b.skipped:
                skipped[b.name] = b.skipped
                continue
            bundles[b.name] = {"path": str(b.nb), "bytes": b.nb.stat().st_size,
                               "runs_on_this_machine": TARGETS[target].runs_here}
            ops_report[b.name] = {"ops": b.ops, **fusion_report(lite_src.ops, b.ops)}
            outputs[b.name] = b.nb
    if not bundles:
        raise PaddleQAError(f"no bundle written for targets {config.targets} and precisions "
                            f"{config.precisions}" + "".join(f"; {k}: {v}" for k, v in skipped.items()))

    onnx = None
    if config.onnx:
        if src.int8_graph:
            raise PaddleQAError("onnx: only fp32 graphs are converted (this inference model is "
                                "int8); export the fp32 model with onnx: true instead")
        onnx_file = export_onnx(pdmodel, pdiparams, out / ONNX_FILE, opset=config.onnx_opset)
        copy_tokenizer(model_dir, onnx_file.parent)
        onnx = {"path": str(onnx_file), "bytes": onnx_file.stat().st_size, "opset": config.onnx_opset}
        outputs["onnx"] = onnx_file
        if config.onnx_int8:
            q = quantize_onnx(onnx_file, out / ONNX_INT8_FILE)
            onnx["int8"] = {"path": str(q), "bytes": q.stat().st_size}
            outputs["onnx_int8"] = q

    metrics = {
        **sizes,
        "inference_model_bytes": pdmodel.stat().st_size + pdiparams.stat().st_size,
        "inference_ops": src.ops,
        "bundles": bundles,
        "op_report": ops_report,
        "skipped": skipped,
        "onnx": onnx,
        "embedding_tables": tables,
        "feature_params": dataclasses.asdict(params),
    }
    inputs = {"model": model_dir}
    if config.inference_model:
        inputs["inference_model"] = pdmodel
    write_manifest(out, "export", to_dict(config), inputs, outputs, metrics, started=started)
    return metrics


def describe_ops(metrics: dict) -> str:
    """A short text table of the op report (for the CLI)."""
    lines = []
    for name, rep in metrics["op_report"].items():
        delta = ", ".join(f"{k} {v:+d}" for k, v in rep["delta_by_type"].items())
        lines.append(f"{name}: {rep['ops_before']} -> {rep['ops_after']} ops"
                     f"{'; ' + delta if delta else ''}")
    return "\n".join(lines)


