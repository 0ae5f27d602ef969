"""``paddleqa report RUN_DIR``: the stage table and a Pareto plot, built from the run's manifests.

Nothing in the report is typed by hand: every number comes from a stage's ``metrics.json`` or the
bench results, found through the run's layout (``RUN_DIR/layout.json``, ``runtime.layout``).
Rows follow one schema (also written as ``results.json``): ``name``, ``source`` (the row it was
derived from), ``backend``, ``precision``, ``params``, ``flops``, ``file_bytes``,
``latency_ms_p50`` (batch 1, the bench's window length, 1 thread; null where it cannot run here),
``dev_em``, ``dev_f1`` and ``f1_retention`` (vs the teacher).
"""
from __future__ import annotations

import dataclasses
import html
import json
import logging
import time
from pathlib import Path

from ..core.config import opt
from ..core.errors import PaddleQAError
from ..core.io import atomic_write_text, write_json
from .compare import markdown_html
from .layout import MODEL_STAGES, RunLayout, same_path
from .significance import add_intervals, compare_students

log = logging.getLogger(__name__)


@dataclasses.dataclass
class ReportConfig:
    """Render RUN_DIR's results as Markdown + HTML with a Pareto plot."""

    run_dir: str = opt("", help="a `paddleqa run` folder")
    out_dir: str = opt("", help="where report.md, report.html, pareto.png, results.json go "
                       "('' = the run layout's report folder, RUN_DIR/report)")

    def __post_init__(self) -> None:
        if not self.run_dir:
            raise ValueError("run_dir is required")


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except ValueError as exc:
        raise PaddleQAError(f"{path}: not valid JSON ({exc}); re-run the stage that wrote it") from None


TEACHER_BASELINE = "teacher "  # name prefix of the rows of the teacher's own exported graph


def is_teacher_baseline(row: dict) -> bool:
    """A row of the teacher's own exported graph (timed as the latency baseline, not scored)."""
    return row.get("source") == "teacher" and row["name"].startswith(TEACHER_BASELINE)


def _export_rows(exp: dict, folder: Path, prefix: str, source: str | None,
                 note: str | None = None) -> list[dict]:
    """Rows of one export folder's metrics: the inference model, each Lite bundle, the ONNX file."""
    files = [("inference fp32", "paddle-inference", "fp32", folder / "inference",
              exp.get("inference_model_bytes"))]
    for b, info in exp["bundles"].items():
        target, precision = b.split("-", 1)
        files.append((f"lite {b}", f"lite-{target}", precision, Path(info["path"]).parent, info["bytes"]))
    if exp.get("onnx"):
        files.append(("onnx fp32", "onnxruntime", "fp32", Path(exp["onnx"]["path"]).parent,
                      exp["onnx"]["bytes"]))
        if exp["onnx"].get("int8"):  # ONNX Runtime's dynamic int8 of the same graph
            files.append(("onnx int8", "onnxruntime", "int8", Path(exp["onnx"]["int8"]["path"]),
                          exp["onnx"]["int8"]["bytes"]))
    rows = [{"name": prefix + name, "source": source, "backend": backend, "precision": precision,
             "path": str(path), "params": exp.get("params"), "file_bytes": size}
            for name, backend, precision, path, size in files]
    if note:
        for r in rows:
            r["note"] = note
    return rows


