"""The steps of ``benchmarks/scale.py``, each run in its own child process.

A child runs one step (``python benchmarks/scale_steps.py SPEC_JSON``), takes the CPU lock the
etiquette asks for (shared for training and export, exclusive while timing), and writes its
result JSON -- with the process's own peak RSS -- atomically to the path in the spec. The parent
skips a step whose result file exists, so a killed run continues where it stopped.
"""
from __future__ import annotations

import fcntl
import json
import os
import resource
import sys
import time
import zlib  # noqa: F401 -- before paddle's bundled zlib (see paddleqa/__init__.py)
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

LOCK = "/tmp/paddleqa-cpu.lock"
VOCAB_SIZE = 40000  # ERNIE 3.0's vocabulary size (ernie-3.0-*-zh vocab.txt has 40,000 lines)
MAX_POSITION = 2048  # ERNIE 3.0's max_position_embeddings
TYPE_VOCAB = 4  # ERNIE 3.0's type_vocab_size


def peak_rss_mib() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # opt / probe children
    return round(max(own, kids) / 1024, 1)  # ru_maxrss is in KiB on Linux


def step_data(spec: dict) -> dict:
    """The first ``questions`` questions of the CMRC 2018 training file, and a 40k vocabulary
    (the characters of that file, then ``[unusedN]`` up to ERNIE 3.0's size)."""
    from paddlenlp.transformers import ErnieTokenizer

    from paddleqa.text.tokenizer import build_vocab

    src = json.loads(Path(spec["source"]).read_text(encoding="utf-8"))
    kept, n = [], 0
    for article in src["data"]:
        paras = []
        for para in article["paragraphs"]:
            qas = para["qas"][: max(0, spec["questions"] - n)]
            n += len(qas)
            if qas:
                paras.append({**para, "qas": qas})
        if paras:
            kept.append({**article, "paragraphs": paras})
        if n >= spec["questions"]:
            break
    train = Path(spec["train_file"])
    train.parent.mkdir(parents=True, exist_ok=True)
    train.write_text(json.dumps({"version": src.get("version", ""), "data": kept}, ensure_ascii=False),
                     encoding="utf-8")
    texts = [p["context"] for a in kept for p in a["paragraphs"]]
    texts += [q["question"] for a in kept for p in a["paragraphs"] for q in p["qas"]]
    vocab = build_vocab(texts)
    vocab += [f"[unused{i}]" for i in range(VOCAB_SIZE - len(vocab))]
    folder = Path(spec["vocab_dir"])
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(vocab[:VOCAB_SIZE]) + "\n", encoding="utf-8")
    ErnieTokenizer(vocab_file=str(folder / "vocab.txt")).save_pretrained(str(folder))
    return {"questions": n, "vocab_size": min(len(vocab), VOCAB_SIZE)}


def step_pretrained(spec: dict) -> dict:
    """A "pretrained" folder with ERNIE 3.0's published shape, random weights, saved the way a
    hub download leaves it (save_pretrained of model and tokenizer)."""
    import paddle
    from paddlenlp.transformers import ErnieConfig, ErnieForMaskedLM

    from paddleqa.models.build import count_params
    from paddleqa.text.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(spec["vocab_dir"])
    layers, hidden, heads, ffn = spec["shape"]
    paddle.seed(0)
    model = ErnieForMaskedLM(ErnieConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=layers,
        num_attention_heads=heads, intermediate_size=ffn, hidden_act="gelu",
        max_position_embeddings=MAX_POSITION, type_vocab_size=TYPE_VOCAB,
        pad_token_id=tokenizer.pad_token_id or 0))
    model.save_pretrained(spec["out"])
    tokenizer.save_pretrained(spec["out"])
    return {"encoder_params": count_params(model.ernie)["params"]}


def step_train(spec: dict) -> dict:
    """finetune / distill / prune through the stage's own config and run function."""
    from paddleqa.core.config import from_dict

    kind = spec["stage"]
    if kind == "finetune":
        from paddleqa.stages.finetune import FinetuneConfig as Config, run
    elif kind == "distill":
        from paddleqa.stages.distill import DistillConfig as Config, run
    else:
        from paddleqa.stages.prune import PruneConfig as Config, run
    started = time.time()
    metrics = run(from_dict(Config, spec["config"], where=kind))
    keep = ("params", "train_seconds", "pruned_params", "layer_heads", "layer_ffn", "train_runtime")
    return {"wall_s": round(time.time() - started, 1),
            **{k: metrics[k] for k in keep if k in metrics}}


def step_quantize(spec: dict) -> dict:
    from paddleqa.core.config import from_dict
    from paddleqa.stages.quantize import QuantizeConfig, run

    started = time.time()
    m = run(from_dict(QuantizeConfig, spec["config"], where="quantize"))
    return {"wall_s": round(time.time() - started, 1), "file_bytes": m.get("file_bytes")}


def step_export(spec: dict) -> dict:
    from paddleqa.core.config import from_dict
    from paddleqa.stages.export import ExportConfig, run

    started = time.time()
    m = run(from_dict(ExportConfig, spec["config"], where="export"))
    return {"wall_s": round(time.time() - started, 1), "bundles": m["bundles"],
            "op_report": m["op_report"], "onnx": m["onnx"], "skipped": m["skipped"]}


