"""Run any artifact paddleqa makes: a dygraph model folder, a Paddle inference model, a Lite ``.nb``.

:func:`open_artifact` looks at a path and returns a :class:`Runner` whose ``__call__`` maps one
padded batch (numpy) to start/end logits. Backends come from a small registry by name:

- ``dygraph``: a model folder (``config.json`` + weights), run by Paddle in dygraph mode;
- ``paddle-inference``: ``PREFIX.pdmodel`` + ``PREFIX.pdiparams`` (fp32 or int8), run through
  ``paddle.inference``;
- ``lite-x86``: a ``.nb`` optimised for x86, run through ``paddlelite.lite.MobileConfig``;
- ``lite-arm``: recognised but not runnable here (no ARM runtime on x86): opening one raises a
  message pointing to the x86 twin and the op report;
- ``onnxruntime``: ``model.onnx`` (``paddleqa export --onnx``), run through ONNX Runtime's CPU
  execution provider (a peer backend for comparison); ``model.int8.onnx`` (``--onnx-int8``,
  dynamic int8) the same way, its precision read from the graph's integer ops.

Every runner feeds the four explicit inputs of the export wrapper (``paddleqa.models.graph``).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Callable

import numpy as np

from ..core.errors import PaddleQAError
from ..core.manifest import sha256_path
from ..models import INPUT_NAMES
from ..models.build import load_model
from ..text.features import pad_batch
from .bundle import load_bundle, program_op_counts, stdout_to_stderr

log = logging.getLogger(__name__)

@dataclasses.dataclass
class Runner:
    """A loaded artifact. ``predict(batch) -> (start_logits, end_logits)`` on numpy arrays."""

    backend: str
    path: Path  # the file or folder that was opened
    tokenizer_dir: Path  # folder holding vocab.txt etc. (and paddleqa_training.json, if any)
    predict: Callable[[dict[str, np.ndarray]], tuple[np.ndarray, np.ndarray]]
    precision: str = "fp32"
    file_bytes: int = 0  # size of what a deployment ships (weights + graph)
    info: dict = dataclasses.field(default_factory=dict)
    model: object = None  # the dygraph model, for the dygraph backend


def explicit_inputs(batch: dict[str, np.ndarray], lengths: np.ndarray) -> dict[str, np.ndarray]:
    """The export wrapper's four inputs for a padded batch whose rows have ``lengths`` tokens."""
    ids = batch["input_ids"].astype(np.int64)
    n, w = ids.shape
    positions = np.broadcast_to(np.arange(w, dtype=np.int64), (n, w)).copy()
    mask = (np.arange(w)[None, :] < np.asarray(lengths)[:, None]).astype(np.float32)
    return {"input_ids": ids, "token_type_ids": batch["token_type_ids"].astype(np.int64),
            "position_ids": positions, "attention_mask": mask}


def _check_finite(start: np.ndarray, end: np.ndarray, runner_name: str) -> None:
    if not (np.isfinite(start).all() and np.isfinite(end).all()):
        hint = ""
        if runner_name.startswith("lite"):
            hint = (" Paddle Lite's x86 kernels are known to return NaN for int8 models (PTQ and "
                    "opt's weight-only int8): score the int8 Paddle inference model "
                    "(`paddleqa evaluate DIR/inference ...`) and ship the int8 .nb for ARM only.")
        raise PaddleQAError(f"{runner_name} produced NaN/inf logits, so no score is reported.{hint}")


# ---------------------------------------------------------------- dygraph
def _open_dygraph(path: Path) -> Runner:
    runner = model_runner(load_model(str(path)))
    runner.path = runner.tokenizer_dir = path
    if path.is_dir():
        runner.file_bytes = sum(f.stat().st_size for f in path.iterdir()
                                if f.is_file() and f.suffix in (".pdparams", ".safetensors"))
    return runner


def model_runner(model) -> Runner:
    """A runner over an in-memory dygraph model (used while training, too)."""
    import paddle

    model.eval()

    def predict(inputs):
        with paddle.no_grad():
            out = model(**{k: paddle.to_tensor(v) for k, v in inputs.items()})
        s, e = (out[0], out[1]) if isinstance(out, (tuple, list)) else (out.start_logits, out.end_logits)
        return s.numpy(), e.numpy()

    return Runner("dygraph", Path("."), Path("."), predict, model=model)


# ---------------------------------------------------------------- paddle inference
def is_quantized_program(pdmodel: Path) -> bool:
    ops = program_op_counts(pdmodel)
    return any("quantize" in op for op in ops)


