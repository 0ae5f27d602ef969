"""Training throughput: 1 process x N threads vs N data-parallel processes x 1 thread.

    python benchmarks/dp_throughput.py [--config configs/cmrc2018.yaml] [--steps 40]

Fine-tunes the benchmark teacher config for ``--steps`` optimizer steps twice, side by side in
one run: once as one process with all cores as threads, once through ``paddleqa finetune --nproc
N`` (N = cores, one thread each) with ``batch_size / N`` windows per process, so both settings
take the same effective batch. Throughput is what the Trainer measured over the training loop
(windows per second; data loading and feature caching excluded). Writes the "Data-parallel
throughput" section of BENCHMARKS.md and ``benchmarks/dp_throughput.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.report import machine_info, record_main  # noqa: E402

RECORD = "benchmarks/dp_throughput.json"


def measure(args) -> dict:
    from paddleqa import pipeline
    from paddleqa.core.config import read_yaml

    doc = read_yaml(ROOT / args.config)
    ft = pipeline.build_plan(doc).finetune
    cores = os.cpu_count() or 1
    rows = []
    for name, nproc, threads in (("1 process x %d threads" % cores, 1, cores),
                                 ("%d processes x 1 thread" % cores, cores, 1)):
        out = Path(tempfile.mkdtemp(prefix="paddleqa-dp-"))
        sets = [f"finetune.output_dir={out}", f"finetune.max_steps={args.steps}",
                f"finetune.batch_size={ft.batch_size * (1 if nproc > 1 else cores)}",
                "finetune.eval_each_epoch=false", "finetune.dev_file=", f"finetune.save_steps={10 * args.steps}"]
        cmd = [sys.executable, "-m", "paddleqa.cli", "--threads", str(threads), "finetune",
               "--config", args.config, "--nproc", str(nproc)]
        for s in sets:
            cmd += ["--set", s]
        env = {**os.environ, "MKL_DEBUG_CPU_TYPE": os.environ.get("MKL_DEBUG_CPU_TYPE", "5")}
        print("+", " ".join(cmd), flush=True)
        res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        if res.returncode != 0:
            sys.exit(f"{name} failed:\n{res.stderr[-3000:]}")
        m = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
        rows.append({"setting": name, "processes": nproc, "threads_per_process": threads,
                     "windows_per_step": ft.batch_size * cores, "steps": m["global_step"],
                     "train_seconds": m["train_seconds"],
                     "windows_per_second": m["train_windows_per_second"],
                     "replicas_identical": m.get("replicas_identical")})
        shutil.rmtree(out, ignore_errors=True)
    return {"command": "python benchmarks/dp_throughput.py " + " ".join(sys.argv[1:]),
            "config": args.config, "machine": machine_info(), "rows": rows}


def render(r: dict) -> str:
    m = r["machine"]
    lines = ["## Data-parallel throughput: threads vs processes", "",
             f"Produced by `{r['command'].strip()}` (raw record: `{RECORD}`). Machine: {m['cpu']} "
             f"({m['cores']} cores). The teacher of `{r['config']}` fine-tuned for the same number of "
             "steps and the same effective batch under both settings, one after the other in one run; "
             "throughput as measured by PaddleNLP's Trainer over the training loop. Throughput only: "
             "these short runs score nothing, so no teacher F1 belongs to this section.", "",
             "| setting | windows per step | steps | train time | windows/s |",
             "| --- | ---: | ---: | ---: | ---: |"]
    for row in r["rows"]:
        lines.append(f"| {row['setting']} | {row['windows_per_step']} | {row['steps']} | "
                     f"{row['train_seconds']:.0f} s | {row['windows_per_second']:.2f} |")
    if len(r["rows"]) == 2 and r["rows"][0]["windows_per_second"]:
        ratio = r["rows"][1]["windows_per_second"] / r["rows"][0]["windows_per_second"]
        lines += ["", f"Data-parallel processes vs threads: {ratio:.2f}x the throughput."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/cmrc2018.yaml")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--out", default="BENCHMARKS.md")
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args(argv)
    record_main(args.report_only, ROOT / RECORD, "dp-throughput", lambda: measure(args), render,
                ROOT / args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