def step_reference(spec: dict) -> dict:
    """The dygraph model's logits on fixed batch-1 windows of each timed length (the reference
    every artifact of this model is compared with), its parameter count and shape."""
    import numpy as np

    from paddleqa.models.build import count_params, load_model
    from paddleqa.runtime.artifacts import explicit_inputs, model_runner

    model = load_model(spec["model"])
    runner = model_runner(model)
    c = model.config
    heads = (getattr(c, "layer_heads", None) or [c.num_attention_heads])[0]
    ffn = (getattr(c, "layer_ffn", None) or [c.intermediate_size])[0]
    arrays = {}
    rng = np.random.default_rng(0)
    for seq in spec["seq_lens"]:
        ids = rng.integers(5, c.vocab_size, size=(1, seq))
        ids[0, 0] = 1  # [CLS]-like start; the values only need to be fixed
        types = np.zeros_like(ids)
        types[:, 32:] = 1
        inputs = explicit_inputs({"input_ids": ids, "token_type_ids": types}, np.array([seq]))
        start, end = runner.predict(inputs)
        arrays.update({f"{k}_{seq}": v for k, v in inputs.items()})
        arrays[f"start_{seq}"], arrays[f"end_{seq}"] = start, end
    Path(spec["npz"]).parent.mkdir(parents=True, exist_ok=True)
    np.savez(spec["npz"], **arrays)
    return {"params": count_params(model)["params"],
            "shape": f"{c.num_hidden_layers}L-{c.hidden_size}H-{heads}A-{ffn}F"}


def step_bench(spec: dict) -> dict:
    """Time one artifact at batch 1 for each length (threads fixed by the parent's environment)
    and compare its logits with the dygraph reference on the same windows."""
    import numpy as np

    from paddleqa.runtime.artifacts import open_artifact

    ref = np.load(spec["npz"])
    runner = open_artifact(spec["path"], threads=spec["threads"], int8_ops=tuple(spec["int8_ops"]))
    rows = []
    for seq in spec["seq_lens"]:
        inputs = {k: ref[f"{k}_{seq}"] for k in ("input_ids", "token_type_ids", "position_ids",
                                                 "attention_mask")}
        start, end = runner.predict(inputs)
        diff = float(max(np.abs(start - ref[f"start_{seq}"]).max(), np.abs(end - ref[f"end_{seq}"]).max()))
        times: list[float] = []
        while len(times) < spec["reps"]:  # stop early for slow paths, after at least 3 runs
            t0 = time.perf_counter()
            runner.predict(inputs)
            times.append(time.perf_counter() - t0)
            if len(times) >= 3 and sum(times) > spec["max_seconds"]:
                break
        rows.append({"seq_len": seq, "latency_ms_p50": round(1000 * float(np.median(times)), 2),
                     "runs": len(times), "max_abs_logit_diff": diff,
                     "finite": bool(np.isfinite(start).all() and np.isfinite(end).all())})
    return {"file_bytes": runner.file_bytes, "precision": runner.precision, "rows": rows}


def _reset_peak_rss() -> None:
    """Reset this process's peak RSS (VmHWM), so the next artifact's peak is its own."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _vm_hwm_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return peak_rss_mib()


def step_bench_group(spec: dict) -> dict:
    """Several bench steps in one process and one hold of the exclusive lock (the lock is
    contended: one wait per group instead of one per artifact). Each artifact's result goes to
    its own file, with the peak RSS from its own open-and-run (VmHWM reset before each)."""
    import gc

    done = []
    for item in spec["items"]:
        if Path(item["result"]).exists():
            continue
        _reset_peak_rss()
        started = time.time()
        try:
            result = step_bench(item)
        except Exception as exc:  # noqa: BLE001 -- one broken artifact must not lose the rest
            print(f"bench {item['path']} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            continue
        gc.collect()
        result.update(step_wall_s=round(time.time() - started, 1), peak_rss_mib=_vm_hwm_mib(),
                      env={k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_DEBUG_CPU_TYPE")})
        out = Path(item["result"])
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_name(out.name + ".tmp").write_text(json.dumps(result, indent=1), encoding="utf-8")
        os.replace(out.with_name(out.name + ".tmp"), out)
        done.append(out.name)
    return {"done": done}


STEPS = {"data": step_data, "pretrained": step_pretrained, "train": step_train,
         "quantize": step_quantize, "export": step_export, "reference": step_reference,
         "bench": step_bench, "bench_group": step_bench_group}


def main(spec: dict) -> None:
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    with open(LOCK, "a") as lock:
        # Timed steps hold the lock exclusively (nobody's tests run meanwhile); the rest share it.
        fcntl.flock(lock, fcntl.LOCK_EX if spec["kind"].startswith("bench") else fcntl.LOCK_SH)
        started = time.time()
        result = STEPS[spec["kind"]](spec)
    result.update(step_wall_s=round(time.time() - started, 1), peak_rss_mib=peak_rss_mib(),
                  env={k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_DEBUG_CPU_TYPE")})
    out = Path(spec["result"])
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=1), encoding="utf-8")
    os.replace(tmp, out)


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