def _open_inference(prefix: Path, *, threads: int = 0, int8_ops: tuple[str, ...] = ("fc",)) -> Runner:
    import os

    from paddle import inference

    pdmodel, pdiparams = prefix.with_suffix(".pdmodel"), prefix.with_suffix(".pdiparams")
    for f in (pdmodel, pdiparams):
        if not f.is_file():
            raise PaddleQAError(f"inference model file {f} is missing; an inference model is "
                                "PREFIX.pdmodel + PREFIX.pdiparams (from `paddleqa export` or "
                                "`paddleqa quantize`)")
    quantized = is_quantized_program(pdmodel)
    config = inference.Config(str(pdmodel), str(pdiparams))
    config.disable_gpu()
    config.disable_glog_info()
    config.switch_ir_optim(True)
    config.set_cpu_math_library_num_threads(threads or int(os.environ.get("OMP_NUM_THREADS", "1")))
    if quantized:
        # MKLDNN int8 for the listed ops only: full int8 puts attention matmuls on a reference
        # kernel that is ~10x slower than fp32 on this CPU class (see the stack notes).
        config.enable_mkldnn()
        # "all": an empty set lets MKLDNN quantize every op it supports.
        config.enable_mkldnn_int8(set() if "all" in int8_ops else set(int8_ops))

    try:
        with stdout_to_stderr():  # MKLDNN passes print their summaries to stdout
            predictor = inference.create_predictor(config)
    except Exception as exc:
        raise PaddleQAError(f"Paddle Inference cannot load {pdmodel}: {type(exc).__name__}: "
                            f"{str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}") from None
    names = predictor.get_input_names()
    missing = [n for n in INPUT_NAMES if n not in names]
    if missing:
        raise PaddleQAError(f"{pdmodel} lacks inputs {missing} (has {names}); export it with "
                            "`paddleqa export`, whose wrapper takes all four explicitly")
    outputs = predictor.get_output_names()

    def predict(inputs):
        for name in names:
            h = predictor.get_input_handle(name)
            h.reshape(list(inputs[name].shape))
            h.copy_from_cpu(np.ascontiguousarray(inputs[name]))
        predictor.run()
        return (predictor.get_output_handle(outputs[0]).copy_to_cpu(),
                predictor.get_output_handle(outputs[1]).copy_to_cpu())

    return Runner("paddle-inference", prefix, _tokenizer_dir(prefix.parent), predict,
                  precision="int8" if quantized else "fp32",
                  file_bytes=pdmodel.stat().st_size + pdiparams.stat().st_size,
                  info={"quantized": quantized})


# ---------------------------------------------------------------- paddle lite
def _open_lite(nb: Path) -> Runner:
    bundle = load_bundle(nb)
    target = bundle.get("target", "x86")
    precision = bundle.get("precision", "fp32")
    if target != "x86":
        twin = nb.parent.parent / f"x86-{precision}" / "model.nb"
        twin_fp32 = nb.parent.parent / "x86-fp32" / "model.nb"
        alt = twin if twin.exists() else twin_fp32 if twin_fp32.exists() else None
        raise PaddleQAError(
            f"{nb} is a Paddle Lite model for {target}, which cannot run on this x86 machine. "
            + (f"Score its x86 twin {alt} (same graph, same weights) " if alt else
               "Export an x86 twin (`paddleqa export ... --targets arm,x86`) to score the same graph ")
            + f"and read the op report in {nb.parent.parent / 'metrics.json'}; run the .nb on the "
            "device with Paddle Lite's MobileConfig (see the bundle's README.md).")
    _verify_nb(nb, bundle)
    from paddlelite.lite import MobileConfig, create_paddle_predictor

    config = MobileConfig()
    config.set_model_from_file(str(nb))
    try:
        predictor = create_paddle_predictor(config)
    except Exception as exc:  # Lite reports a corrupt file as RuntimeError/abort text
        raise PaddleQAError(f"Paddle Lite cannot load {nb} ({type(exc).__name__}: {exc}); the file "
                            "is damaged or from another Lite version: re-run `paddleqa export`") from None
    order = [i["name"] for i in bundle.get("inputs", [])] or list(INPUT_NAMES)

    def predict(inputs):
        for i, name in enumerate(order):
            predictor.get_input(i).from_numpy(np.ascontiguousarray(inputs[name]))
        predictor.run()
        return predictor.get_output(0).numpy().copy(), predictor.get_output(1).numpy().copy()

    return Runner("lite-x86", nb, _tokenizer_dir(nb.parent), predict, precision=precision,
                  file_bytes=nb.stat().st_size, info={"bundle": bundle})