def collect_rows(run_dir: Path, layout: RunLayout | None = None) -> list[dict]:
    """One row per model or artifact of the run, from its metrics files; the folders come from
    the run's layout (``RUN_DIR/layout.json``, written by ``paddleqa run``)."""
    run_dir = Path(run_dir)
    layout = layout or RunLayout.read(run_dir)
    rows = _model_rows(run_dir, layout)
    # The teacher's own exported graph (pipeline bench baseline): timed, not scored again.
    for _, folder in layout.export_folders(run_dir, "teacher_baseline"):
        ext = _read(folder / "metrics.json")
        if ext:
            rows += _export_rows(ext, folder, TEACHER_BASELINE, "teacher",
                                 "latency baseline: the teacher's own graph (export is tested to agree with it)")
    quantize = layout.folder(run_dir, "quantize")
    q = _read(quantize / "metrics.json") if quantize else None
    for _, folder in layout.export_folders(run_dir, "deployed"):
        exp = _read(folder / "metrics.json")
        if exp:
            rows += _export_rows(exp, folder, "", layout.deployed)
    rows += _int8_rows(run_dir, layout, q)
    by_name = {r["name"]: r for r in rows}
    for r in rows:  # derived artifacts inherit their source's params/FLOPs when not recorded
        src = by_name.get(r.get("source") or "")
        if src:
            for k in ("params", "flops"):
                if r.get(k) is None:
                    r[k] = src.get(k)
    bench_file = layout.file(run_dir, "bench_results")
    bench = (_read(bench_file) if bench_file else None) or {"rows": []}
    for r in rows:
        _add_bench(r, bench["rows"])
    t_f1 = rows[0].get("dev_f1")
    for r in rows:
        r.setdefault("dev_em", None)
        r.setdefault("dev_f1", None)
        r["f1_retention"] = round(r["dev_f1"] / t_f1, 4) if r["dev_f1"] is not None and t_f1 else None
    return rows


def _model_rows(run_dir: Path, layout: RunLayout) -> list[dict]:
    """The teacher (scored by the evaluate stage when it ran) and each trained student."""
    teacher_dir = layout.folder(run_dir, "finetune")
    teacher = _read(teacher_dir / "metrics.json")
    if teacher is None:
        raise PaddleQAError(f"{run_dir} has no {layout.folders['finetune']}/metrics.json: is it a "
                            "`paddleqa run` folder whose finetune stage finished?")
    evaluate = layout.folder(run_dir, "evaluate")
    ev = (_read(evaluate / "metrics.json") if evaluate else None) or {}
    models = {"teacher": (teacher, None)}
    for name in ("distill", "prune"):
        folder = layout.folder(run_dir, MODEL_STAGES[name])
        m = _read(folder / "metrics.json") if folder else None
        if m is not None:  # a pruned student (student_params in its metrics) came from distill
            pruned_student = name == "prune" and "student_params" in m and "distill" in models
            models[name] = (m, "distill" if pruned_student else "teacher")
    rows = []
    for name, (m, source) in models.items():
        folder = layout.folder(run_dir, MODEL_STAGES[name])
        preds = folder / "dev_predictions.json"
        if name == "teacher" and ev and (evaluate / "predictions.json").exists():
            preds = evaluate / "predictions.json"  # the scores in the row are the evaluate stage's
        rows.append({
            "name": name, "source": source, "backend": "dygraph", "precision": "fp32",
            "path": str(layout.model_dir(run_dir, name)), "params": m.get("params"),
            "flops": m.get("flops_per_query", m.get("flops_per_query_384")),
            "file_bytes": m.get("model_bytes"),
            "dev_em": ev.get("em", m.get("dev_em")) if name == "teacher" else m.get("dev_em"),
            "dev_f1": ev.get("f1", m.get("dev_f1")) if name == "teacher" else m.get("dev_f1"),
            **({"predictions": str(preds)} if preds.exists() else {}),
        })
    return rows


