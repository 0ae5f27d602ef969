"""Latency and file size of student plans, measured with random weights on the target backend.

Accuracy needs training; latency and size do not: a plan's weights do not change its speed or
its file. So every plan is built with random weights (:func:`materialise`), exported with
``paddleqa export`` exactly as a trained student would be, and timed by ``paddleqa bench``
(one child process per artifact, batch 1, the run's window length and thread count). The
teacher's fp32 forms are timed in the same batch, so every speed-up is a ratio measured side by
side; the reference is the teacher's *fastest* fp32 form (Paddle Inference, Lite x86 or ONNX
Runtime), not only the one on the plan's backend.

Results are kept in a per-machine table (``latency_cache``: CPU, cores and library versions in
its name), so a second search on the same machine times only plans it has not seen. Each entry
keeps the batch it was timed in, and its speed-up is taken against that batch's teacher.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

from ..core.io import write_json
from ..core.manifest import cpu_isa, cpu_model, sha256_path, versions
from ..runtime import bench
from ..runtime.bundle import copy_tokenizer
from ..stages import export
from .space import Candidate

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Backend:
    """Where a plan runs: the exported file that is timed and the one whose size ships."""

    timed: str  # path inside the export folder (what bench opens)
    shipped: tuple[str, ...]  # files whose bytes make the deployed size
    export: dict[str, Any]  # ExportConfig overrides that produce them
    int8_tables: bool  # honours a plan's int8 embedding tables


BACKENDS: dict[str, Backend] = {
    # Lite: timed on the x86 .nb here; the size is the ARM .nb, the file that ships to a phone.
    "lite": Backend("x86-fp32/model.nb", ("arm-fp32/model.nb",),
                    {"targets": ["arm", "x86"]}, True),
    "paddle": Backend("inference/model", ("inference/model.pdmodel", "inference/model.pdiparams"),
                      {"targets": ["x86"]}, False),
    "onnx": Backend("onnx/model.onnx", ("onnx/model.onnx",), {"targets": ["x86"], "onnx": True}, False),
    "onnx-int8": Backend("onnx/model.int8.onnx", ("onnx/model.int8.onnx",),
                         {"targets": ["x86"], "onnx": True, "onnx_int8": True}, False),
    # Lite with opt's int8 weights (stored int8, run in fp32, so timed on the x86 fp32 .nb): the
    # ARM .nb the headline ships (export.precisions [fp32, int8]).
    "lite-int8": Backend("x86-fp32/model.nb", ("arm-int8/model.nb",),
                         {"targets": ["arm", "x86"], "precisions": ["fp32", "int8"]}, True),
}
# The teacher's fp32 files a plan's size is compared with: the smallest of them, as the headline
# does (Paddle Lite's ARM .nb is usually the smallest; ONNX stores the same weights larger).
TEACHER_SIZE_FORMS = ("lite", "paddle", "onnx")
# The teacher's fp32 forms, all timed: the speed-up is against the fastest of them.
TEACHER_FORMS = {"paddle": "inference/model", "lite": "x86-fp32/model.nb", "onnx": "onnx/model.onnx"}


def machine_key() -> str:
    """CPU model, its vector extensions, core count and the versions that decide speed: the
    latency table's name."""
    from importlib import metadata

    v = versions()
    try:
        ort = metadata.version("onnxruntime")
    except metadata.PackageNotFoundError:
        ort = "not installed"
    text = json.dumps([cpu_model(), cpu_isa(), os.cpu_count(), v.get("paddlepaddle"),
                       v.get("paddlelite"), ort], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def deployed_student(candidate: Candidate, teacher, seq_len: int):
    """``candidate``'s student with random weights in the form the chain deploys it: with
    ``pruned_flops`` < 1, every conv block pruned alike to that share of its FLOPs per ``seq_len``
    window (the run's prune stage splits the cut by sensitivity; the total is the same). None when
    the plan cannot be pruned that far (the prune stage would refuse it)."""
    import copy

    from ..models.mobile import MobileQAForQuestionAnswering
    from ..models.students import STUDENTS  # imports paddle
    from ..stages.channels import uniform_channels
    from ..stages.distill import StudentConfig

    spec = StudentConfig(**candidate.student(), init="random", dropout=0.0)
    student, _ = STUDENTS[candidate.kind](teacher, spec)
    if candidate.pruned_flops >= 1:
        return student
    widths = uniform_channels(student.config, candidate.pruned_flops, seq_len)
    if widths is None:
        return None
    config = copy.deepcopy(student.config)
    config.block_channels = widths
    return MobileQAForQuestionAnswering(config)


def materialise(candidate: Candidate, teacher, teacher_dir: Path, folder: Path, seq_len: int) -> Path:
    """A model folder of ``candidate`` as deployed (:func:`deployed_student`, ``seq_len``: the
    training window length pruning counts FLOPs at) with random weights, the teacher's tokenizer
    and window settings: what ``paddleqa export`` takes. Kept between calls (written once)."""
    model_dir = folder / "model"
    if (model_dir / "config.json").exists():
        return model_dir
    student = deployed_student(candidate, teacher, seq_len)
    if student is None:
        raise ValueError(f"plan {candidate.name} cannot be pruned to {candidate.pruned_flops:g} of "
                         "its FLOPs (leave it out of the search first)")
    tmp = folder / ".model.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    student.save_pretrained(str(tmp))
    copy_tokenizer(teacher_dir, tmp)
    tmp.rename(model_dir)
    return model_dir


def export_folder(model_dir: Path, out: Path, backend: str, embeddings: str) -> Path:
    """``paddleqa export`` of ``model_dir`` into ``out`` for ``backend`` (skipped when done)."""
    spec = BACKENDS[backend]
    if (out / "manifest.json").exists() and all((out / f).exists() for f in spec.shipped):
        return out
    cfg = export.ExportConfig(model=str(model_dir), out_dir=str(out),
                              embeddings=embeddings if spec.int8_tables else "fp32",
                              **{"precisions": ["fp32"], **spec.export})
    export.run(cfg)
    return out


def shipped_bytes(folder: Path, backend: str) -> int:
    return sum((folder / f).stat().st_size for f in BACKENDS[backend].shipped)


class LatencyTable:
    """The per-machine table: plan key -> {latency_ms, file_bytes, params, batch}; batch id ->
    the teacher's latencies timed with it."""

    def __init__(self, path: Path):
        self.path = path
        self.data: dict[str, Any] = {"entries": {}, "batches": {}}
        if path.exists():
            try:
                self.data = json.loads(path.read_text(encoding="utf-8"))
            except ValueError:
                log.warning("latency table %s is not valid JSON: starting a new one (the old "
                            "file is kept as %s.bad)", path, path.name)
                shutil.copy2(path, path.with_suffix(".bad"))

    def key(self, candidate: Candidate, backend: str, seq_len: int, threads: int, vocab: int) -> str:
        return f"{candidate.shape_key()}-{backend}-L{seq_len}-t{threads}-v{vocab}"

    def get(self, key: str) -> dict | None:
        return self.data["entries"].get(key)

    def add_batch(self, teacher: dict[str, float], entries: dict[str, dict]) -> str:
        batch = time.strftime("%Y%m%dT%H%M%S") + f"-{len(self.data['batches'])}"
        self.data["batches"][batch] = {"teacher_ms": teacher}
        for k, e in entries.items():
            self.data["entries"][k] = {**e, "batch": batch}
        write_json(self.path, self.data)
        return batch

    def teacher_ms(self, entry: dict) -> dict[str, float]:
        return self.data["batches"][entry["batch"]]["teacher_ms"]


def time_artifacts(paths: list[str], *, seq_len: int, threads: int, repeats: int) -> list[dict]:
    """bench rows (batch-1 p50 latency, file bytes, params) for ``paths``, in one bench run."""
    cfg = bench.BenchConfig(artifacts=paths, seq_lens=[seq_len], threads=[threads], repeats=repeats,
                            warmup=2, throughput_batch=1, throughput_repeats=1)
    return bench.run(cfg)["rows"]


def p50(row: dict) -> float | None:
    for s in row.get("settings", []):
        if "latency_ms_p50" in s:
            return float(s["latency_ms_p50"])
    return None


def teacher_exports(teacher_dir: Path, out: Path) -> dict[str, str]:
    """The teacher's fp32 forms (inference model, x86 .nb, ONNX), exported once into ``out``."""
    sha = sha256_path(teacher_dir)[:12]
    folder = out / f"teacher-{sha}"
    if not (folder / "manifest.json").exists():
        export.run(export.ExportConfig(model=str(teacher_dir), out_dir=str(folder), targets=["x86", "arm"],
                                       precisions=["fp32"], onnx=True))
    return {form: str(folder / rel) for form, rel in TEACHER_FORMS.items()}