# ---------------------------------------------------------------- onnx runtime
def _open_onnx(path: Path, *, threads: int = 0) -> Runner:
    import os

    try:
        import onnxruntime as ort
    except ImportError:
        raise PaddleQAError(f"{path} is an ONNX model and needs ONNX Runtime: pip install -c "
                            "constraints.txt onnxruntime") from None
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or int(os.environ.get("OMP_NUM_THREADS", "1"))
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3  # errors only
    try:
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 -- ORT raises its own exception types for bad files
        raise PaddleQAError(f"ONNX Runtime cannot load {path} ({type(exc).__name__}: "
                            f"{str(exc).strip()[:300]}); the file is damaged or not a QA export: "
                            "re-run `paddleqa export --onnx`") from None
    names = [i.name for i in session.get_inputs()]
    missing = [n for n in INPUT_NAMES if n not in names]
    if missing:
        raise PaddleQAError(f"{path} lacks inputs {missing} (has {names}); export it with "
                            "`paddleqa export --onnx`, whose wrapper takes all four explicitly")

    def predict(inputs):
        start, end = session.run(None, {n: np.ascontiguousarray(inputs[n]) for n in names})[:2]
        return start, end

    quantized = is_quantized_onnx(path)
    return Runner("onnxruntime", path, _tokenizer_dir(path.parent), predict,
                  precision="int8" if quantized else "fp32", file_bytes=path.stat().st_size,
                  info={"threads": opts.intra_op_num_threads, "quantized": quantized})


def is_quantized_onnx(path: Path) -> bool:
    """True for an ONNX graph with integer ops (``export --onnx-int8``: MatMulInteger,
    DynamicQuantizeLinear; static QDQ/QLinear graphs count too)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return any(n.op_type in ("MatMulInteger", "DynamicQuantizeLinear", "QuantizeLinear")
               or n.op_type.startswith("QLinear") for n in graph.node)


_NB_PROBE = """
import sys, zlib  # zlib before paddle's bundled one (see paddleqa/__init__.py)
import numpy as np
from paddlelite.lite import MobileConfig, create_paddle_predictor
nb, seq, names = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
c = MobileConfig(); c.set_model_from_file(nb); p = create_paddle_predictor(c)
for i, name in enumerate(names):
    x = np.ones((1, seq), "float32") if name == "attention_mask" else np.zeros((1, seq), "int64")
    if name == "position_ids":
        x = np.arange(seq, dtype="int64")[None]
    p.get_input(i).from_numpy(x)
