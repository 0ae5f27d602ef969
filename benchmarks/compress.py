"""Compression benchmark: students of the CMRC 2018 teacher, with and without augmentation.

    python benchmarks/compress.py [--only NAME,NAME] [--steps 468] [--nproc 2] [--force]
    python benchmarks/compress.py --report-only
    python benchmarks/compress.py --sweep [--steps 80] [--dev-questions 300]   # KD T and alpha

Needs the teacher of ``benchmarks/teacher.py`` (``runs/cmrc2018/teacher/model``). Each student
in ``STUDENTS`` is trained by ``paddleqa distill`` or ``paddleqa prune`` under Paddle's
data-parallel launcher (``--nproc`` processes x 1 thread) for the same number of optimizer steps
(``--steps``), then scored on CMRC 2018 dev by the stage itself. ``+aug`` variants train on the
synonym-augmented questions (``paddleqa augment``, one variant per question) with Gaussian noise
on the student's input embeddings. A student whose folder already holds a finished run is not
retrained (``--force`` retrains it), so the benchmark can be run in parts. The table in
BENCHMARKS.md and ``benchmarks/compress.json`` are rebuilt from the runs' metrics files.

``--sweep`` instead distils the ``ernie-2L`` student at five (T, alpha) points (``SWEEP``: T in
{1, 2, 4} at alpha 0.5, alpha in {0.2, 0.8} at T 2) for a short budget, scores each (and the
teacher) on the first 300 dev questions, and writes the "KD sweep" section and
``benchmarks/kd_sweep.json``; the defaults of ``DistillConfig`` cite it.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.report import machine_info, replace_section, run_logged  # noqa: E402

CONFIG = "configs/cmrc2018.yaml"
AUG_SET = "augment.variants=1"  # the augmented training file: one synonym variant per question
# Shared by every student: learning rate, logging, and the learning-curve subset of dev.
COMMON = ["learning_rate=0.001", "batch_size=16", "logging_steps=50", "save_steps=200",
          "eval_each_epoch=false"]
AUG = ["noise_prob=0.3", "noise_std=0.05"]
# name -> (stage, overrides of that stage's section, augmented?)
STUDENTS: dict[str, tuple[str, list[str], bool]] = {
    "ernie-2L": ("distill", ["student.num_layers=2", "student.intermediate_size=192"], False),
    "pruned-w0.375-d1": ("prune", ["width_mult=0.375", "drop_layers=1"], False),
    "mobilenet-2c1t": ("distill", ["student.kind=mobilenet", "student.conv_blocks=2",
                                   "student.expand_ratio=2", "student.num_layers=1",
                                   "student.intermediate_size=192", "hidden_weight=0.1"], False),
}
for _name, (_stage, _sets, _) in list(STUDENTS.items()):
    STUDENTS[_name + "+aug"] = (_stage, _sets + AUG, True)
# KD sweep on the ernie-2L student, one factor at a time around T=2, alpha=0.5 (a full 3x3 grid
# costs 9 short runs, more than the 2-core budget of one session allows).
SWEEP_POINTS = [(1.0, 0.5), (2.0, 0.5), (4.0, 0.5), (2.0, 0.2), (2.0, 0.8)]
SWEEP: dict[str, tuple[str, list[str], bool]] = {
    f"kd-T{t:g}-a{a:g}": ("distill", STUDENTS["ernie-2L"][1] + [f"temperature={t}", f"alpha={a}"], False)
    for t, a in SWEEP_POINTS
}
SWEEP_STEPS = 80
SWEEP_DEV_QUESTIONS = 300


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=CONFIG, help="pipeline YAML whose run folder holds the teacher")
    ap.add_argument("--only", default="", help="comma-separated student names (default: all)")
    ap.add_argument("--steps", type=int, default=0, help="optimizer steps per student (default "
                    f"468 = one teacher epoch; {SWEEP_STEPS} with --sweep)")
    ap.add_argument("--dev-questions", type=int, default=-1, help="score on the first N dev "
                    f"questions (default: all; {SWEEP_DEV_QUESTIONS} with --sweep)")
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--force", action="store_true", help="retrain students that already finished")
    ap.add_argument("--out", default="BENCHMARKS.md")
    ap.add_argument("--record", default="", help="raw JSON record (default: benchmarks/"
                    "compress.json, or kd_sweep.json with --sweep)")
    ap.add_argument("--sweep", action="store_true", help="run the temperature x alpha grid instead")
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args(argv)
    args.steps = args.steps or (SWEEP_STEPS if args.sweep else 468)
    if args.dev_questions < 0:
        args.dev_questions = SWEEP_DEV_QUESTIONS if args.sweep else 0

    from paddleqa import pipeline
    from paddleqa.core.config import merge, parse_overrides, read_yaml

    doc = merge(read_yaml(ROOT / args.config), parse_overrides([AUG_SET]))
    run_dir = ROOT / doc["run_dir"]
    layout = pipeline.run_layout(pipeline.build_plan(doc))  # the run folder's stage folders
    table = SWEEP if args.sweep else STUDENTS
    args.dev_subset = dev_subset(ROOT / args.config, run_dir, args.dev_questions)
    names = [n for n in args.only.split(",") if n] or list(table)
    unknown = sorted(set(names) - set(table))
    if unknown:
        sys.exit(f"unknown student(s) {', '.join(unknown)}; valid: {', '.join(table)}")
    if not args.report_only:
        if not layout.model_dir(run_dir, "teacher").is_dir():
            sys.exit(f"no teacher in {layout.model_dir(run_dir, 'teacher')}: run `python benchmarks/teacher.py` first")
        train(run_dir, names, table, args, layout.file(run_dir, "augmented_train"))
    record = collect(run_dir, table, args, layout.folder(run_dir, "finetune"))
    record_path = args.record or ("benchmarks/kd_sweep.json" if args.sweep else "benchmarks/compress.json")
    record["record"] = record_path
    (ROOT / record_path).write_text(
        json.dumps(record, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    if args.sweep:
        replace_section(ROOT / args.out, "kd-sweep", render_sweep(record))
    else:
        replace_section(ROOT / args.out, "compression", render(record))
    return 0


def train(run_dir: Path, names: list[str], table: dict, args, aug_file: Path) -> None:
    base_env = {**os.environ, "MKL_DEBUG_CPU_TYPE": os.environ.get("MKL_DEBUG_CPU_TYPE", "5"),
                "PYTHONUNBUFFERED": "1"}
    one_thread = {**base_env, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    log_path = run_dir / "compress.log"
    paddleqa = [sys.executable, "-m", "paddleqa.cli"]
    if any(table[n][2] for n in names):
        run_logged(paddleqa + ["run", args.config, "--only", "augment", "--set", AUG_SET],
                   {**base_env, "OMP_NUM_THREADS": str(os.cpu_count() or 1)}, log_path)
    for name in names:
        stage, sets, aug = table[name]
        out = run_dir / "students" / name
        if (out / "manifest.json").exists() and not args.force:
            print(f"{name}: finished run in {out}, kept (--force retrains)", flush=True)
            continue
        if args.force and out.exists():
            shutil.rmtree(out)
        overrides = COMMON + sets + [f"output_dir={out}", f"max_steps={args.steps}"]
        if aug:
            overrides.append(f"train_file={aug_file}")
        if args.dev_subset:
            overrides.append(f"dev_file={args.dev_subset}")
        cli_sets = [x for o in overrides for x in ("--set", f"{stage}.{o}")]
        cmd = [stage, "--config", args.config, "--resume", *cli_sets]
        if args.nproc > 1:
            launch = [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node",
                      str(args.nproc), "--log_dir", str(run_dir / "launch_logs" / name),
                      str(Path(sys.executable).parent / "paddleqa")]
            seconds = run_logged(launch + cmd, one_thread, log_path)
        else:
            seconds = run_logged(paddleqa + cmd, base_env, log_path)
        (out / "benchmark_wall_seconds.txt").write_text(f"{seconds:.1f}\n", encoding="utf-8")


def dev_subset(config: Path, run_dir: Path, n: int) -> str:
    """A file with the first ``n`` questions of the config's dev file ('' when n == 0)."""
    if n <= 0:
        return ""
    from paddleqa import pipeline
    from paddleqa.core.config import read_yaml

    dev = pipeline.build_plan(read_yaml(config), enable=("distill",)).distill.dev_file
    doc = json.loads(Path(dev).read_text(encoding="utf-8"))
    left, articles = n, []
    for art in doc["data"]:
        paras = []
        for para in art["paragraphs"]:
            if left <= 0:
                break
            qas = para["qas"][:left]
            left -= len(qas)
            paras.append({**para, "qas": qas})
        if paras:
            articles.append({**art, "paragraphs": paras})
        if left <= 0:
            break
    out = run_dir / f"dev_first{n}.json"
    out.write_text(json.dumps({**doc, "data": articles}, ensure_ascii=False), encoding="utf-8")
    return str(out)