def _int8_rows(run_dir: Path, layout: RunLayout, q: dict | None) -> list[dict]:
    """The quantize stage's model (the int8 inference graph, or the k-means codebooks) and the
    Lite bundles of its int8 graph."""
    rows = []
    quantize, deployed = layout.folder(run_dir, "quantize"), layout.deployed
    if q and q.get("method") in ("ptq", "qat"):
        rows.append({"name": f"int8 {q['method']}", "source": deployed, "backend": "paddle-inference",
                     "precision": "int8", "path": str(quantize / "inference"),
                     "file_bytes": q.get("file_bytes"), "dev_em": q.get("quantized_em"),
                     "dev_f1": q.get("quantized_f1")})
        if q.get("quantized_all_f1") is not None:
            rows[-1]["note"] = (f"dev F1 with int8 {'/'.join(q['int8_ops'])}; with every "
                                f"scaled op in int8 (int8_ops=all): {q['quantized_all_f1']:.2f}")
        preds = quantize / "eval_quantized" / "predictions.json"
        if preds.exists():
            rows[-1]["predictions"] = str(preds)
    for _, folder in layout.export_folders(run_dir, "int8"):
        exp8 = _read(folder / "metrics.json")
        for b, info in (exp8 or {}).get("bundles", {}).items():
            target, precision = b.split("-", 1)
            rows.append({"name": f"lite {b} ({q['method'] if q else 'int8'})",
                         "source": f"int8 {q['method']}" if q else deployed,
                         "backend": f"lite-{target}", "precision": precision,
                         "path": str(Path(info["path"]).parent), "file_bytes": info["bytes"]})
    if q and q.get("method") == "kmeans":
        rows.append({"name": "kmeans", "source": deployed, "backend": "dygraph",
                     "precision": f"{q['clusters_per_matrix']}-centroid codebooks",
                     "path": str(quantize / "model"), "file_bytes": q.get("stored_bytes"),
                     "dev_em": q.get("quantized_em"), "dev_f1": q.get("quantized_f1")})
    return rows


def _add_bench(r: dict, bench_rows: list[dict]) -> None:
    """Latency and scores the bench stage measured (1 thread) for row ``r``, and the notes of
    artifacts that cannot run here."""
    r.setdefault("latency_ms_p50", None)
    for b in bench_rows:
        if b.get("threads") == 1 and same_path(b["artifact"], r["path"]) and b.get("settings"):
            s = b["settings"][-1]
            r["latency_ms_p50"] = s.get("latency_ms_p50")
            r["seq_len"] = s.get("seq_len")
            r["peak_rss_mib"] = b.get("peak_rss_mib")
            if b.get("dev_f1") is not None and r.get("dev_f1") is None:
                r["dev_em"], r["dev_f1"] = b.get("dev_em"), b.get("dev_f1")
                if b.get("predictions") and Path(b["predictions"]).exists():
                    r["predictions"] = b["predictions"]
            if b.get("score_error"):
                r["note"] = "not scored: " + b["score_error"].split(", so no score")[0]
    if r["backend"] == "lite-arm":
        r["note"] = "ARM: no runtime on this x86 machine; see its x86 twin"
    elif r["backend"] == "lite-x86" and r["precision"].startswith("int8") and r.get("latency_ms_p50") is None:
        r["note"] = ("not run: x86 Lite returns NaN for int8 .nb files; its accuracy is "
                     "estimated by its Paddle Inference twin's score(s), the ARM file is the "
                     "one to ship")


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of points no other point beats on both axes (lower x, higher y)."""
    front = []
    for i, (x, y) in enumerate(points):
        if not any((x2 <= x and y2 >= y) and (x2 < x or y2 > y) for j, (x2, y2) in enumerate(points) if j != i):
            front.append(i)
    return front


def plot(rows: list[dict], path: Path) -> bool:
    """F1 vs latency and F1 vs file size, Pareto front joined; False when nothing to plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("latency_ms_p50", "batch-1 latency (ms, 1 thread)"), ("file_bytes", "file size (MiB)")]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    drawn = False
    teacher_f1 = rows[0].get("dev_f1") if rows and rows[0]["name"] == "teacher" else None
    for ax, (key, label) in zip(axes, panels):
        # The teacher's exported baselines are the teacher's own graph: drawn (hollow) at its F1.
        pts = [(r[key] / (2**20 if key == "file_bytes" else 1),
                r["dev_f1"] if r.get("dev_f1") is not None else teacher_f1, r["name"],
                r.get("dev_f1") is None, r.get("dev_f1_ci95")) for r in rows
               if r.get(key) is not None and (r.get("dev_f1") is not None or (
                   teacher_f1 is not None and is_teacher_baseline(r)))]
        if not pts:
            ax.text(0.5, 0.5, "no measured points", ha="center", va="center", transform=ax.transAxes)
            ax.set_xlabel(label)
            continue
        drawn = True
        xs, ys, names, hollow, cis = zip(*pts)
        bars = [(x, y, ci) for x, y, h, ci in zip(xs, ys, hollow, cis) if ci and not h]
        if bars:  # 95% bootstrap interval of each scored point's F1
            ax.errorbar([b[0] for b in bars], [b[1] for b in bars], fmt="none", ecolor="tab:blue",
                        alpha=0.45, capsize=2, label="F1 95% CI",
                        yerr=[[b[1] - b[2][0] for b in bars], [b[2][1] - b[1] for b in bars]])
        ax.scatter([x for x, h in zip(xs, hollow) if not h], [y for y, h in zip(ys, hollow) if not h],
                   color="tab:blue", label="scored on dev")
        if any(hollow):
            ax.scatter([x for x, h in zip(xs, hollow) if h], [y for y, h in zip(ys, hollow) if h],
                       facecolors="none", edgecolors="tab:blue", label="teacher's graph (teacher F1)")
        # Stagger labels of nearby points so they stay readable.
        for i, (x, y, n, *_) in enumerate(sorted(pts, key=lambda p: (p[1], p[0]))):
            ax.annotate(n, (x, y), textcoords="offset points", xytext=(4, 4 - 11 * (i % 3)), fontsize=7)
        front = sorted(pareto_front(list(zip(xs, ys))), key=lambda i: xs[i])
        ax.plot([xs[i] for i in front], [ys[i] for i in front], color="tab:orange", lw=1.5,
                label="Pareto front")
        ax.set_xlabel(label)
        ax.set_ylabel("dev F1 (CMRC 2018 metric)")
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8, framealpha=0.85)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return drawn