p.run()
"""


def _verify_nb(nb: Path, bundle: dict) -> None:
    """Refuse a ``.nb`` that would take the process down before Paddle Lite opens it here.

    Lite aborts the whole process on a short read (a failed CHECK, not an exception) and can
    crash on a file from another Lite version, so: a file that differs from its bundle.json's
    size or sha256 is refused at once, and every ``.nb`` -- with or without a bundle.json, whose
    hashes a re-hashed or foreign file can match -- is loaded and run once on a dummy window in a
    child process first. A crash there is a clear error instead of the caller's death.
    """
    size = nb.stat().st_size
    if bundle.get("model_bytes") is not None:
        if size != bundle["model_bytes"] or sha256_path(nb) != bundle.get("model_sha256"):
            raise PaddleQAError(
                f"{nb} does not match its bundle.json ({size:,} bytes, expected "
                f"{bundle['model_bytes']:,}, or a different sha256): the file is truncated or "
                "altered; re-run `paddleqa export`")
    names = [i["name"] for i in bundle.get("inputs", [])] or list(INPUT_NAMES)
    fixed = [i["shape"][1] for i in bundle.get("inputs", []) if len(i.get("shape", [])) == 2]
    seq = max(fixed) if fixed and max(fixed) > 0 else 8  # a static graph takes its own length
    res = subprocess.run([sys.executable, "-c", _NB_PROBE, str(nb), str(seq), *names],
                         capture_output=True, text=True, timeout=300)
    if res.returncode != 0:
        how = f"crashed with signal {-res.returncode}" if res.returncode < 0 else f"failed (exit {res.returncode})"
        last = (res.stderr.strip().splitlines() or ["(no message)"])[-1]
        raise PaddleQAError(f"Paddle Lite {how} loading or running {nb} ({size:,} bytes) in a child "
                            f"process: {last[:300]}. The file is damaged or from another Lite "
                            "version; re-run `paddleqa export`")


def _tokenizer_dir(folder: Path) -> Path:
    """The folder with vocab.txt: the artifact's own, else the export's source model."""
    for d in (folder, folder.parent):
        if (d / "vocab.txt").exists():
            return d
    manifest = folder.parent / "manifest.json"
    if manifest.exists():
        try:
            src = json.loads(manifest.read_text(encoding="utf-8"))["inputs"]["model"]["path"]
            if (Path(src) / "vocab.txt").exists():
                return Path(src)
        except (ValueError, KeyError, TypeError):
            pass
    raise PaddleQAError(f"no tokenizer (vocab.txt) next to {folder}; pass --tokenizer DIR")


# ---------------------------------------------------------------- dispatch
def tokenizer_dir_of(path: str | Path) -> Path:
    """The tokenizer folder an artifact is read with (what its runner's ``tokenizer_dir`` is),
    found without opening the model: a model folder's own, else the export file's folder or
    the model it was exported from."""
    kind, p = artifact_kind(path)
    return p if kind == "dygraph" else _tokenizer_dir(p.parent)


def artifact_kind(path: str | Path) -> tuple[str, Path]:
    """(backend, resolved path) for a model folder, an inference model or a ``.nb``."""
    p = Path(path)
    if p.suffix == ".nb":
        if not p.is_file():
            raise PaddleQAError(f"Paddle Lite model {p} not found")

        target = load_bundle(p).get("target", "x86")
        return f"lite-{target}", p
    if p.suffix == ".onnx":
        if not p.is_file():
            raise PaddleQAError(f"ONNX model {p} not found")
        return "onnxruntime", p
    if p.suffix in (".pdmodel", ".pdiparams"):
        return "paddle-inference", p.with_suffix("")
    if p.with_suffix(".pdmodel").is_file() and not p.is_dir():
        return "paddle-inference", p
    if not p.exists() and p.parent == Path(".") and not str(path).startswith("."):
        return "dygraph", p  # a bare name: a model hub name (load_model explains offline failures)
    if not p.exists():
        raise PaddleQAError(f"artifact {p} does not exist: pass a model folder, an inference "
                            "model (PREFIX.pdmodel or its folder) or a Paddle Lite .nb")
    if p.is_dir():
        if (p / "config.json").exists():
            return "dygraph", p
        if (p / "model" / "config.json").exists():
            return "dygraph", p / "model"  # a training stage's output folder
        if (p / "model.nb").is_file():
            return artifact_kind(p / "model.nb")
        if (p / "model.pdmodel").is_file():
            return "paddle-inference", p / "model"
        if (p / "model.onnx").is_file():
            return "onnxruntime", p / "model.onnx"
        if (p / "inference" / "model.pdmodel").is_file():
            return "paddle-inference", p / "inference" / "model"
        raise PaddleQAError(f"{p} holds no model: expected config.json (model folder), "
                            "model.pdmodel (inference model), model.nb (Paddle Lite) or "
                            "model.onnx (ONNX)")
    raise PaddleQAError(f"{p} is not a model: expected a model folder, a .pdmodel, a .nb or an "
                        ".onnx file")


def open_artifact(path: str | Path, *, threads: int = 0, int8_ops: tuple[str, ...] = ("fc",)) -> Runner:
    kind, p = artifact_kind(path)
    log.info("artifact %s: backend %s", p, kind)
    if kind == "dygraph":
        return _open_dygraph(p)
    if kind == "paddle-inference":
        return _open_inference(p, threads=threads, int8_ops=tuple(int8_ops))
    if kind == "onnxruntime":
        return _open_onnx(p, threads=threads)
    return _open_lite(p)


def predict_logits(runner: Runner, feats: dict[str, np.ndarray], *, batch_size: int = 32,
                   progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Start/end logits ``[windows, max_seq_len]`` from any runner (padding gets -1e4)."""
    from tqdm.auto import tqdm


    n, L = feats["input_ids"].shape
    start = np.full((n, L), -1e4, dtype=np.float32)
    end = np.full((n, L), -1e4, dtype=np.float32)
    # Windows sorted by length so each batch pads little; results go back to their rows.
    order = np.argsort(feats["length"], kind="stable")
    for b in tqdm(range(0, n, batch_size), desc=f"predict ({runner.backend})", unit="batch",
                  disable=not progress, leave=False):
        idx = order[b: b + batch_size]
        inputs = explicit_inputs(pad_batch(feats, idx), feats["length"][idx])
        s, e = runner.predict(inputs)
        w = inputs["input_ids"].shape[1]
        start[idx, :w] = s
        end[idx, :w] = e
    _check_finite(start, end, runner.backend)
    return start, end
