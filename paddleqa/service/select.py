"""Which artifact to serve when given a whole run: the deployed model's fastest measured form.

``paddleqa serve RUN_DIR`` (a ``paddleqa run`` folder) serves the form of the run's deployed
model that its bench stage measured fastest at one thread: the model folder itself, one of its
fp32 exports (Paddle Inference, ONNX Runtime, Lite x86), which answer as the model does (export
is tested to agree), or one of its int8 forms (the quantize stage's Paddle Inference model, the
ONNX Runtime int8 export) -- these answer differently, so one is a candidate only when the bench
scored it and its F1 is at most ``int8_max_f1_drop`` points below the best-scored fp32 form's on
the same file (a negative value keeps to fp32). A plain artifact path is served as it is.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

from ..core.errors import PaddleQAError
from ..runtime.layout import LAYOUT_FILE, RunLayout, same_path

log = logging.getLogger(__name__)


def _same_model_forms(run_dir: Path, layout: RunLayout) -> list[Path]:
    """The deployed model's folder and the fp32 artifacts of its export folders."""
    forms = [run_dir / layout.deployed_model] if layout.deployed_model else []
    for _, folder in layout.export_folders(run_dir, "deployed"):
        forms += [folder / "inference", folder / "onnx", folder / "x86-fp32"]
    return forms


def _int8_forms(run_dir: Path, layout: RunLayout) -> list[Path]:
    """The deployed model's int8 forms that run here (an int8 Lite .nb does not on x86)."""
    forms = [folder / "onnx" / "model.int8.onnx" for _, folder in layout.export_folders(run_dir, "deployed")]
    quantize = layout.folder(run_dir, "quantize")
    if quantize is not None:
        forms.append(quantize / "inference")
    return forms


def _latency(row: dict) -> float | None:
    settings = row.get("settings") or []
    return settings[-1].get("latency_ms_p50") if settings and "error" not in row else None


def _names(recorded: str, form: Path, run_dir: Path) -> bool:
    """Whether the bench's recorded artifact path (relative to wherever the run was started, or
    absolute) is ``form``, a path inside ``run_dir``."""
    if same_path(recorded, form):
        return True
    tail = f"{run_dir.resolve().name}/{form.relative_to(run_dir).as_posix()}"
    return Path(recorded).as_posix().rstrip("/").endswith(tail)


def fastest_artifact(run_dir: str | Path, int8_max_f1_drop: float = -1.0) -> tuple[str, dict]:
    """(path, facts) of the deployed model's fastest measured form in a run folder: fp32 forms,
    and int8 forms scored within ``int8_max_f1_drop`` F1 points of the fp32 ones (< 0: none)."""
    run_dir = Path(run_dir)
    layout = RunLayout.read(run_dir)
    bench_file = layout.file(run_dir, "bench_results")
    if bench_file is None or not bench_file.exists():
        raise PaddleQAError(f"{run_dir} has no bench results to choose the fastest artifact from: run "
                            "`paddleqa run CONFIG --only bench`, or serve an artifact's path")
    rows = [r for r in json.loads(bench_file.read_text(encoding="utf-8")).get("rows", [])
            if r.get("threads") == 1 and _latency(r) is not None]

    def measured_rows(forms: list[Path]) -> list[tuple[dict, Path]]:
        return [(row, form) for form in forms for row in rows if _names(row["artifact"], form, run_dir)]

    forms = _same_model_forms(run_dir, layout)
    fp32 = measured_rows(forms)
    if not fp32:
        raise PaddleQAError(f"{bench_file} times none of the deployed model's forms ({', '.join(map(str, forms))}); "
                            "re-run the bench stage, or serve an artifact's path")
    chosen, rejected = list(fp32), {}
    fp32_f1 = max((r["dev_f1"] for r, _ in fp32 if r.get("dev_f1") is not None), default=None)
    if int8_max_f1_drop >= 0:
        for row, form in measured_rows(_int8_forms(run_dir, layout)):
            if fp32_f1 is None or row.get("dev_f1") is None:
                rejected[str(form)] = "not scored next to an fp32 form"
            elif fp32_f1 - row["dev_f1"] > int8_max_f1_drop:
                rejected[str(form)] = f"F1 {row['dev_f1']:.2f} vs fp32 {fp32_f1:.2f}"
            else:
                chosen.append((row, form))
    row, form = min(chosen, key=lambda rf: _latency(rf[0]))
    facts = {"served": str(form), "backend": row.get("backend"), "precision": row.get("precision", "fp32"),
             "latency_ms_p50": _latency(row), "dev_f1": row.get("dev_f1"), "fp32_dev_f1": fp32_f1,
             "candidates": {str(f): _latency(r) for r, f in sorted(chosen, key=lambda rf: _latency(rf[0]))},
             "int8_rejected": rejected}
    log.info("serving %s (%s %s, %.2f ms p50 at one thread): the fastest of %d measured forms of %s%s",
             form, row.get("backend"), facts["precision"], _latency(row), len(chosen),
             layout.deployed_model, "".join(f"; int8 {f} left out: {why}" for f, why in rejected.items()))
    return str(form), facts


def served_artifact(artifact: str | Path, int8_max_f1_drop: float = -1.0) -> str:
    """``artifact`` itself, or for a run folder its deployed model's fastest measured form."""
    if Path(artifact, LAYOUT_FILE).is_file():
        return fastest_artifact(artifact, int8_max_f1_drop)[0]
    return str(artifact)