def format_cell(v, kind: str) -> str:
    if v is None:
        return ""
    if kind == "int":
        return f"{v:,}"
    if kind == "mib":
        return f"{v / 2**20:.2f}"
    if kind == "mflops":
        return f"{v / 1e6:,.0f}"
    if kind == "pct":
        return f"{100 * v:.1f}%"
    if kind == "ci":
        return f"[{v[0]:.2f}, {v[1]:.2f}]"
    if kind == "pctci":
        return f"[{100 * v[0]:.1f}%, {100 * v[1]:.1f}%]"
    return f"{v:.2f}" if isinstance(v, float) else str(v)


COLUMNS = [("name", "model / artifact", "s"), ("source", "from", "s"), ("backend", "backend", "s"),
           ("precision", "precision", "s"), ("params", "params", "int"), ("flops", "MFLOPs per window", "mflops"),
           ("file_bytes", "size MiB", "mib"), ("latency_ms_p50", "p50 ms", "f"), ("dev_em", "dev EM", "f"),
           ("dev_f1", "dev F1", "f"), ("dev_f1_ci95", "F1 95% CI", "ci"), ("f1_retention", "F1 retention", "pct"),
           ("f1_retention_ci95", "retention 95% CI", "pctci"), ("note", "note", "s")]


def _dev_file(run_dir: Path, layout: RunLayout) -> str | None:
    """The dev file the run scored on (as the teacher's training stage recorded it)."""
    manifest = _read(layout.folder(run_dir, "finetune") / "manifest.json") or {}
    path = manifest.get("inputs", {}).get("dev_file", {}).get("path")
    return path if path and Path(path).is_file() else None


