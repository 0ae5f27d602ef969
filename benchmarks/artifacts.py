"""Artifact benchmark: export and quantize the best compressed student, score every artifact.

    python benchmarks/artifacts.py [--student DIR] [--config configs/cmrc2018.yaml] [--qat]
    python benchmarks/artifacts.py --report-only

The student defaults to the one with the highest dev F1 in ``benchmarks/compress.json``. The
command runs the user-facing CLI: ``paddleqa export`` (arm + x86, fp32 and opt's weight-only
int8), ``paddleqa quantize --method ptq`` (and ``qat`` with ``--qat``), ``paddleqa export
--inference-model`` for the int8 PTQ graph, then ``paddleqa evaluate`` on CMRC 2018 dev for every
artifact that runs on this machine. ARM files get their size and op report only (no ARM runtime
here); artifacts whose logits are NaN are listed as refused, with the reason. Writes the
"Artifacts" section of BENCHMARKS.md and ``benchmarks/artifacts.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.report import machine_info, record_main, run_logged  # noqa: E402

RECORD = "benchmarks/artifacts.json"


def best_student(run_dir: Path) -> Path:
    rec = json.loads((ROOT / "benchmarks" / "compress.json").read_text(encoding="utf-8"))
    rows = [r for r in rec["rows"] if r["name"] != "teacher"]
    if not rows:
        sys.exit("benchmarks/compress.json has no students: run benchmarks/compress.py first")
    best = max(rows, key=lambda r: r["dev_f1"])
    return run_dir / "students" / best["name"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/cmrc2018.yaml")
    ap.add_argument("--student", default="", help="model folder (default: best student of compress.json)")
    ap.add_argument("--qat", action="store_true", help="also quantization-aware training")
    ap.add_argument("--threads", type=int, default=1, help="threads for every scoring and timing run")
    ap.add_argument("--repeats", type=int, default=20, help="timed batch-1 runs per artifact")
    ap.add_argument("--out", default="BENCHMARKS.md")
    ap.add_argument("--record", default=RECORD, help="raw JSON record")
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args(argv)
    record_main(args.report_only, ROOT / args.record, "artifacts",
                lambda: {**measure(args), "record": args.record}, render, ROOT / args.out)
    return 0


def measure(args) -> dict:
    from paddleqa import pipeline
    from paddleqa.core.config import read_yaml

    doc = read_yaml(ROOT / args.config)
    run_dir = ROOT / doc["run_dir"]
    dev = pipeline.build_plan(doc, enable=("distill",)).distill.dev_file
    student = Path(args.student) if args.student else best_student(run_dir)
    if (student / "model").is_dir():
        student = student / "model"
    out = run_dir / "artifacts"
    log_path = run_dir / "artifacts.log"
    env = {**os.environ, "MKL_DEBUG_CPU_TYPE": os.environ.get("MKL_DEBUG_CPU_TYPE", "5"),
           "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads),
           "PYTHONUNBUFFERED": "1"}
    cli = [sys.executable, "-m", "paddleqa.cli"]
    run_logged(cli + ["export", str(student), "--out", str(out / "export"), "--targets", "arm,x86",
                "--precision", "fp32,int8"], env, log_path)
    methods = ["ptq"] + (["qat"] if args.qat else [])
    for method in methods:
        run_logged(cli + ["quantize", str(student), "--out", str(out / method), "--method", method,
                    "--no-progress"], env, log_path)
        run_logged(cli + ["export", str(student), "--inference-model", str(out / method / "inference" / "model"),
                    "--out", str(out / f"export-{method}"), "--targets", "arm,x86"], env, log_path)
    export_m = json.loads((out / "export" / "metrics.json").read_text(encoding="utf-8"))
    artifacts = [
        ("dygraph fp32", student, "dygraph", "fp32", "source"),
        ("inference fp32", out / "export" / "inference", "paddle-inference", "fp32", "export"),
        ("lite-x86 fp32", out / "export" / "x86-fp32" / "model.nb", "lite-x86", "fp32", "export"),
        ("lite-x86 int8 weight-only", out / "export" / "x86-int8" / "model.nb", "lite-x86", "int8-weights", "export"),
        ("lite-arm fp32", out / "export" / "arm-fp32" / "model.nb", "lite-arm", "fp32", "export"),
        ("lite-arm int8 weight-only", out / "export" / "arm-int8" / "model.nb", "lite-arm", "int8-weights", "export"),
    ]
    for method in methods:
        artifacts += [
            (f"inference int8 {method}", out / method / "inference", "paddle-inference", f"int8-{method}", method),
            (f"lite-x86 int8 {method}", out / f"export-{method}" / "x86-int8" / "model.nb", "lite-x86", f"int8-{method}", method),
            (f"lite-arm int8 {method}", out / f"export-{method}" / "arm-int8" / "model.nb", "lite-arm", f"int8-{method}", method),
        ]
    rows = [_score(name, path, backend, precision, origin, out, export_m, dev, cli, env, log_path)
            for name, path, backend, precision, origin in artifacts]
    _time(rows, args)
    ref = next(r for r in rows if r["name"] == "dygraph fp32")
    for r in rows:
        if "dev_f1" in r:
            r["f1_delta"] = round(r["dev_f1"] - ref["dev_f1"], 3)
    return {"command": "python benchmarks/artifacts.py " + " ".join(sys.argv[1:]),
            "machine": machine_info(), "threads": args.threads, "student": str(student),
            "dev_file": dev, "rows": rows}


def _score(name: str, path: Path, backend: str, precision: str, origin: str, out: Path,
           export_m: dict, dev: str, cli: list[str], env: dict[str, str], log_path: Path) -> dict:
    """One artifact's row: its size, and its dev score (a child process) or why it has none."""
    row = {"name": name, "path": str(path), "backend": backend, "precision": precision,
           "origin": origin, "file_bytes": _size(path)}
    if backend == "lite-arm":
        report = export_m if origin == "export" else json.loads(
            (out / f"export-{origin}" / "metrics.json").read_text(encoding="utf-8"))
        key = "arm-fp32" if precision == "fp32" else "arm-int8"
        rep = report["op_report"][key]
        row.update(status="not runnable here (no ARM runtime on x86)",
                   ops=f"{rep['ops_before']} -> {rep['ops_after']}", fc=rep["ops"].get("fc", 0))
        return row
    ev = out / "eval" / name.replace(" ", "_")
    cmd = cli + ["evaluate", str(path), dev, "--out", str(ev), "--no-progress"]
    print("+", " ".join(cmd), flush=True)
    with open(log_path, "a", encoding="utf-8") as log:
        res = subprocess.run(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=log, text=True)
    if res.returncode != 0:
        err = (ev / "error.txt")
        msg = _last_error(log_path)
        row.update(status=f"refused: {msg}")
        err.parent.mkdir(parents=True, exist_ok=True)
        err.write_text(msg + "\n", encoding="utf-8")
    else:
        m = json.loads((ev / "metrics.json").read_text(encoding="utf-8"))
        row.update(status="scored", dev_em=m["em"], dev_f1=m["f1"], total=m["total"],
                   predict_seconds=m["predict_seconds"])
    return row


