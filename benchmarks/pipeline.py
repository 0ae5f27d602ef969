"""The project's headline benchmark (``make bench``): configs/cmrc2018.yaml end to end.

    python benchmarks/pipeline.py [--config configs/cmrc2018.yaml] [--nproc 2]
    python benchmarks/pipeline.py --report-only      # re-render from the finished run

Steps, each skipped when its stage's manifest shows it already ran with this config and inputs
(so an interrupted benchmark continues where it stopped):

1. the teacher: ``benchmarks/teacher.py`` (data, vocab, data-parallel fine-tuning over ``--nproc``
   processes x 1 thread, dev scoring; writes the "Teacher" section);
2. ``paddleqa run CONFIG --only augment``: synonym variants of the training questions, which
   the students learn from (when the config has an ``augment`` section);
3. the student: when the config has an ``autocompress`` section (and ``--no-autocompress`` is
   not given), ``benchmarks/autocompress.py CONFIG`` searches the section's budget (its
   "autocompress" section of BENCHMARKS.md) and the rest of the chain runs the chosen plan,
   ``RUN_DIR/autocompress/plan.yaml``, whose distill stage is the search's full trial (not
   trained again); otherwise the student of the config's ``distill`` section, data-parallel the
   same way;
4. ``paddleqa run CONFIG --only STAGE`` for the rest: channel pruning of the student and
   distillation back (when the config has a ``prune`` section), int8 PTQ, Paddle Lite export (ARM/x86,
   fp32 and the int8 graph, plus the teacher's own fp32 graph as latency baseline), the bench
   stage (batch-1 latency at 384 tokens, 1 thread; every runnable student artifact scored on
   dev), then ``paddleqa report`` (``RUN_DIR/report/``: Markdown, HTML, Pareto plot). The
   teacher's dev score is the one its finetune step computed on all of dev (the same code path
   as ``paddleqa evaluate``), so the ``evaluate`` stage is not run a second time;
5. ``benchmarks/results.json`` (the report's rows) and the "Headline" section of BENCHMARKS.md:
   the best student against the fp32 teacher, measured in this one run.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.report import machine_info, replace_section, run_logged  # noqa: E402
from paddleqa.runtime.report import is_teacher_baseline

RESULT_KEYS = ("name", "source", "backend", "precision", "params", "flops", "file_bytes",
               "latency_ms_p50", "seq_len", "peak_rss_mib", "dev_em", "dev_f1", "dev_f1_ci95", "f1_retention",
               "f1_retention_ci95", "note")
# The headline targets (issue 13): best student vs fp32 teacher, one run, this machine.
TARGET_SPEEDUP, TARGET_SHRINK, TARGET_RETENTION = 6.0, 10.0, 0.97


def _teacher_rows(rows: list[dict]) -> list[dict]:
    return [r for r in rows if r["name"] == "teacher" or is_teacher_baseline(r)]


def headline(rows: list[dict], deployed: str | None = None) -> dict:
    """Best student vs the fp32 teacher, from the report's rows (pure: no I/O).

    Teacher latency: its fastest fp32 form measured here (dygraph, Paddle Inference, Lite x86,
    ONNX Runtime); teacher file: its fp32 ``.nb`` (else its model folder). Student latency: the
    fastest runnable deployed student artifact (not a dygraph folder) whose measured dev F1 is
    >= TARGET_RETENTION of the teacher's; when none qualifies, the fastest form of the chain's
    product (``deployed``, the run layout's deployed model, and the artifacts made from it), else
    the most accurate one.
    Student file: the smallest student ARM ``.nb`` whose twin -- the row it was converted from,
    runnable here -- is among those candidates (an ARM file cannot run here, so its accuracy is
    its twin's).
    """
    teacher = next(r for r in rows if r["name"] == "teacher")
    t_rows = _teacher_rows(rows)
    t_timed = [r for r in t_rows if r.get("latency_ms_p50") is not None]
    t_fast = min(t_timed, key=lambda r: r["latency_ms_p50"]) if t_timed else None
    t_nb = [r for r in t_rows if r["backend"].startswith("lite-")]
    t_file = (t_nb[0] if t_nb else teacher)
    students = [r for r in rows if r not in t_rows and r.get("dev_f1") is not None
                and r.get("latency_ms_p50") is not None]
    out = {"teacher_f1": teacher.get("dev_f1"), "teacher_latency_row": t_fast and t_fast["name"],
           "teacher_latency_ms": t_fast and t_fast["latency_ms_p50"],
           "teacher_file_row": t_file["name"], "teacher_file_bytes": t_file.get("file_bytes")}
    if not students or not teacher.get("dev_f1"):
        return {**out, "student": None}
    t_f1 = teacher["dev_f1"]
    by_name = {r["name"]: r for r in rows}

    def source_of(r: dict) -> dict | None:
        return by_name.get(r.get("source") or "")

    def from_deployed(r: dict) -> bool:
        return deployed is not None and (r["name"] == deployed or r.get("source") == deployed
                                         or (source_of(r) or {}).get("source") == deployed)

    # the best student is a deployed form (a dygraph folder is a training output, not shipped);
    # dygraph rows stay in the pool, as the twins whose F1 an ARM file carries
    shipped = lambda rs: [r for r in rs if r["backend"] != "dygraph"]  # noqa: E731
    good = [r for r in students if r["dev_f1"] / t_f1 >= TARGET_RETENTION]
    chain = [r for r in students if from_deployed(r)]
    qualifying = shipped(good)
    if qualifying:
        best, pool = min(qualifying, key=lambda r: r["latency_ms_p50"]), good
    elif shipped(chain):
        best, pool = min(shipped(chain), key=lambda r: r["latency_ms_p50"]), chain
    else:
        best, pool = max(shipped(students) or students, key=lambda r: r["dev_f1"]), students
    arm = [r for r in rows if r["backend"] == "lite-arm" and r not in t_rows and source_of(r) in pool]
    ship = min(arm, key=lambda r: r["file_bytes"]) if arm else best
    twin = source_of(ship) if arm else best
    out.update(student=best["name"], student_latency_ms=best["latency_ms_p50"],
               student_f1=best["dev_f1"], retention=best["dev_f1"] / t_f1, qualifying=bool(qualifying),
               student_file_row=ship["name"], student_file_bytes=ship["file_bytes"],
               student_file_f1_row=twin["name"], student_file_f1=twin["dev_f1"])
    if out["teacher_latency_ms"]:
        out["speedup"] = out["teacher_latency_ms"] / best["latency_ms_p50"]
    if out["teacher_file_bytes"] and ship.get("file_bytes"):
        out["shrink"] = out["teacher_file_bytes"] / ship["file_bytes"]
    out["met"] = {"latency": out.get("speedup", 0) >= TARGET_SPEEDUP,
                  "size": out.get("shrink", 0) >= TARGET_SHRINK,
                  "f1": min(out["retention"], twin["dev_f1"] / t_f1) >= TARGET_RETENTION}
    return out


def plan_lines(ac: dict | None) -> list[str]:
    if not ac:
        return []
    verdict = "met" if ac["criterion_met"] else "not met: the best plan trained"
    return [f"Students: autocompress's chosen plan **{ac['chosen']}** (budget {ac['budget']}; "
            f"validation F1 {ac['validation_f1']:.2f} vs the teacher's {ac['teacher_validation_f1']:.2f}, "
            f"F1 criterion {verdict}; see the autocompress section), run from `{ac['plan_file']}`: "
            "distill is its full trial, then the config's prune, quantize and export.", ""]


def render(record: dict) -> str:
    from paddleqa.runtime.report import COLUMNS, format_cell

    m, h, rows = record["machine"], record["headline"], record["rows"]
    lines = [
        "## Headline: the whole chain on CMRC 2018, best student vs the fp32 teacher",
        "",
        f"Produced by `{record['command']}` (`make bench`; rows: `benchmarks/results.json`, the "
        f"run's own report: `{record['report']}`). Machine: {m['cpu']} ({m['cores']} cores, "
        f"{m['memory_gib']} GiB); paddlepaddle {m['paddlepaddle']}, paddlelite {m['paddlelite']}. "
        f"Config `{record['config']}`; training {record['nproc']} data-parallel processes x 1 "
        f"thread; every latency: batch 1, {record['seq_len']} tokens, 1 thread "
        f"(`MKL_DEBUG_CPU_TYPE={record.get('mkl_debug_cpu_type') or 'unset'}`), timed by the bench "
        "stage in one run; dev: all of CMRC 2018 dev, official metric. Wall time of this "
        f"invocation: {record['wall_minutes']:.0f} min"
        + (f" ({' and '.join(record['skipped_steps'])} already trained by an earlier invocation "
           "or `benchmarks/teacher.py`, whose section gives its time)." if record.get("skipped_steps")
           else "."),
        "",
        *plan_lines(record.get("autocompress")),
        "| " + " | ".join(c[1] for c in COLUMNS) + " |",
        "| " + " | ".join("---" if c[2] == "s" else "---:" for c in COLUMNS) + " |",
    ]
    for r in rows:
        lines.append("| " + " | ".join(format_cell(r.get(k), kind) for k, _, kind in COLUMNS) + " |")
    lines.append("")
    if h.get("student") is None:
        lines.append("No student artifact with a measured latency and dev F1: no headline.")
        return "\n".join(lines) + "\n"

    def verdict(key: str) -> str:
        return "met" if h["met"][key] else "NOT met"

    lines += [
        (f"Best student: **{h['student']}**, the fastest artifact at >= {TARGET_RETENTION:.0%} of "
         "the teacher's dev F1" if h.get("qualifying", True) else
         f"No deployed student artifact reaches {TARGET_RETENTION:.0%} of the teacher's dev F1, so the "
         f"headline shows the chain's product: **{h['student']}**, the fastest runnable form of "
         "the deployed model")
        + f"; shipped as **{h['student_file_row']}**, the smallest student ARM "
        f"file whose graph's F1 is measured on its runnable twin ({h['student_file_f1_row']}: dev F1 "
        f"{h['student_file_f1']:.2f}).",
        "",
        "| target | teacher | best student | ratio | verdict |",
        "| --- | ---: | ---: | ---: | --- |",
        f"| latency >= {TARGET_SPEEDUP:g}x lower | {h['teacher_latency_ms']:.1f} ms ({h['teacher_latency_row']}) "
        f"| {h['student_latency_ms']:.1f} ms ({h['student']}) | {h.get('speedup', 0):.2f}x | {verdict('latency')} |",
        f"| file >= {TARGET_SHRINK:g}x smaller | {h['teacher_file_bytes'] / 2**20:.2f} MiB ({h['teacher_file_row']}) "
        f"| {h['student_file_bytes'] / 2**20:.2f} MiB ({h['student_file_row']}) | {h.get('shrink', 0):.2f}x | {verdict('size')} |",
        f"| dev F1 >= {TARGET_RETENTION:.0%} of the teacher's | {h['teacher_f1']:.2f} | {h['student_f1']:.2f} "
        f"| {100 * h['retention']:.1f}% | {verdict('f1')} |",
        "",
    ]
    emb = record.get("student_embedding")
    if not h["met"]["size"] and emb:
        lines += [f"Where the student's bytes go: its embeddings (character vocabulary and positions) "
                  f"are {emb['embedding_params']:,} of its {emb['params']:,} parameters "
                  f"({emb['embedding_params'] / emb['params']:.0%}, {4 * emb['embedding_params'] / 2**20:.2f} MiB "
                  "in fp32), so the file cannot shrink much below that while the embedding table "
                  "is stored in fp32.", ""]
    return "\n".join(lines) + "\n"


def plan_file(doc: dict, run_dir: Path) -> Path | None:
    """Where ``paddleqa autocompress`` writes the chosen plan for this config (None: no search)."""
    section = doc.get("autocompress")
    if section is None:
        return None
    return Path(section.get("out_dir") or run_dir / "autocompress") / "plan.yaml"


def _run_chain(args, cfg, run_dir: Path, plan: Path | None) -> list[str]:
    """Run the chain of ``cfg`` (a ``pipeline.RunPlan``) step by step with fixed thread settings;
    from the student on, the chain of ``plan`` (autocompress's chosen plan) when given. Returns
    the steps an earlier invocation (or teacher.py) had finished already."""
    from paddleqa import pipeline
    from paddleqa.core.config import read_yaml
    from paddleqa.stages.runner import training_done

    skipped: list[str] = []
    run_dir.mkdir(parents=True, exist_ok=True)
    log_path = run_dir / "benchmark.log"
    base_env = {**os.environ, "MKL_DEBUG_CPU_TYPE": os.environ.get("MKL_DEBUG_CPU_TYPE", "5"),
                "PYTHONUNBUFFERED": "1"}
    one_thread = {**base_env, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    if training_done(cfg.finetune):
        skipped.append("teacher")
    else:
        run_logged([sys.executable, "benchmarks/teacher.py", "--config", args.config,
                    "--nproc", str(args.nproc)], base_env, log_path)
    all_threads = {**base_env, "OMP_NUM_THREADS": str(os.cpu_count() or 1)}
    if cfg.augment is not None:  # finished stages are skipped by the pipeline itself
        run_logged([sys.executable, "-m", "paddleqa.cli", "run", args.config, "--only", "augment"],
                   all_threads, log_path)
    config = args.config
    trained_before = False  # the plan's student: the search's full trial, maybe from an earlier call
    if plan is not None:  # the search is resumable: timed plans and finished trials are kept
        trained_before = plan.exists() and training_done(pipeline.build_plan(read_yaml(plan)).distill)
        run_logged([sys.executable, "benchmarks/autocompress.py", args.config], base_env, log_path)
        config, cfg = str(plan), pipeline.build_plan(read_yaml(plan))
    di = cfg.distill
    if di is not None and training_done(di):
        if plan is None or trained_before:  # (else the search trained it in this invocation)
            skipped.append("student")
    elif di is not None:
        cmd = ["distill", "--config", config, "--resume"]
        if args.nproc > 1:
            run_logged([sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node",
                        str(args.nproc), "--log_dir", str(run_dir / "launch_logs" / "distill"),
                        str(Path(sys.executable).parent / "paddleqa"), *cmd], one_thread, log_path)
        else:
            run_logged([sys.executable, "-m", "paddleqa.cli", *cmd], base_env, log_path)
    # The rest through the pipeline itself (finished stages are skipped). The `evaluate`
    # stage is left out: the finetune step already scored the teacher on all of dev through
    # the same code path, and the report takes that score.
    later = (["prune"] if cfg.prune is not None else []) + ["quantize", "export", "bench"]
    for stage in later:
        run_logged([sys.executable, "-m", "paddleqa.cli", "run", config, "--only", stage],
                   all_threads, log_path)
    run_logged([sys.executable, "-m", "paddleqa.cli", "report", str(run_dir)], all_threads, log_path)
    return skipped


def _chosen_plan(plan: Path | None) -> dict | None:
    """The search's verdict next to its plan file (metrics.json), for the headline's text."""
    if plan is None or not (ROOT / plan).with_name("metrics.json").exists():
        return None
    m = json.loads((ROOT / plan).with_name("metrics.json").read_text(encoding="utf-8"))
    return {"plan_file": str(plan), **{k: m.get(k) for k in ("chosen", "budget", "criterion_met",
                                                           "validation_f1", "teacher_validation_f1")}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/cmrc2018.yaml")
    ap.add_argument("--nproc", type=int, default=2, help="data-parallel training processes")
    ap.add_argument("--out", default="BENCHMARKS.md")
    ap.add_argument("--record", default="benchmarks/pipeline.json", help="raw record of this benchmark")
    ap.add_argument("--no-autocompress", action="store_true", help="the config's own distill "
                    "student even when it has an autocompress section")
    ap.add_argument("--report-only", action="store_true",
                    help="re-render from the finished run (no training, no timing)")
    args = ap.parse_args(argv)

    from paddleqa import pipeline
    from paddleqa.core.config import read_yaml

    doc = read_yaml(ROOT / args.config)
    cfg = pipeline.build_plan(doc)
    run_dir = ROOT / cfg.run_dir
    if cfg.bench is None or cfg.export is None:
        sys.exit(f"{args.config} needs export and bench sections for the headline benchmark")
    plan = None if args.no_autocompress else plan_file(doc, Path(cfg.run_dir))
    started = time.time()
    skipped: list[str] = []  # steps already finished (by an earlier invocation or teacher.py)
    if not args.report_only:
        skipped = _run_chain(args, cfg, run_dir, plan)
    if plan is not None:  # the chain from the student on is the plan's
        cfg = pipeline.build_plan(read_yaml(ROOT / plan))
    layout = pipeline.run_layout(cfg)  # what `paddleqa run` writes to RUN_DIR/layout.json
    report_dir = layout.folder(run_dir, "report")
    results = json.loads((report_dir / "results.json").read_text(encoding="utf-8"))
    rows = [{k: r.get(k) for k in RESULT_KEYS} for r in results]
    (ROOT / "benchmarks" / "results.json").write_text(
        json.dumps(rows, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    record_path = ROOT / args.record
    previous = json.loads(record_path.read_text(encoding="utf-8")) if record_path.exists() else {}
    wall = (time.time() - started) / 60 if not args.report_only else previous.get("wall_minutes", 0.0)
    command = "python benchmarks/pipeline.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    bench = json.loads(layout.file(run_dir, "bench_results").read_text(encoding="utf-8"))
    record = {"command": command.strip() if not args.report_only else previous.get("command", command),
              "config": args.config, "nproc": args.nproc, "machine": machine_info(),
              "seq_len": cfg.bench.seq_lens[-1], "wall_minutes": round(wall, 1),
              "skipped_steps": skipped if not args.report_only else previous.get("skipped_steps", []),
              "mkl_debug_cpu_type": bench.get("mkl_debug_cpu_type"),
              "report": str((report_dir / "report.md").relative_to(ROOT)),
              "rows": rows, "headline": headline(rows, layout.deployed),
              "autocompress": _chosen_plan(plan)}
    student = cfg.prune or cfg.distill
    sm = ROOT / student.output_dir / "metrics.json" if student else None
    if sm is not None and sm.exists():
        m = json.loads(sm.read_text(encoding="utf-8"))
        record["student_embedding"] = {"params": m["params"],
                                       "embedding_params": m["params"] - m["non_embedding_params"]}
    record_path.write_text(json.dumps(record, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    replace_section(ROOT / args.out, "headline", render(record))
    print(json.dumps(record["headline"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
