"""The chain at ERNIE 3.0 sizes: shapes, time, memory, export and speed (not accuracy).

    python benchmarks/scale.py [--shapes base,medium,mini,micro,nano] [--out runs/scale]
    python benchmarks/scale.py --report-only

Builds local "pretrained" folders with the published shapes of ERNIE 3.0 base (12L-768H-12A,
FFN 3072), medium (6L-768H), mini (6L-384H, FFN 1536), micro (4L-384H) and nano (4L-312H,
FFN 1248): random weights, a 40,000-token vocabulary, 2,048 positions, saved with
save_pretrained + tokenizer as a hub download leaves them. Then the real stages, few steps each,
on the first ``--questions`` CMRC 2018 training questions: finetune every shape; from base,
distill a 6-layer student (every second layer) and prune it to width 0.75; int8 PTQ of every
model but the distilled one; export (Paddle Inference, Lite ARM + x86 .nb, ONNX, ONNX int8) and
the int8 graph for ARM; time each runnable artifact at batch 1 for each ``--seq-lens`` and
``--threads`` and compare its logits with its dygraph source.

Every finetuned shape is also exported with int8 embedding tables (``export.embeddings: int8``:
an int8 table and a per-row scale, dequantised in the graph), with fp32 and with opt's int8
weights; the x86 fp32-weights twin is timed and compared with its dygraph model like the rest.

Each step runs in a child process (``benchmarks/scale_steps.py``) that records its peak RSS and
takes the CPU lock (shared while training/exporting, exclusive while timing). A finished step's
result file in ``OUT/steps/`` makes a rerun skip it. ``benchmarks/scale.json`` and the "scale"
section of BENCHMARKS.md are rebuilt from the finished steps after every model, so an
interrupted run still leaves what it measured, and names what is missing.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.scale_report import write_report  # noqa: E402

log = logging.getLogger("scale")

# name -> (layers, hidden, heads, FFN): the published ERNIE 3.0 shapes.
SHAPES = {"base": (12, 768, 12, 3072), "medium": (6, 768, 12, 3072), "mini": (6, 384, 12, 1536),
          "micro": (4, 384, 12, 1536), "nano": (4, 312, 12, 1248)}
CMRC_TRAIN = "/work/shared/data/cmrc2018/cmrc2018_train.json"
STEPS_PY = Path(__file__).resolve().parent / "scale_steps.py"


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", default=",".join(SHAPES), help="comma-separated subset of " + ",".join(SHAPES))
    ap.add_argument("--out", default="runs/scale", help="scratch folder (results cached per step)")
    ap.add_argument("--questions", type=int, default=300, help="CMRC 2018 training questions used")
    ap.add_argument("--steps", type=int, default=4, help="optimizer steps of each training stage")
    ap.add_argument("--batch-size", type=int, default=4, help="windows per optimizer step")
    ap.add_argument("--train-seq-len", type=int, default=384, help="window length while training")
    ap.add_argument("--seq-lens", default="128,384", help="timed window lengths (batch 1)")
    ap.add_argument("--threads", default="1,2", help="timed thread counts")
    ap.add_argument("--reps", type=int, default=10, help="timed runs per setting (at least 3)")
    ap.add_argument("--max-seconds", type=float, default=8.0, help="stop timing a setting after "
                    "this long once 3 runs are done")
    ap.add_argument("--report-only", action="store_true", help="rebuild scale.json and the section")
    return ap.parse_args(argv)


def run_step(out: Path, step_id: str, spec: dict, env: dict | None = None) -> dict | None:
    """Run one step in a child process unless its result exists; None when it failed."""
    result = out / "steps" / f"{step_id}.json"
    if result.exists():
        return json.loads(result.read_text(encoding="utf-8"))
    spec = {**spec, "result": str(result)}
    log.info("step %s ...", step_id)
    started = time.time()
    with open(out / "steps" / f"{step_id}.log", "w", encoding="utf-8") as fh:
        rc = subprocess.run([sys.executable, str(STEPS_PY), json.dumps(spec)], cwd=ROOT,
                            stdout=fh, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}).returncode
    if rc != 0 or not result.exists():
        tail = (out / "steps" / f"{step_id}.log").read_text(encoding="utf-8").strip().splitlines()[-3:]
        log.error("step %s failed (exit %s): %s", step_id, rc, " | ".join(tail))
        return None
    log.info("step %s done in %.0f s", step_id, time.time() - started)
    return json.loads(result.read_text(encoding="utf-8"))


def train_common(args, out: Path, train_file: str) -> dict:
    return {"train_file": train_file, "max_steps": args.steps, "batch_size": args.batch_size,
            "logging_steps": 1, "save_steps": 100000, "eval_each_epoch": False,
            "cache_dir": str(out / "cache"), "progress": False}


def models_for(shapes: list[str]) -> list[dict]:
    """The models of the run, in order: each finetuned shape, and the base chain after base."""
    models = []
    for s in shapes:
        models.append({"name": s, "stage": "finetune", "ptq": True})
        if s == "base":
            models.append({"name": "base-6L", "stage": "distill", "ptq": False, "from": "base"})
            models.append({"name": "base-6L-w0.75", "stage": "prune", "ptq": True, "from": "base-6L"})
    return models


def train_config(args, out: Path, model: dict, train_file: str) -> dict:
    common = {**train_common(args, out, train_file), "output_dir": str(out / model["name"] / model["stage"])}
    if model["stage"] == "finetune":
        return {**common, "model": str(out / "pretrained" / f"ernie-3.0-{model['name']}-zh"),
                "max_seq_len": args.train_seq_len, "doc_stride": 128, "max_query_length": 64}
    teacher = str(out / model["from"] / ("finetune" if model["from"] in SHAPES else "distill") / "model")
    if model["stage"] == "distill":
        return {**common, "teacher": teacher, "student": {"num_layers": 6}}
    return {**common, "teacher": teacher, "width_mult": 0.75, "importance_windows": 16,
            "sensitivity_questions": 20}


def artifacts_for(mdir: Path, model: dict) -> list[dict]:
    exp = mdir / "export"
    arts = [{"id": "pi-fp32", "backend": "paddle-inference", "precision": "fp32",
             "path": str(exp / "inference" / "model"), "int8_ops": ["fc"]},
            {"id": "lite-x86-fp32", "backend": "lite-x86", "precision": "fp32",
             "path": str(exp / "x86-fp32" / "model.nb"), "int8_ops": ["fc"]},
            {"id": "ort-fp32", "backend": "onnxruntime", "precision": "fp32",
             "path": str(exp / "onnx" / "model.onnx"), "int8_ops": ["fc"]},
            {"id": "ort-int8", "backend": "onnxruntime", "precision": "int8 (dynamic)",
             "path": str(exp / "onnx" / "model.int8.onnx"), "int8_ops": ["fc"]}]
    if model["stage"] == "finetune":  # fp32 weights, int8 tables: x86 Lite runs it (int8 weights it cannot)
        arts.append({"id": "lite-x86-int8-tables", "backend": "lite-x86", "precision": "int8 tables",
                     "path": str(mdir / "export-int8-tables" / "x86-fp32" / "model.nb"), "int8_ops": ["fc"]})
    if model["ptq"]:
        q = str(mdir / "ptq" / "inference" / "model")
        arts += [{"id": "pi-int8-fc", "backend": "paddle-inference", "precision": "int8 PTQ (fc)",
                  "path": q, "int8_ops": ["fc"]},
                 {"id": "pi-int8-all", "backend": "paddle-inference", "precision": "int8 PTQ (all ops)",
                  "path": q, "int8_ops": ["all"]}]
    return arts


def prepare_model(args, out: Path, model: dict, train_file: str) -> None:
    """Train (or distill/prune), reference logits, export, PTQ, int8 export: one model."""
    name, mdir = model["name"], out / model["name"]
    seq_lens = [int(s) for s in args.seq_lens.split(",")]
    if model["stage"] == "finetune":
        pre = out / "pretrained" / f"ernie-3.0-{name}-zh"
        if not run_step(out, f"{name}.pretrained", {"kind": "pretrained", "shape": SHAPES[name],
                                                     "vocab_dir": str(out / "vocab"), "out": str(pre)}):
            return
    if not run_step(out, f"{name}.train", {"kind": "train", "stage": model["stage"],
                                           "config": train_config(args, out, model, train_file)},
                    env={"OMP_NUM_THREADS": "2"}):
        return
    src = str(mdir / model["stage"] / "model")
    npz = str(mdir / "reference.npz")
    run_step(out, f"{name}.reference", {"kind": "reference", "model": src, "npz": npz, "seq_lens": seq_lens})
    run_step(out, f"{name}.export", {"kind": "export", "config": {
        "model": src, "out_dir": str(mdir / "export"), "targets": ["arm", "x86"],
        "precisions": ["fp32", "int8"], "onnx": True, "onnx_int8": True}})  # int8: opt's weight-only
    if model["stage"] == "finetune":  # the same graph with int8 embedding tables (models.int8tables)
        run_step(out, f"{name}.export-int8-tables", {"kind": "export", "config": {
            "model": src, "out_dir": str(mdir / "export-int8-tables"), "targets": ["arm", "x86"],
            "precisions": ["fp32", "int8"], "embeddings": "int8"}})
    if model["ptq"]:
        if run_step(out, f"{name}.ptq", {"kind": "quantize", "config": {
                "model": src, "out_dir": str(mdir / "ptq"), "method": "ptq", "calib_file": train_file,
                "calib_windows": 16, "batch_size": 8, "cache_dir": str(out / "cache"), "progress": False}}):
            run_step(out, f"{name}.export-int8", {"kind": "export", "config": {
                "model": src, "out_dir": str(mdir / "export-int8"), "targets": ["arm"],
                "precisions": ["fp32"], "inference_model": str(mdir / "ptq" / "inference" / "model")}})


def bench_all(args, out: Path, models: list[dict], threads: int) -> None:
    """Time every runnable artifact of every model at one thread count: one child process, one
    hold of the exclusive lock; each artifact's result is its own (cached) step file."""
    seq_lens = [int(s) for s in args.seq_lens.split(",")]
    items = []
    for model in models:
        name, mdir = model["name"], out / model["name"]
        if not (out / "steps" / f"{name}.reference.json").exists():
            continue
        for art in artifacts_for(mdir, model):
            base = Path(art["path"])
            result = out / "steps" / f"{name}.bench.{art['id']}.t{threads}.json"
            if result.exists() or not (base.exists() or base.with_suffix(".pdmodel").exists()):
                continue
            items.append({"path": art["path"], "int8_ops": art["int8_ops"],
                          "npz": str(mdir / "reference.npz"), "threads": threads,
                          "seq_lens": seq_lens, "reps": args.reps, "max_seconds": args.max_seconds,
                          "result": str(result)})
    if items:
        run_step(out, f"bench-group.t{threads}.{int(time.time())}", {"kind": "bench_group", "items": items},
                 env={"OMP_NUM_THREADS": str(threads), "MKL_DEBUG_CPU_TYPE": "5"})


