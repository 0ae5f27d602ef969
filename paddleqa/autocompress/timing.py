"""Timing every plan of a search as the chain deploys it: the plans the run's channel pruning can
bring to ``prune.flops_ratio``, built with random weights, exported for the backend and timed side
by side with the teacher's fp32 forms, through this machine's latency table (:mod:`.latency`).
``cfg`` is an :class:`~paddleqa.autocompress.search.AutocompressConfig`."""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from ..core.errors import ConfigError, PaddleQAError
from . import latency
from .space import Candidate

log = logging.getLogger(__name__)


def measure(cfg, plans: list[Candidate], teacher_dir: Path, out: Path,
            seq_len: int, train_len: int) -> tuple[list[dict], dict]:
    """Timed rows of every plan (from the machine's table or measured now) and the teacher's;
    ``train_len``: the training window length (where pruning counts its FLOPs)."""
    from ..models.build import count_params, load_model
    from ..models.flops import flops_per_query

    table = latency.LatencyTable(Path(cfg.latency_cache) / f"latency-{latency.machine_key()}.json")
    teacher = load_model(str(teacher_dir))
    vocab = teacher.config.vocab_size
    plans = deployable(plans, teacher, train_len)
    keys = {p.name: table.key(timed_form(p, cfg.backend), cfg.backend, seq_len, cfg.threads, vocab)
            for p in plans}
    todo = [p for p in plans if table.get(keys[p.name]) is None]
    t_files = latency.teacher_exports(teacher_dir, out / "exports")
    if todo or not table.data["batches"]:
        log.info("timing %d plan(s) on %s (%d from this machine's table)", len(todo), cfg.backend,
                 len(plans) - len(todo))
        folders = {}
        for p in todo:
            model_dir = latency.materialise(p, teacher, teacher_dir, out / "plans" / p.name, train_len)
            folders[p.name] = latency.export_folder(model_dir, model_dir.parent / f"export-{cfg.backend}",
                                                    cfg.backend, p.embeddings)
        timed = [str(f / latency.BACKENDS[cfg.backend].timed) for f in folders.values()]
        rows = latency.time_artifacts(list(t_files.values()) + timed, seq_len=seq_len,
                                      threads=cfg.threads, repeats=cfg.repeats)
        t_ms = {form: latency.p50(r) for form, r in zip(t_files, rows)}
        entries = {}
        for p, r in zip(todo, rows[len(t_files):]):
            if latency.p50(r) is None:
                raise PaddleQAError(f"plan {p.name} could not be timed on {cfg.backend}: "
                                    f"{r.get('error', 'no latency measured')}")
            entries[keys[p.name]] = {"latency_ms": latency.p50(r),
                                     "file_bytes": latency.shipped_bytes(folders[p.name], cfg.backend)}
        table.add_batch({k: v for k, v in t_ms.items() if v is not None}, entries)
    t_bytes = min(latency.shipped_bytes(Path(t_files["paddle"]).parent.parent, form)
                  for form in latency.TEACHER_SIZE_FORMS)
    sizes = sized(cfg, plans, teacher, teacher_dir, out, train_len)
    rows = []
    for p in plans:
        e, student = table.get(keys[p.name]), build_student(p, teacher)
        ref = min(table.teacher_ms(e).values())
        file_bytes = sizes.get(p.name, e["file_bytes"])
        rows.append({"name": p.name, "plan": dataclasses.asdict(p), "latency_ms": e["latency_ms"],
                     "file_bytes": file_bytes, "params": count_params(student)["params"],
                     "flops": flops_per_query(student.config, seq_len), "teacher_ms": ref,
                     "speedup": round(ref / e["latency_ms"], 3),
                     "smaller": round(t_bytes / file_bytes, 3), "batch": e["batch"]})
    last = table.data["batches"][max(table.data["batches"])]["teacher_ms"]
    teacher_row = {"name": "teacher", "latency_ms": min(last.values()), "teacher_forms_ms": last,
                   "file_bytes": t_bytes, "params": count_params(teacher)["params"],
                   "flops": flops_per_query(teacher.config, seq_len)}
    return rows, teacher_row


def timed_form(p: Candidate, backend: str) -> Candidate:
    """``p`` as the timed backend runs it: fp32 tables where it does not take int8 ones (its
    export keeps them fp32), so both table forms of a shape share one timing."""
    if latency.BACKENDS[backend].int8_tables:
        return p
    return dataclasses.replace(p, embeddings="fp32")


def sized(cfg, plans: list[Candidate], teacher, teacher_dir: Path, out: Path,
          train_len: int) -> dict[str, int]:
    """With ``cfg.sized_on`` (another backend than the timed one): each plan exported for it and
    the bytes of its shipped file, plan name -> bytes (exports kept in the plan's folder). Empty
    otherwise: the timed export's file is the size."""
    if cfg.size_backend == cfg.backend:
        return {}
    log.info("sizing %d plan(s) as %s files", len(plans), cfg.sized_on)
    out_sizes = {}
    for p in plans:
        model_dir = latency.materialise(p, teacher, teacher_dir, out / "plans" / p.name, train_len)
        folder = latency.export_folder(model_dir, model_dir.parent / f"export-{cfg.sized_on}",
                                       cfg.sized_on, p.embeddings)
        out_sizes[p.name] = latency.shipped_bytes(folder, cfg.sized_on)
    return out_sizes


def deployable(plans: list[Candidate], teacher, train_len: int) -> list[Candidate]:
    """The plans the chain can deploy: those the run's channel pruning can bring to their
    ``pruned_flops`` (a clear error when none is left)."""
    out = [p for p in plans if p.pruned_flops >= 1
           or latency.deployed_student(p, teacher, train_len) is not None]
    if len(out) < len(plans):
        left = sorted({p.name for p in plans} - {p.name for p in out})
        log.warning("%d plan(s) left out: pruning every conv block by 90%% does not bring them to "
                    "prune.flops_ratio (%s)", len(left), ", ".join(left))
    if not out:
        raise ConfigError("no plan of autocompress.space can go through the run's channel "
                          "pruning to prune.flops_ratio (no conv blocks, or they are too small a "
                          "share of the FLOPs): raise prune.flops_ratio or add conv_blocks")
    return out


def build_student(p: Candidate, teacher):
    from ..models.students import STUDENTS
    from ..stages.distill import StudentConfig

    return STUDENTS[p.kind](teacher, StudentConfig(**p.student(), init="random", dropout=0.0))[0]
