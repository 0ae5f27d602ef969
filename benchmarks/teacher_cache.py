"""What the teacher cache saves: one distillation run with ``teacher_cache`` off and one with it
on, side by side on the same machine, same teacher, same windows, same steps.

    python benchmarks/teacher_cache.py [--config configs/cmrc2018.yaml] [--questions 600]
                                       [--epochs 3] [--nproc 2]
    python benchmarks/teacher_cache.py --report-only

Both runs are ``paddleqa distill CONFIG`` with the config's student and objective, trained for
``--epochs`` epochs over the first ``--questions`` training questions of the run's training split
(``RUN_DIR/data/train.json``; whole passages, so a shorter run than the headline's, and every epoch
after the first can read the cache), scored on the run's validation split (dev is not read). The
cached run starts from an empty cache folder, so its first epoch runs the teacher as the other
run does. Reported: training seconds per step for each run and their ratio, the cache's hits and
misses, and whether the two runs learned the same (final loss, validation F1). Writes
``benchmarks/teacher_cache.json`` and the "teacher-cache" section of BENCHMARKS.md. Resumable: a
finished run folder is not trained again.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.report import machine_info, record_main, run_logged  # noqa: E402

RECORD = "benchmarks/teacher_cache.json"


def subset(train_file: Path, questions: int, out: Path) -> int:
    """The first passages of ``train_file`` holding at least ``questions`` questions, as ``out``;
    returns how many questions it holds."""
    doc = json.loads(train_file.read_text(encoding="utf-8"))
    kept, n = [], 0
    for article in doc["data"]:
        paragraphs = []
        for p in article["paragraphs"]:
            if n >= questions:
                break
            paragraphs.append(p)
            n += len(p["qas"])
        if paragraphs:
            kept.append({**article, "paragraphs": paragraphs})
        if n >= questions:
            break
    out.write_text(json.dumps({**doc, "data": kept}, ensure_ascii=False), encoding="utf-8")
    return n


def measure(args) -> dict:
    import yaml

    run_dir = ROOT / yaml.safe_load((ROOT / args.config).read_text(encoding="utf-8"))["run_dir"]
    teacher, train, validation = (run_dir / "teacher" / "model", run_dir / "data" / "train.json",
                                  run_dir / "data" / "validation.json")
    for f in (teacher, train, validation):
        if not f.exists():
            sys.exit(f"{f} not found: run the config's teacher first (`python benchmarks/teacher.py "
                     f"--config {args.config}`)")
    out = ROOT / "runs" / "teacher-cache"
    out.mkdir(parents=True, exist_ok=True)
    questions = subset(train, args.questions, out / "train_subset.json")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    rows = {}
    for flag in ("off", "on"):
        folder = out / flag
        if not (folder / "manifest.json").exists() or not (folder / "model").exists():
            run_logged([sys.executable, "-m", "paddleqa.cli", "distill", "--config", args.config,
                        "--nproc", str(args.nproc), "--teacher", str(teacher),
                        "--train-file", str(out / "train_subset.json"),
                        "--validation-file", str(validation), "--dev-file", "",
                        "--output-dir", str(folder), "--cache-dir", str(out / f"cache-{flag}"),
                        "--epochs", str(args.epochs), "--max-steps", "-1", "--no-eval-each-epoch",
                        "--teacher-cache" if flag == "on" else "--no-teacher-cache", "--no-progress"],
                       env, out / "benchmark.log")
        m = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
        rows[flag] = {k: m.get(k) for k in ("global_step", "epochs", "train_seconds", "train_loss",
                                            "validation_em", "validation_f1", "train_windows",
                                            "teacher_cache", "params")}
    return {"command": "python benchmarks/teacher_cache.py " + " ".join(sys.argv[1:]),
            "machine": machine_info(), "config": args.config, "nproc": args.nproc,
            "questions": questions, "teacher": str(teacher.relative_to(ROOT)), "rows": rows,
            "record": RECORD}


def render(r: dict) -> str:
    m, off, on = r["machine"], r["rows"]["off"], r["rows"]["on"]
    per_step = {k: v["train_seconds"] / max(v["global_step"], 1) for k, v in r["rows"].items()}
    stats = on.get("teacher_cache") or {}
    lines = [
        "## Teacher cache: distillation with the teacher's outputs kept on disk",
        "",
        f"Last produced by `{r['command'].strip()}` (raw record: `{r['record']}`). Machine: "
        f"{m['cpu']} ({m['cores']} cores), paddlepaddle {m['paddlepaddle']}; {r['nproc']} "
        f"data-parallel processes x 1 thread. The config's student and objective "
        f"(`{r['config']}`), teacher `{r['teacher']}`, trained twice one after the other on the "
        f"first {r['questions']:,} training questions ({off['train_windows']:,} windows) for "
        f"{off['epochs']} epochs: `teacher_cache` off, then on from an empty cache (its first "
        "epoch runs the teacher live, later epochs read the cache). Scored on the run's "
        "validation split.",
        "",
        "| teacher_cache | steps | train s | s per step | batches from the cache / computed (rank 0) "
        "| final train loss | validation EM | validation F1 |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, x in (("off", off), ("on", on)):
        hits = f"{stats['hits']} / {stats['misses']}" if name == "on" and stats else "-"
        lines.append(f"| {name} | {x['global_step']} | {x['train_seconds']:.0f} | "
                     f"{per_step[name]:.2f} | {hits} | {x['train_loss']:.4f} | "
                     f"{x['validation_em']:.2f} | {x['validation_f1']:.2f} |")
    lines += ["", f"Training time with the cache: **{off['train_seconds'] / on['train_seconds']:.2f}x "
              f"faster** over {off['epochs']} epochs (the first epoch included). Validation F1 "
              f"differs by {on['validation_f1'] - off['validation_f1']:+.2f} and the final loss by "
              f"{on['train_loss'] - off['train_loss']:+.4f} (the cached hidden states are "
              "float16)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/cmrc2018.yaml")
    ap.add_argument("--questions", type=int, default=600, help="training questions of each run")
    ap.add_argument("--epochs", type=float, default=3.0)
    ap.add_argument("--nproc", type=int, default=2, help="data-parallel training processes")
    ap.add_argument("--out", default="BENCHMARKS.md")
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args(argv)
    record_main(args.report_only, ROOT / RECORD, "teacher-cache", lambda: measure(args), render,
                ROOT / args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
