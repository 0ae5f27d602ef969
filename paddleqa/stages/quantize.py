"""Quantization: post-training int8 (PTQ), quantization-aware training (QAT), k-means codebooks.

Methods by name (:data:`METHODS`):

- ``ptq``: Paddle's ``PostTrainingQuantization`` over the exported fp32 inference model,
  calibrated on training windows (``algo`` = abs_max, KL, hist, mse, avg, ...); writes an int8
  Paddle inference model. At run time Paddle Inference executes only the ops in ``int8_ops``
  (default ``fc``) in int8 with MKLDNN: full int8 puts attention matmuls on a reference kernel
  that is ~10x slower than fp32 on this CPU class (see the stack notes) -- measure, don't assume.
- ``qat``: PaddleSlim's dygraph ``QAT`` (fake-quantized ``Linear`` layers) fine-tuned for a few
  steps with the fp32 model as distillation teacher, saved as an int8 inference model.
- ``kmeans``: the seed's weight sharing: each weight matrix clustered to 2^bits centroids; codes +
  codebooks are stored (``codebook.npz``) and a dequantized model folder is written for scoring.

Every method scores its output on ``dev_file`` (when given) next to the fp32 source model and
records the F1 difference.
"""
from __future__ import annotations

import dataclasses
import logging
import shutil
import time
from pathlib import Path

import numpy as np

from ..core.config import opt, to_dict
from ..core.errors import PaddleQAError
from ..core.manifest import MANIFEST, write_manifest
from ..core.settings import FeatureSettings, Int8Settings
from ..models import INPUT_NAMES
from ..models.build import load_model
from ..runtime.artifacts import explicit_inputs
from ..runtime.bundle import INFERENCE_PREFIX, copy_tokenizer, resolve_model_dir, stdout_to_stderr
from ..runtime.evaluate import EvaluateConfig, run as evaluate
from ..text.dataset import load_examples
from ..text.features import TRAINING_INFO, cached_features, feature_params_for
from ..text.tokenizer import load_tokenizer

log = logging.getLogger(__name__)

METHODS = ("ptq", "qat", "kmeans")
PTQ_ALGOS = ("abs_max", "avg", "KL", "hist", "mse", "emd")


