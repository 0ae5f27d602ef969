"""int8 embedding tables in Paddle Lite: what they save in the ``.nb`` and what they cost in F1.

    python benchmarks/int8_tables.py --model DIR --data QUESTIONS.json [--name NAME]
    python benchmarks/int8_tables.py --report-only

For one model folder, runs the user-facing CLI twice: ``paddleqa export`` with the default fp32
tables and with ``--embeddings int8`` (arm + x86 bundles each), then ``paddleqa evaluate`` on
``--data`` for both x86 ``.nb`` files and ``paddleqa compare`` for the paired F1 difference with
its bootstrap interval (the ARM files have no runtime here; they are the same graph as their x86
twins, so their sizes are reported and the x86 score stands for them). Score a model on its own
run's validation split (``RUN/data/validation.json``), not on dev: this is a setting one may
choose by. Each call adds (or replaces) its model's row in ``benchmarks/int8_tables.json`` and
writes the "int8-tables" section of BENCHMARKS.md. Resumable: a finished export or evaluation
folder is kept, unless its export was made from weights other than the model folder's now.
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

from benchmarks.report import machine_info, record_main, run_logged  # noqa: E402
from paddleqa.core.freshness import read_record, recorded_sha  # noqa: E402
from paddleqa.core.manifest import sha256_path  # noqa: E402

RECORD = "benchmarks/int8_tables.json"
FORMS = ("fp32", "int8")


def _drop_stale(out: Path, model_sha: str, log_path: Path) -> None:
    """Remove this name's exports and scores when they were made from other weights (the model
    folder was retrained in place), so a re-run measures the model it names."""
    for form in FORMS:
        record = read_record(out / f"export-{form}")
        made_from = recorded_sha(record, "model") if record else None
        if record is None or made_from == model_sha:
            continue
        for sub in (f"export-{form}", f"eval-{form}", "compare"):
            if (out / sub).exists():
                shutil.rmtree(out / sub)
        with open(log_path, "a", encoding="utf-8") as fh:
            fh.write(f"# export-{form} was made from other weights (sha256 {str(made_from)[:12]}, "
                     f"now {model_sha[:12]}): exported and scored again\n")


def measure(args) -> dict:
    out = ROOT / "runs" / "int8-tables" / args.name
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / "benchmark.log"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cli = [sys.executable, "-m", "paddleqa.cli"]
    row = {"name": args.name, "model": args.model, "data": args.data, "bundles": {}}
    _drop_stale(out, sha256_path(ROOT / args.model), log_path)
    for form in FORMS:
        exp = out / f"export-{form}"
        if not (exp / "manifest.json").exists():
            run_logged(cli + ["export", args.model, "--out", str(exp), "--targets", "arm,x86",
                              "--embeddings", form], env, log_path)
        m = json.loads((exp / "metrics.json").read_text(encoding="utf-8"))
        row["bundles"][form] = {k: v["bytes"] for k, v in m["bundles"].items()}
        if form == "int8":
            row["tables"] = m["embedding_tables"]
        ev = out / f"eval-{form}"
        if not (ev / "metrics.json").exists():
            run_logged(cli + ["evaluate", str(exp / "x86-fp32" / "model.nb"), args.data, "--out",
                              str(ev), "--no-progress"], env, log_path)
        e = json.loads((ev / "metrics.json").read_text(encoding="utf-8"))
        row[f"{form}_em"], row[f"{form}_f1"], row["questions"] = e["em"], e["f1"], e["total"]
    run_logged(cli + ["compare", args.data, str(out / "eval-int8" / "predictions.json"),
                      str(out / "eval-fp32" / "predictions.json"), "--out", str(out / "compare"),
                      "--name-a", "int8 tables", "--name-b", "fp32 tables"], env, log_path)
    cmp = json.loads((out / "compare" / "compare.json").read_text(encoding="utf-8"))
    row["f1_delta"], row["agreement"] = cmp["f1_delta"], cmp["agreement"]
    record = json.loads((ROOT / args.record).read_text(encoding="utf-8")) if (ROOT / args.record).exists() else {}
    rows = [r for r in record.get("rows", []) if r["name"] != args.name] + [row]
    return {"command": "python benchmarks/int8_tables.py " + " ".join(sys.argv[1:]),
            "machine": machine_info(), "rows": rows, "record": args.record}


def render(r: dict) -> str:
    m = r["machine"]
    lines = [
        "## int8 embedding tables in Paddle Lite",
        "",
        f"Last produced by `{r['command'].strip()}` (raw record: `{r['record']}`; rows of earlier "
        f"calls are kept). Machine: {m['cpu']} ({m['cores']} cores), paddlelite {m['paddlelite']}. "
        "Each model is exported twice by `paddleqa export`: fp32 tables (Lite's default: `opt` "
        "keeps lookup tables fp32) and `--embeddings int8` (an int8 table + a per-row scale, "
        "dequantised in the graph). Both x86 `.nb` files are scored with the official CMRC 2018 "
        "metric on the questions named; the F1 change is paired over the same questions with a "
        "bootstrap 95% interval. The ARM files are the same graphs (no ARM runtime here).",
        "",
        "| model | questions | tables (rows x width) | ARM .nb fp32 -> int8 tables | x86 .nb fp32 -> int8 tables "
        "| F1 fp32 tables | F1 int8 tables | F1 change [95% CI] | same answer |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    mib = lambda b: f"{b / 2**20:.2f} MiB"  # noqa: E731
    for x in r["rows"]:
        b32, b8 = x["bundles"]["fp32"], x["bundles"]["int8"]
        tables = ", ".join(f"{t['rows']:,}x{t['width']}" for t in x["tables"]["tables"])
        d = x["f1_delta"]
        lo, hi = d["ci95"]
        lines.append(
            f"| {x['name']} | {x['questions']:,} from `{Path(x['data']).name}` | {tables} | "
            f"{mib(b32['arm-fp32'])} -> {mib(b8['arm-fp32'])} ({b32['arm-fp32'] / b8['arm-fp32']:.2f}x smaller) | "
            f"{mib(b32['x86-fp32'])} -> {mib(b8['x86-fp32'])} | {x['fp32_f1']:.2f} | {x['int8_f1']:.2f} | "
            f"{d['delta']:+.2f} [{lo:+.2f}, {hi:+.2f}] | {x['agreement']:.1%} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="", help="a model folder (or a stage folder holding model/)")
    ap.add_argument("--data", default="", help="questions to score on (a validation split)")
    ap.add_argument("--name", default="", help="the row's name (default: the model folder's parent)")
    ap.add_argument("--out", default="BENCHMARKS.md")
    ap.add_argument("--record", default=RECORD, help="raw JSON record")
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args(argv)
    if not args.report_only and not (args.model and args.data):
        ap.error("--model and --data are required (or --report-only)")
    args.name = args.name or Path(args.model).resolve().parent.name
    record_main(args.report_only, ROOT / args.record, "int8-tables", lambda: measure(args),
                render, ROOT / args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