def _time(rows: list[dict], args) -> None:
    """Latency side by side (batch 1, seq 384, one child process per artifact), and int8 on fc
    only vs on every op MKLDNN supports; added to ``rows``."""
    from paddleqa.runtime.bench import BenchConfig, run as bench

    runnable = [r for r in rows if r["status"] == "scored"]
    timing = bench(BenchConfig(artifacts=[r["path"] for r in runnable], seq_lens=[384],
                               threads=[args.threads], repeats=args.repeats))
    for r, b in zip(runnable, timing["rows"]):
        s = (b.get("settings") or [{}])[0]
        r.update(latency_ms_p50=s.get("latency_ms_p50"), latency_ms_p90=s.get("latency_ms_p90"),
                 peak_rss_mib=b.get("peak_rss_mib"), flop_floor_ms=s.get("flop_floor_ms"))
    int8 = [r for r in runnable if r["backend"] == "paddle-inference" and r["precision"].startswith("int8")]
    if int8:
        full = bench(BenchConfig(artifacts=[r["path"] for r in int8], seq_lens=[384],
                                 threads=[args.threads], repeats=args.repeats, int8_ops=["all"]))
        for r, b in zip(int8, full["rows"]):
            r["latency_ms_p50_all_ops_int8"] = (b.get("settings") or [{}])[0].get("latency_ms_p50")