@dataclasses.dataclass
class QuantizeConfig(Int8Settings, FeatureSettings):
    """Quantize a QA model (PTQ/QAT -> int8 inference model; kmeans -> codebook weights)."""

    model: str = opt("", help="fp32 model folder (or a training stage's output folder)")
    out_dir: str = opt("", help="output folder: inference/ (ptq, qat) or model/ + codebook.npz "
                       "(kmeans), metrics.json, manifest.json")
    method: str = opt("ptq", help=f"one of: {', '.join(METHODS)}")
    calib_file: str = opt("", help="SQuAD/CMRC JSON whose windows calibrate (ptq) or fine-tune "
                          "(qat); '' = the model's own training file, from its training record")
    dev_file: str = opt("", help="score the quantized and the fp32 model on this file ('' = skip)")
    score_all_ops: bool = opt(False, help="ptq/qat with dev_file: also score with every op that has "
                              "scales in int8 (int8_ops=all), as a runtime that quantizes all of "
                              "them would run it (quantized_all_f1; oneDNN's int8 attention matmuls "
                              "cost the headline student ~3 F1). Off by default: oneDNN runs "
                              "full int8 ~10x slower than fp32, a long extra pass for large models")
    calib_windows: int = opt(256, help="calibration windows (ptq)")
    algo: str = opt("abs_max", help=f"PTQ activation-range algorithm: {', '.join(PTQ_ALGOS)}")
    weight_bits: int = opt(8, help="bits per weight (ptq/qat: 8; kmeans: 1-8, codebook of 2^bits)")
    qat_steps: int = opt(100, help="QAT fine-tuning steps")
    qat_learning_rate: float = opt(2e-5, help="QAT fine-tuning learning rate")
    qat_batch_size: int = opt(8, help="QAT windows per step")
    qat_temperature: float = opt(2.0, help="KD temperature against the fp32 model (QAT)")
    qat_alpha: float = opt(0.5, help="weight of the gold-span loss; 1 - alpha goes to KD (QAT)")
    kmeans_embeddings: bool = opt(False, help="also cluster the embedding tables (kmeans)")
    kmeans_iters: int = opt(25, help="Lloyd iterations per matrix (kmeans)")
    batch_size: int = opt(32, help="windows per forward pass when scoring")
    seed: int = opt(0, help="seed for sampling calibration windows and k-means init")
    # int8_ops (used when scoring), cache_dir, progress: inherited (core/settings.py)

    def __post_init__(self) -> None:
        for name in ("model", "out_dir"):
            if not getattr(self, name):
                raise ValueError(f"{name} is required")
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; valid: {', '.join(METHODS)}")
        if self.algo not in PTQ_ALGOS:
            raise ValueError(f"unknown algo {self.algo!r}; valid: {', '.join(PTQ_ALGOS)}")
        if self.method == "kmeans":
            if not 1 <= self.weight_bits <= 8:
                raise ValueError(f"weight_bits must be 1-8 for kmeans, got {self.weight_bits}")
        elif self.weight_bits != 8:
            raise ValueError(f"{self.method} makes int8 models: weight_bits must be 8, got {self.weight_bits}")
        for name in ("calib_windows", "qat_steps", "qat_batch_size", "kmeans_iters", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.qat_alpha <= 1.0:
            raise ValueError(f"qat_alpha must be in [0, 1], got {self.qat_alpha}")
        if self.qat_temperature <= 0:
            raise ValueError(f"qat_temperature must be > 0, got {self.qat_temperature}")


# ---------------------------------------------------------------- calibration data
def _training_file(model_dir: Path, given: str) -> str:
    import json


    if given:
        return given
    info = model_dir / TRAINING_INFO
    if info.exists():
        f = json.loads(info.read_text(encoding="utf-8")).get("train_file")
        if f and Path(f).exists():
            return f
    raise PaddleQAError(f"no calibration data: {model_dir} records no training file that exists "
                        "here; pass calib_file (--calib FILE)")


def calibration_windows(model_dir: Path, tokenizer, params, config: QuantizeConfig) -> dict[str, np.ndarray]:
    """``calib_windows`` training windows (seeded sample), as the export wrapper's inputs padded
    to ``max_seq_len``."""

    path = _training_file(model_dir, config.calib_file)
    examples, _ = load_examples(path, mode="train")
    if not examples:
        raise PaddleQAError(f"{path}: no usable questions for calibration (run `paddleqa data check`)")
    feats = cached_features(examples, tokenizer, params, train=True,
                            cache_dir=config.cache_dir or None, progress=config.progress)
    n = len(feats["input_ids"])
    rng = np.random.default_rng(config.seed)
    idx = np.sort(rng.choice(n, size=min(n, config.calib_windows), replace=False))
    batch = {"input_ids": feats["input_ids"][idx], "token_type_ids": feats["token_type_ids"][idx]}
    out = explicit_inputs(batch, feats["length"][idx])
    for key in ("start_positions", "end_positions"):
        if key in feats:
            out[key] = feats[key][idx].astype(np.int64)
    log.info("calibration: %d windows from %s", len(idx), path)
    return out


class _Windows:
    """A map-style dataset of dicts (what Paddle 2.6's PTQ accepts through a DataLoader)."""

    def __init__(self, arrays: dict[str, np.ndarray], keys):
        self.arrays, self.keys = arrays, tuple(keys)

    def __len__(self):
        return len(self.arrays["input_ids"])

    def __getitem__(self, i):
        return {k: self.arrays[k][i] for k in self.keys}


# ---------------------------------------------------------------- methods
def _ptq(config: QuantizeConfig, model_dir: Path, out: Path, calib: dict) -> dict:
    import paddle
    from paddle.static.quantization import PostTrainingQuantization

    from ..models.graph import export_inference

    fp32 = out / "fp32"
    files = export_inference(load_model(str(model_dir)), fp32 / "model")
    loader = paddle.io.DataLoader(_Windows(calib, INPUT_NAMES), batch_size=8, shuffle=False,
                                  return_list=True)
    paddle.enable_static()
    try:
        exe = paddle.static.Executor(paddle.CPUPlace())
        ptq = PostTrainingQuantization(
            executor=exe, model_dir=str(fp32), model_filename=files["pdmodel"].name,
            params_filename=files["pdiparams"].name, data_loader=loader,
            batch_nums=int(np.ceil(len(calib["input_ids"]) / 8)), algo=config.algo,
            quantizable_op_type=["matmul_v2", "matmul", "mul"], weight_bits=8, activation_bits=8,
            weight_quantize_type="channel_wise_abs_max", onnx_format=True)
        with stdout_to_stderr():
            ptq.quantize()
            target = out / INFERENCE_PREFIX
            ptq.save_quantized_model(str(target.parent), model_filename=target.name + ".pdmodel",
                                     params_filename=target.name + ".pdiparams")
    finally:
        paddle.disable_static()
    shutil.rmtree(fp32)
    return {"algo": config.algo, "calib_windows": int(len(calib["input_ids"]))}


def _qat(config: QuantizeConfig, model_dir: Path, out: Path, calib: dict) -> dict:
    import paddle
    from paddleslim import QAT

    from ..models.graph import QAExportWrapper, input_spec, strip_dropout
    from ..models.losses import span_ce, span_kd

    if "start_positions" not in calib:
        raise PaddleQAError("QAT needs labelled training windows (answers in the calibration file)")
    paddle.seed(config.seed)
    teacher = load_model(str(model_dir))
    teacher.eval()
    student = load_model(str(model_dir))
    strip_dropout(student)
    quanter = QAT(config={"weight_quantize_type": "channel_wise_abs_max",
                          "activation_quantize_type": "moving_average_abs_max",
                          "quantizable_layer_type": ["Linear"], "onnx_format": True})
    quanter.quantize(student)
    optimizer = paddle.optimizer.AdamW(learning_rate=config.qat_learning_rate,
                                       parameters=student.parameters())
    n = len(calib["input_ids"])
    rng = np.random.default_rng(config.seed)
    losses = []
    student.train()
    from tqdm.auto import tqdm

    for step in tqdm(range(config.qat_steps), desc="qat", disable=not config.progress, leave=False):
        idx = rng.choice(n, size=min(n, config.qat_batch_size), replace=False)
        feed = {k: paddle.to_tensor(calib[k][idx]) for k in
                ("input_ids", "token_type_ids", "position_ids", "attention_mask")}
        with paddle.no_grad():
            t_start, t_end = teacher(**feed)[:2]
        s_start, s_end = student(**feed)[:2]
        starts = paddle.to_tensor(calib["start_positions"][idx])
        ends = paddle.to_tensor(calib["end_positions"][idx])
        mask = feed["attention_mask"]
        ce = span_ce(s_start, s_end, starts, ends, mask)
        kd = span_kd((s_start, s_end), (t_start, t_end), mask, temperature=config.qat_temperature)
        loss = config.qat_alpha * ce + (1 - config.qat_alpha) * kd
        loss.backward()
        optimizer.step()
        optimizer.clear_grad()
        losses.append(float(loss))
    student.eval()
    target = out / INFERENCE_PREFIX
    target.parent.mkdir(parents=True, exist_ok=True)
    with stdout_to_stderr():
        quanter.save_quantized_model(QAExportWrapper(student), str(target), input_spec=input_spec())
    k = max(1, len(losses) // 5)
    return {"qat_steps": config.qat_steps, "qat_loss_first": float(np.mean(losses[:k])),
            "qat_loss_last": float(np.mean(losses[-k:]))}


def kmeans_1d(values: np.ndarray, k: int, iters: int = 25, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Codebook (``k`` centroids, sorted) and codes for a 1-D array by Lloyd's algorithm.

    Written here because neither Paddle nor PaddleSlim offers weight-sharing k-means; the 1-D
    case is exact with sorted centroids (assignment by midpoints), so it needs no library.
    Centroids start at evenly spaced quantiles (deterministic; ``seed`` breaks no ties).
    """
    del seed
    v = values.astype(np.float64).ravel()
    k = max(1, min(k, np.unique(v).size))
    centroids = np.quantile(v, (np.arange(k) + 0.5) / k)
    for _ in range(iters):
        centroids = np.unique(centroids)
        edges = (centroids[1:] + centroids[:-1]) / 2
        codes = np.searchsorted(edges, v)
        sums = np.bincount(codes, weights=v, minlength=len(centroids))
        counts = np.bincount(codes, minlength=len(centroids))
        new = np.where(counts > 0, sums / np.maximum(counts, 1), centroids)
        if np.allclose(new, centroids):
            centroids = new
            break
        centroids = new
    centroids = np.unique(centroids)
    edges = (centroids[1:] + centroids[:-1]) / 2
    codes = np.searchsorted(edges, v)
    return centroids.astype(np.float32), codes.astype(np.uint8).reshape(values.shape)


def _kmeans(config: QuantizeConfig, model_dir: Path, out: Path, calib: dict | None) -> dict:
    import paddle
    from tqdm.auto import tqdm


    model = load_model(str(model_dir))
    state = model.state_dict()
    codebooks, stored, dense, clustered = {}, 0, 0, 0
    k = 2 ** config.weight_bits
    for name, tensor in tqdm(list(state.items()), desc="kmeans", disable=not config.progress, leave=False):
        w = tensor.numpy()
        dense += w.size * 4
        is_matrix = w.ndim == 2 and min(w.shape) > 1
        if not is_matrix or ("embeddings" in name and not config.kmeans_embeddings):
            stored += w.size * 4  # biases, norms, (embeddings): kept fp32
            continue
        centroids, codes = kmeans_1d(w, k, config.kmeans_iters, config.seed)
        codebooks[name + ".codebook"] = centroids
        codebooks[name + ".codes"] = codes
        # Stored size: codes packed at weight_bits bits each, plus the fp32 codebook.
        stored += int(np.ceil(w.size * config.weight_bits / 8)) + centroids.size * 4
        clustered += 1
        state[name] = paddle.to_tensor(centroids[codes.astype(np.int64)])
    model.set_state_dict(state)
    np.savez_compressed(out / "codebook.npz", **codebooks)
    model.save_pretrained(str(out / "model"))

    copy_tokenizer(model_dir, out / "model")
    return {"clusters_per_matrix": k, "matrices_clustered": clustered,
            "stored_bytes": stored, "fp32_bytes": dense, "compression": round(dense / stored, 2),
            "codebook_npz_bytes": (out / "codebook.npz").stat().st_size}


METHOD_FUNCS = {"ptq": _ptq, "qat": _qat, "kmeans": _kmeans}


def run(config: QuantizeConfig) -> dict:
    """Quantize; score on ``dev_file`` next to the fp32 model; metrics.json + manifest."""

    started = time.time()
    model_dir = resolve_model_dir(config.model)
    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # The outputs are about to be rewritten: an earlier run's manifest no longer describes them
    # (and would make loading the new k-means model fail its recorded-sha256 check).
    (out / MANIFEST).unlink(missing_ok=True)
    calib = None
    if config.method in ("ptq", "qat"):
        tokenizer = load_tokenizer(str(model_dir))
        calib = calibration_windows(model_dir, tokenizer, feature_params_for(str(model_dir)), config)
    log.info("quantize: %s on %s", config.method, model_dir)
    metrics = {"method": config.method, **METHOD_FUNCS[config.method](config, model_dir, out, calib)}
    if config.method == "kmeans":
        artifact = out / "model"
    else:
        artifact = out / INFERENCE_PREFIX
        copy_tokenizer(model_dir, artifact.parent)
        metrics["file_bytes"] = sum(artifact.with_suffix(s).stat().st_size for s in (".pdmodel", ".pdiparams"))
    if config.dev_file:
        scored = [("fp32", model_dir, config.int8_ops), ("quantized", artifact, config.int8_ops)]
        if config.score_all_ops and config.method != "kmeans" and "all" not in config.int8_ops:
            scored.append(("quantized_all", artifact, ["all"]))
        for name, path, int8_ops in scored:
            m = evaluate(EvaluateConfig(model=str(path), data_file=config.dev_file,
                                        out_dir=str(out / f"eval_{name}"), batch_size=config.batch_size,
                                        int8_ops=int8_ops, cache_dir=config.cache_dir, progress=config.progress))
            metrics[f"{name}_em"], metrics[f"{name}_f1"] = m["em"], m["f1"]
            metrics[f"{name}_backend"] = m["backend"]
        metrics["f1_delta"] = round(metrics["quantized_f1"] - metrics["fp32_f1"], 3)
        metrics["int8_ops"] = list(config.int8_ops)
        if "quantized_all_f1" in metrics:
            metrics["f1_delta_all_ops"] = round(metrics["quantized_all_f1"] - metrics["fp32_f1"], 3)
            log.info("dev F1 with every scaled op in int8: %.2f (%+.2f)", metrics["quantized_all_f1"],
                     metrics["f1_delta_all_ops"])
        log.info("dev F1: fp32 %.2f -> %s %.2f (%+.2f)", metrics["fp32_f1"], config.method,
                 metrics["quantized_f1"], metrics["f1_delta"])
    write_manifest(out, "quantize", to_dict(config),
                   {"model": model_dir, "dev_file": config.dev_file or None,
                    "calib_file": config.calib_file or None},
                   {"artifact": artifact.with_suffix(".pdmodel") if config.method != "kmeans" else artifact},
                   metrics, started=started)
    return metrics
