"""Which artifact to serve when given a whole run: the deployed model's fastest measured form.

``paddleqa serve RUN_DIR`` (a ``paddleqa run`` folder) serves the form of the run's deployed
model that its bench stage measured fastest at one thread: the model folder itself, or one of its
fp32 exports (Paddle Inference, ONNX Runtime, Lite x86), which answer as the model does (export
is tested to agree). int8 artifacts are left out: they answer differently, so choosing them is
the user's call (serve their path). A plain artifact path is served as it is.
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


def fastest_artifact(run_dir: str | Path) -> tuple[str, dict]:
    """(path, facts) of the deployed model's fastest measured fp32 form in a run folder."""
    run_dir = Path(run_dir)
    layout = RunLayout.read(run_dir)
    bench_file = layout.file(run_dir, "bench_results")
    if bench_file is None or not bench_file.exists():
        raise PaddleQAError(f"{run_dir} has no bench results to choose the fastest artifact from: run "
                            "`paddleqa run CONFIG --only bench`, or serve an artifact's path")
    rows = json.loads(bench_file.read_text(encoding="utf-8")).get("rows", [])
    forms = _same_model_forms(run_dir, layout)
    measured = []
    for form in forms:
        for row in rows:
            if row.get("threads") == 1 and _latency(row) is not None and _names(row["artifact"], form, run_dir):
                measured.append((_latency(row), str(form), row.get("backend")))
    if not measured:
        raise PaddleQAError(f"{bench_file} times none of the deployed model's forms ({', '.join(map(str, forms))}); "
                            "re-run the bench stage, or serve an artifact's path")
    ms, path, backend = min(measured)
    facts = {"served": path, "backend": backend, "latency_ms_p50": ms,
             "candidates": {p: m for m, p, _ in sorted(measured)}}
    log.info("serving %s (%s, %.2f ms p50 at one thread): the fastest of %d measured forms of %s",
             path, backend, ms, len(measured), layout.deployed_model)
    return path, facts


def served_artifact(artifact: str | Path) -> str:
    """``artifact`` itself, or for a run folder its deployed model's fastest measured form."""
    if Path(artifact, LAYOUT_FILE).is_file():
        return fastest_artifact(artifact)[0]
    return str(artifact)