def _size(path: Path) -> int | None:
    p = Path(path)
    if p.is_file():
        return p.stat().st_size
    if p.is_dir():
        files = [f for f in p.iterdir() if f.suffix in (".pdparams", ".pdiparams", ".pdmodel", ".nb")]
        return sum(f.stat().st_size for f in files)
    return None


def _ms(v) -> str:
    return "" if v is None else f"{v:.1f}"


def _last_error(log_path: Path) -> str:
    lines = [ln for ln in log_path.read_text(encoding="utf-8", errors="replace").splitlines()
             if ln.startswith("error: ")]
    return lines[-1][len("error: "):] if lines else "failed (see the log)"


def render(r: dict) -> str:
    m = r["machine"]
    lines = [
        "## Artifacts: the best student exported and quantized",
        "",
        f"Produced by `{r['command'].strip()}` (raw record: `{r.get('record', RECORD)}`). Machine: {m['cpu']} "
        f"({m['cores']} cores), {r['threads']} thread(s) per scoring run, paddlelite "
        f"{m['paddlelite']}. Source: `{Path(r['student']).relative_to(ROOT) if Path(r['student']).is_relative_to(ROOT) else r['student']}`; "
        f"every runnable artifact scored on `{Path(r['dev_file']).name}` "
        f"({next((x['total'] for x in r['rows'] if 'total' in x), '?'):,} questions) with the "
        "official CMRC 2018 metric. x86 Lite returns NaN for int8 `.nb` files (a Paddle Lite "
        "limitation): those rows are refused, not scored; their ARM twins are the shippable files.",
        "",
        "| artifact | backend | precision | size | dev EM | dev F1 | F1 vs dygraph | p50 ms (b1, seq 384) | note |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for row in r["rows"]:
        size = row.get("file_bytes")
        note = "" if row["status"] == "scored" else row["status"].split(", so no score")[0]
        if row["backend"] == "lite-arm":
            note = f"{row['status']}; ops {row['ops']}, {row['fc']} fused fc"
        lines.append(
            f"| {row['name']} | {row['backend']} | {row['precision']} | "
            f"{'' if size is None else f'{size / 2**20:.2f} MiB'} | "
            f"{row['dev_em']:.2f} | {row['dev_f1']:.2f} | {row['f1_delta']:+.2f} | "
            f"{_ms(row.get('latency_ms_p50'))} | {note} |"
            if "dev_f1" in row else
            f"| {row['name']} | {row['backend']} | {row['precision']} | "
            f"{'' if size is None else f'{size / 2**20:.2f} MiB'} |  |  |  |  | {note} |")
    scored = [x for x in r["rows"] if "f1_delta" in x]
    fp = [x for x in scored if x["precision"] == "fp32"]
    int8 = [x for x in scored if x["precision"].startswith("int8-")]
    ok_fp = all(abs(x["f1_delta"]) <= 0.2 for x in fp)
    ok_int8 = bool(int8) and all(abs(x["f1_delta"]) <= 1.0 for x in int8)
    for x in int8:
        if x.get("latency_ms_p50_all_ops_int8") is not None:
            lines += ["", f"{x['name']}: int8 on `fc` only {_ms(x.get('latency_ms_p50'))} ms vs int8 on "
                      f"every op MKLDNN supports {_ms(x['latency_ms_p50_all_ops_int8'])} ms (batch 1, "
                      f"seq 384); the default scoring and serving setting is `fc` only."]
    lines += ["", f"Targets: every runnable fp32 artifact within 0.2 F1 of its source -- "
              f"{'met' if ok_fp else 'not met'}; int8 PTQ within 1.0 F1 -- "
              f"{'met' if ok_int8 else 'not met'}."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