def main(argv=None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    shapes = [s for s in args.shapes.split(",") if s]
    bad = [s for s in shapes if s not in SHAPES]
    if bad:
        raise SystemExit(f"unknown shape(s) {bad}; valid: {', '.join(SHAPES)}")
    out = (ROOT / args.out).resolve()
    (out / "steps").mkdir(parents=True, exist_ok=True)
    models = models_for(shapes)
    command = "python benchmarks/scale.py" + (" " + " ".join(argv if argv is not None else sys.argv[1:])).rstrip()
    if args.report_only and (out / "command.txt").exists():
        command = (out / "command.txt").read_text(encoding="utf-8").strip()  # the run's own
    if not args.report_only:
        (out / "command.txt").write_text(command + "\n", encoding="utf-8")
        train_file = str(out / "data" / "train.json")
        if not run_step(out, "data", {"kind": "data", "source": CMRC_TRAIN, "questions": args.questions,
                                      "train_file": train_file, "vocab_dir": str(out / "vocab")}):
            raise SystemExit("data step failed; see " + str(out / "steps" / "data.log"))
        # Everything that trains or exports first (shared CPU lock), then the timing (exclusive
        # lock), so training never waits behind a timing step queued for the exclusive lock.
        for model in models:
            prepare_model(args, out, model, train_file)
            write_report(out, models_for(list(SHAPES)), artifacts_for, args, command)
        for threads in [int(t) for t in args.threads.split(",")]:
            bench_all(args, out, models, threads)
            write_report(out, models_for(list(SHAPES)), artifacts_for, args, command)
    write_report(out, models_for(list(SHAPES)), artifacts_for, args, command)


if __name__ == "__main__":
    main()
