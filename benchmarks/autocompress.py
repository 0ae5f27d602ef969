"""The autocompress frontier of a trained teacher, written to BENCHMARKS.md by the command.

    python benchmarks/autocompress.py CONFIG [paddleqa autocompress flags ...]
    python benchmarks/autocompress.py --report-only

Runs ``paddleqa autocompress CONFIG FLAGS...`` (the teacher of CONFIG must be trained; the search
is resumable: timed plans come from this machine's latency table and finished trials are kept),
then keeps its metrics and frontier as ``benchmarks/autocompress.json`` and writes the
"autocompress" section of BENCHMARKS.md: the budget, the chosen plan, the frontier table with
intervals, the teacher it was searched for, the machine and the command line.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.report import machine_info, record_main, run_logged  # noqa: E402

RECORD = ROOT / "benchmarks" / "autocompress.json"


def measure(argv: list[str]) -> dict:
    from paddleqa import pipeline
    from paddleqa.core.config import merge, parse_overrides, read_yaml

    sets = [argv[i + 1] for i, a in enumerate(argv) if a == "--set"]
    doc = merge(read_yaml(argv[0]), parse_overrides(sets))
    run_dir = Path(doc["run_dir"])
    out = Path(next((argv[i + 1] for i, a in enumerate(argv) if a == "--out"),
                    (doc.get("autocompress") or {}).get("out_dir") or run_dir / "autocompress"))
    out.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "paddleqa.cli", "autocompress", *argv]
    seconds = run_logged(cmd, {**os.environ, "PYTHONUNBUFFERED": "1"}, out / "benchmark.log")
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    teacher = pipeline.build_plan({k: v for k, v in doc.items() if k != "autocompress"},
                                  enable=("distill",)).distill.teacher
    return {"command": "python benchmarks/autocompress.py " + " ".join(argv), "machine": machine_info(),
            "teacher": teacher, "wall_seconds": round(seconds, 1), "metrics": metrics,
            "frontier_md": (out / "frontier.md").read_text(encoding="utf-8"),
            "frontier": json.loads((out / "frontier.json").read_text(encoding="utf-8"))}


def render(r: dict) -> str:
    m, x = r["machine"], r["metrics"]
    body = r["frontier_md"].split("\n", 2)[2]  # the table page without its title line
    gain = x.get("kd_gain") or {}
    gain_text = (f"{gain['delta']:+.2f} F1 [{gain['ci95'][0]:+.2f}, {gain['ci95'][1]:+.2f}]"
                 if gain.get("delta") is not None else "not measured")
    return "\n".join([
        "## Auto-compression: the frontier for a budget",
        "",
        f"Last produced by `{r['command']}` in {r['wall_seconds'] / 60:.0f} min on {m['cpu']} "
        f"({m['cores']} cores), paddlepaddle {m.get('paddlepaddle', '?')}, paddlelite "
        f"{m.get('paddlelite', '?')} (raw record: `benchmarks/autocompress.json`). Teacher: "
        f"`{r['teacher']}` (validation F1 {x['teacher_validation_f1']:.2f}). Budget: {x['budget']}; "
        f"{x['plans']} plans timed with random weights, {x['inside_budget']} inside the budget, "
        f"{x['trained']} shapes trained. F1 is on the run's validation split (dev is never read by "
        "the search); intervals are paired bootstrap 95% over the same questions. Chosen: "
        f"**{x['chosen']}** ({x['speedup']:.2f}x faster, {x['smaller']:.1f}x smaller, validation "
        f"F1 {x['validation_f1']:.2f}; criterion met: {x['criterion_met']}); KD gain {gain_text}.",
        "",
        body.strip(),
        "",
    ])


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    report_only = argv == ["--report-only"]
    if not report_only and (not argv or argv[0].startswith("-")):
        print(__doc__, file=sys.stderr)
        return 2
    record_main(report_only, RECORD, "autocompress", lambda: measure(argv), render, ROOT / "BENCHMARKS.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