def _comparison_lines(comparisons: list[dict]) -> list[str]:
    if not comparisons:
        return []
    lines = ["", "## Each student against the teacher", "",
             "Paired differences on the same dev questions (teacher - student), 95% bootstrap intervals; "
             "each page breaks them down by question type, answer and context length, and error kind.", "",
             "| student | F1 difference | 95% CI | EM difference | 95% CI | same answer | page |",
             "| --- | ---: | --- | ---: | --- | ---: | --- |"]
    for c in comparisons:
        f1, em = c["f1_delta"], c["em_delta"]
        lines.append(f"| {c['name']} | {f1['delta']:+.2f} | {format_cell(f1['ci95'], 'ci')} | {em['delta']:+.2f} | "
                     f"{format_cell(em['ci95'], 'ci')} | {100 * c['agreement']:.1f}% | [{c['page']}]({c['page']}) |")
    return lines


def _markdown(rows: list[dict], note: str, comparisons: list[dict], has_plot: bool) -> str:
    md = ["# paddleqa run report", "", note, "",
          "| " + " | ".join(c[1] for c in COLUMNS) + " |",
          "| " + " | ".join("---" if c[2] == "s" else "---:" for c in COLUMNS) + " |"]
    for r in rows:
        md.append("| " + " | ".join(format_cell(r.get(k), kind) for k, _, kind in COLUMNS) + " |")
    md += _comparison_lines(comparisons)
    if has_plot:
        md += ["", "![F1 vs latency and size](pareto.png)"]
    return "\n".join(md) + "\n"


def _html(rows: list[dict], note: str, comparisons: list[dict], has_plot: bool) -> str:
    cells = "".join(f"<th>{html.escape(c[1])}</th>" for c in COLUMNS)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(format_cell(r.get(k), kind))}</td>" for k, _, kind in COLUMNS)
                   + "</tr>\n" for r in rows)
    students = markdown_html("\n".join(_comparison_lines(comparisons)))
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>paddleqa report</title>"
            "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
            "td:first-child,th:first-child{text-align:left}</style></head><body>"
            f"<h1>paddleqa run report</h1><p>{html.escape(note)}</p>"
            f"<table><tr>{cells}</tr>\n{body}</table>{students}"
            + ("<p><img src='pareto.png' alt='F1 vs latency and size'></p>" if has_plot else "")
            + "</body></html>\n")


def run(config: ReportConfig) -> dict:
    """Write report.md, report.html, pareto.png, results.json and a comparison page per student;
    returns paths and rows."""
    run_dir = Path(config.run_dir)
    if not run_dir.is_dir():
        raise PaddleQAError(f"run folder {run_dir} does not exist")
    layout = RunLayout.read(run_dir)
    out = Path(config.out_dir) if config.out_dir else layout.folder(run_dir, "report")
    out.mkdir(parents=True, exist_ok=True)
    rows = collect_rows(run_dir, layout)
    gold = _dev_file(run_dir, layout)
    comparisons = []
    if gold:
        add_intervals(rows, gold)
        comparisons = compare_students(rows, gold, out)
    has_plot = plot(rows, out / "pareto.png")
    write_json(out / "results.json", rows)
    stamp = time.strftime("%Y-%m-%d %H:%M")
    seq = next((r["seq_len"] for r in rows if r.get("seq_len")), None)
    note = (f"Generated {stamp} by `paddleqa report {run_dir}` from the run's metrics files. "
            f"Latency: batch 1, {seq or '?'} tokens, 1 thread (bench stage); empty cells were not "
            "measured (ARM files cannot run on x86; artifacts without a dev score were not scored). "
            "Intervals: 95% bootstrap over the dev questions; the retention interval resamples the "
            "student and the teacher together.")
    atomic_write_text(out / "report.md", _markdown(rows, note, comparisons, has_plot))
    atomic_write_text(out / "report.html", _html(rows, note, comparisons, has_plot))
    return {"report_md": str(out / "report.md"), "report_html": str(out / "report.html"),
            "pareto_png": str(out / "pareto.png") if has_plot else None,
            "results_json": str(out / "results.json"), "comparisons": comparisons, "rows": rows}