def _flops_384(m: dict) -> int | None:
    """FLOPs of a 384-token window from a stage's metrics (runs before the key named its length
    wrote ``flops_per_query_384``)."""
    if m.get("flops_seq_len") == 384:
        return m.get("flops_per_query")
    return m.get("flops_per_query_384")


def collect(run_dir: Path, table: dict, args, teacher_dir: Path) -> dict:
    teacher = json.loads((teacher_dir / "metrics.json").read_text(encoding="utf-8"))
    teacher["flops_per_query_384"] = _flops_384(teacher)
    if teacher.get("flops_per_query_384") is None:  # runs recorded before these fields existed
        from paddlenlp.transformers import AutoConfig

        from paddleqa.models.flops import flops_per_query

        model_dir = teacher_dir / "model"
        teacher["flops_per_query_384"] = flops_per_query(AutoConfig.from_pretrained(str(model_dir)), 384)
        teacher["model_bytes"] = sum(f.stat().st_size for f in model_dir.iterdir() if f.is_file())
    if args.dev_subset:  # students scored on a subset: score the teacher on the same questions
        sub = run_dir / f"teacher_eval_first{args.dev_questions}"
        if not (sub / "metrics.json").exists():
            run_logged([sys.executable, "-m", "paddleqa.cli", "evaluate", str(teacher_dir / "model"),
                  args.dev_subset, "--out", str(sub), "--no-progress"],
                 {**os.environ, "MKL_DEBUG_CPU_TYPE": "5"}, run_dir / "compress.log")
        sub_m = json.loads((sub / "metrics.json").read_text(encoding="utf-8"))
        teacher.update(dev_em=sub_m["em"], dev_f1=sub_m["f1"])
    rows = [{
        "name": "teacher", "stage": "finetune", "augmented": False, "params": teacher["params"],
        "non_embedding_params": teacher["non_embedding_params"],
        "flops_per_query_384": teacher.get("flops_per_query_384"),
        "model_bytes": teacher.get("model_bytes"), "dev_em": teacher["dev_em"],
        "dev_f1": teacher["dev_f1"], "f1_retention": 1.0, "non_embedding_ratio": 1.0,
        "train_seconds": teacher["train_seconds"], "steps": teacher["global_step"],
    }]
    for name, (stage, sets, aug) in table.items():
        path = run_dir / "students" / name / "metrics.json"
        if not path.exists():
            continue
        m = json.loads(path.read_text(encoding="utf-8"))
        rows.append({
            "name": name, "stage": stage, "augmented": aug, "params": m["params"],
            "non_embedding_params": m["non_embedding_params"],
            "flops_per_query_384": _flops_384(m), "model_bytes": m["model_bytes"],
            "dev_em": m["dev_em"], "dev_f1": m["dev_f1"],
            "f1_retention": m.get("f1_retention") or round(m["dev_f1"] / max(teacher["dev_f1"], 1e-9), 4),
            "non_embedding_ratio": m.get("non_embedding_ratio"),
            "train_seconds": m["train_seconds"], "steps": m["global_step"],
            "pruned_heldout_f1_before_recovery": m.get("pruned_heldout_f1_before_recovery"),
            "teacher_heldout_f1": m.get("teacher_heldout_f1"),
            "overrides": sets, "resumed_from": m.get("resumed_from"),
        })
    return {"command": "python benchmarks/compress.py " + " ".join(sys.argv[1:]),
            "config": args.config, "machine": machine_info(),
            "steps_per_student": args.steps, "nproc": args.nproc,
            "batch_size": int(next(c for c in COMMON if c.startswith("batch_size=")).split("=")[1]),
            "dev_questions": args.dev_questions or teacher.get("dev_total"),
            "rows": rows}


