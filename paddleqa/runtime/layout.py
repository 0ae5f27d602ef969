"""The run folder's layout, in one object: ``RUN_DIR/layout.json``.

``paddleqa run`` builds a :class:`RunLayout` from its config (``pipeline.run_layout``) and writes
it into the run folder before any stage runs. It says which folder each stage writes, which model
is deployed (the one quantize and export take), which export folders exist and what each one
holds, and which artifacts the bench stage times (and which of them it does not score again).
``paddleqa report`` and the benchmarks read it; nobody guesses a folder back from its name.

Paths inside the run folder are stored relative to it (so the folder can be moved or read from
another working directory); paths outside it are stored absolute.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from ..core.errors import PaddleQAError
from ..core.io import write_json

LAYOUT_FILE = "layout.json"
LAYOUT_VERSION = 1

# The folder each stage writes unless its config says otherwise (``pipeline.build_plan``).
DEFAULT_FOLDERS = {
    "data": "data", "vocab": "vocab", "pretrain": "pretrain", "finetune": "teacher", "evaluate": "evaluate",
    "augment": "augment", "distill": "distill", "prune": "prune", "quantize": "quantize",
    "export": "export", "export_int8": "export-int8", "export_teacher": "export-teacher",
    "bench": "bench", "report": "report",
}
# In the data folder when data.train_files or the validation split is set: train_file (less the
# split) and those files merged.
MERGED_TRAIN = "train.json"
VALIDATION = "validation.json"  # the validation split the data stage carves from train_file
# The report's model rows: row name -> the training stage whose folder holds ``model/``.
MODEL_STAGES = {"teacher": "finetune", "distill": "distill", "prune": "prune"}
# What an export folder holds.
EXPORT_ROLES = {
    "deployed": "the deployed model's fp32 graph: inference model, Lite bundles, ONNX",
    "int8": "the quantize stage's int8 graph, converted for the same Lite targets",
    "teacher_baseline": "the teacher's own fp32 graph, timed as the latency baseline",
}


def same_path(a: str | Path, b: str | Path) -> bool:
    """True when two paths name the same file (after resolving links and ``..``)."""
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return str(a) == str(b)


def relative_to_run(path: str | Path, run_dir: str | Path) -> str:
    """``path`` relative to the run folder when it lies inside it, else absolute."""
    path, run_dir = Path(path), Path(run_dir)
    for p, root in ((path, run_dir), (path.resolve(), run_dir.resolve())):
        try:
            return p.relative_to(root).as_posix() or "."
        except ValueError:
            continue
    return str(path.resolve())


@dataclasses.dataclass
class ExportFolder:
    """One export stage output folder and what it holds (a key of ``EXPORT_ROLES``)."""

    folder: str
    role: str

    def __post_init__(self) -> None:
        if self.role not in EXPORT_ROLES:
            raise ValueError(f"unknown export role {self.role!r}; roles: {', '.join(EXPORT_ROLES)}")


@dataclasses.dataclass
class RunLayout:
    """Where a run's stages write, relative to the run folder (see the module docstring)."""

    folders: dict[str, str]  # stage -> folder, for the stages this config runs
    files: dict[str, str] = dataclasses.field(default_factory=dict)  # named output files
    deployed: str | None = None  # model row name (MODEL_STAGES) quantize/export take; None: outside
    deployed_model: str = ""  # its model folder
    exports: dict[str, ExportFolder] = dataclasses.field(default_factory=dict)  # result key -> folder
    bench_artifacts: list[str] = dataclasses.field(default_factory=list)  # timed by the bench stage
    no_score: list[str] = dataclasses.field(default_factory=list)  # ... of those, timed only
    version: int = LAYOUT_VERSION

    # -- reading paths -------------------------------------------------------------------------
    def folder(self, run_dir: str | Path, stage: str) -> Path | None:
        """The folder ``stage`` writes in ``run_dir``; None when this run has no such stage."""
        rel = self.folders.get(stage)
        return None if rel is None else Path(run_dir) / rel

    def file(self, run_dir: str | Path, name: str) -> Path | None:
        """A named output file (``bench_results``, ``augmented_train``), None when absent."""
        rel = self.files.get(name)
        return None if rel is None else Path(run_dir) / rel

    def model_dir(self, run_dir: str | Path, name: str) -> Path | None:
        """The ``model/`` folder of a model row (``teacher``, ``distill``, ``prune``)."""
        folder = self.folder(run_dir, MODEL_STAGES[name])
        return None if folder is None else folder / "model"

    def export_folders(self, run_dir: str | Path, role: str) -> list[tuple[str, Path]]:
        """``(result key, folder)`` of every export folder holding ``role``."""
        return [(key, Path(run_dir) / e.folder) for key, e in self.exports.items() if e.role == role]

    # -- JSON -----------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> "RunLayout":
        """Inverse of :meth:`to_dict`; ValueError/TypeError/KeyError on a malformed document."""
        if doc.get("version") != LAYOUT_VERSION:
            raise ValueError(f"layout version {doc.get('version')!r}, this paddleqa reads "
                             f"{LAYOUT_VERSION}")
        exports = {k: ExportFolder(**v) for k, v in doc.get("exports", {}).items()}
        return cls(**{**doc, "exports": exports})

    def write(self, run_dir: str | Path) -> Path:
        """Write ``RUN_DIR/layout.json`` atomically; returns its path."""
        path = Path(run_dir) / LAYOUT_FILE
        write_json(path, self.to_dict())
        return path

    @classmethod
    def read(cls, run_dir: str | Path) -> "RunLayout":
        """The layout ``paddleqa run`` wrote into ``run_dir``; a clear error when it is missing."""
        path = Path(run_dir) / LAYOUT_FILE
        rerun = ("re-run `paddleqa run CONFIG` with the run's config (finished stages are "
                 "skipped, so this only writes the layout)")
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise PaddleQAError(f"{path} does not exist: {run_dir} is not a `paddleqa run` folder, "
                                f"or one made before runs recorded their layout; {rerun}") from None
        except ValueError as exc:
            raise PaddleQAError(f"{path}: not valid JSON ({exc}); {rerun}") from None
        try:
            return cls.from_dict(doc)
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            raise PaddleQAError(f"{path}: not a run layout ({exc}); {rerun}") from None