def render(r: dict) -> str:
    m = r["machine"]
    steps = sorted({row["steps"] for row in r["rows"][1:]}) or [r["steps_per_student"]]
    lines = [
        "## Compression: students of the CMRC 2018 teacher",
        "",
        f"Produced by `python benchmarks/compress.py` (students trained in parts with `--only NAME`; "
        f"this rendering: `{r['command'].strip()}`; raw record: `{r['record']}`). "
        f"Machine: {m['cpu']} ({m['cores']} cores); {r['nproc']} data-parallel process(es) x 1 "
        f"thread; every student trains {'/'.join(str(x) for x in steps)} optimizer steps of "
        f"{r['nproc']} x {r['batch_size']} windows from the teacher (`+aug`: synonym-augmented "
        f"questions and embedding noise). Dev: {r['dev_questions']:,} questions of "
        f"`{r['config']}`'s dev file, official CMRC 2018 metric. FLOPs: one 384-token window.",
        "",
        "Train time is wall time of the training loop; some students shared the CPU with other "
        "work part of the time, so compare F1, not minutes.",
        "",
        "| model | stage | params | non-emb params (vs teacher) | FLOPs/query | size | dev EM | dev F1 | F1 retention | train time |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in r["rows"]:
        ratio = row.get("non_embedding_ratio")
        size = row.get("model_bytes")
        flops = row.get("flops_per_query_384")
        ret = row.get("f1_retention")
        lines.append(
            f"| {row['name']} | {row['stage']} | {row['params']:,} | {row['non_embedding_params']:,}"
            f"{f' ({100 * ratio:.0f}%)' if ratio is not None else ''} | "
            f"{'' if flops is None else f'{flops / 1e6:.0f} M'} | "
            f"{'' if size is None else f'{size / 2**20:.1f} MiB'} | {row['dev_em']:.2f} | "
            f"{row['dev_f1']:.2f} | {'' if ret is None else f'{100 * ret:.1f}%'} | "
            f"{row['train_seconds'] / 60:.0f} min{' (resumed leg)' if row.get('resumed_from') else ''} |")
    done = {row["name"] for row in r["rows"]}
    missing = [n for n in STUDENTS if n not in done]
    target = [row for row in r["rows"][1:] if (row.get("non_embedding_ratio") or 1) <= 1 / 3
              and (row.get("f1_retention") or 0) >= 0.97]
    lines += ["", "Target: a student with <= 1/3 of the teacher's non-embedding params at >= 97% "
              f"of its dev F1 -- {'reached by ' + ', '.join(x['name'] for x in target) if target else 'not reached'}."]
    if missing:
        lines += ["", f"Not run yet: {', '.join(missing)} (`python benchmarks/compress.py --only ...`)."]
    return "\n".join(lines) + "\n"


def render_sweep(r: dict) -> str:
    rows = r["rows"][1:]
    lines = [
        "## KD sweep: temperature and alpha",
        "",
        f"Produced by `{r['command'].strip()}` (raw record: `{r['record']}`). The ernie-2L student "
        f"distilled for {'/'.join(str(x) for x in sorted({row['steps'] for row in rows})) or '?'} "
        f"steps per setting, {r['nproc']} process(es) x {r['batch_size']} windows; dev F1 on "
        f"{r['dev_questions']:,} dev questions. `alpha` weighs the gold-span loss, `1 - alpha` "
        "the T^2-scaled KL to the teacher.",
        "",
        "| T | alpha | dev EM | dev F1 | F1 retention |",
        "| ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        t = next(o for o in row["overrides"] if o.startswith("temperature=")).split("=")[1]
        a = next(o for o in row["overrides"] if o.startswith("alpha=")).split("=")[1]
        ret = row.get("f1_retention")
        lines.append(f"| {t} | {a} | {row['dev_em']:.2f} | {row['dev_f1']:.2f} | "
                     f"{'' if ret is None else f'{100 * ret:.1f}%'} |")
    if rows:
        best = max(rows, key=lambda x: x["dev_f1"])
        lines += ["", f"Best: {best['name']} (dev F1 {best['dev_f1']:.2f})."]
    missing = [n for n in SWEEP if n not in {row["name"] for row in rows}]
    if missing:
        lines += ["", f"Not run yet: {', '.join(missing)}."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
