"""Run the stages of a run in order, each one unless it already ran.

``run_stages`` takes the stage configs of a ``pipeline.RunPlan`` and runs data (check, merge,
validation split) -> augment -> vocab -> pretrain -> finetune -> evaluate -> distill -> prune ->
quantize -> export -> bench (those configured). A stage's folder holds a ``manifest.json`` with the config it ran with and
the sha256 of its inputs and outputs, written as it starts and completed as it ends
(``core.freshness`` decides from it). A stage whose manifest records a finished run of the same
config on the same inputs, with unchanged outputs, is skipped and its ``metrics.json``
returned, so re-running a finished or interrupted pipeline only does what is left. A training folder made with another config or other inputs cannot be resumed; it is set
aside, not deleted.
"""
from __future__ import annotations

import datetime as _dt
import json
import logging
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from ..core.config import to_dict
from ..core.freshness import begin, finished_reason, resume_reason
from ..core.manifest import METRICS, write_manifest
from ..models.tables import table_file
from ..runtime import bench as bench_stage, evaluate as evaluate_stage
from ..runtime.layout import RunLayout
from ..text import augment as augment_stage, tokenizer as vocab_stage
from . import (
    data as data_stage,
    distill as distill_stage,
    export as export_stage,
    finetune as finetune_stage,
    pretrain as pretrain_stage,
    prune as prune_stage,
    quantize as quantize_stage,
)
from .training import extra_file_inputs, run_inputs

log = logging.getLogger(__name__)


def training_inputs(config: Any) -> dict[str, str]:
    """The inputs a training stage (finetune, distill, prune) records in its manifest."""
    inputs = {"train_file": config.train_file, **extra_file_inputs(config), "dev_file": config.dev_file}
    if getattr(config, "teacher", ""):
        inputs["teacher"] = config.teacher
    return inputs


def training_done(config: Any) -> bool:
    """True when a training stage's folder already holds a finished run of this config."""
    return finished_reason(config.output_dir, config, training_inputs(config)) is None


def set_aside_if_stale(out_dir: Path, config: Any, inputs: dict[str, str]) -> None:
    """A training folder made with another config or other inputs cannot be resumed; rather than
    refuse (as ``--resume`` on the command line does) or delete it, the pipeline renames it
    ``<folder>.superseded-<time>`` and trains afresh, so nothing is lost."""
    if not out_dir.exists():
        return
    why = resume_reason(out_dir, config, run_inputs(config, inputs))
    if why is None:
        return
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    target = out_dir.with_name(f"{out_dir.name}.superseded-{stamp}")
    out_dir.rename(target)
    log.warning("%s: %s; kept the old run as %s and training afresh", out_dir, why, target)


class StageRunner:
    """Runs the stages of one pipeline invocation (all, or ``only`` one), collecting each one's
    metrics in ``results`` under its key and reporting it to ``on_stage(key, metrics)``.
    ``logger``: where "stage X: running / up to date, skipped" goes (the pipeline's logger)."""

    def __init__(self, only: str | None = None,
                 on_stage: Callable[[str, dict], None] | None = None,
                 logger: logging.Logger = log) -> None:
        self.only = only
        self.on_stage = on_stage
        self.log = logger
        self.results: dict[str, dict] = {}

    def wanted(self, name: str) -> bool:
        return self.only is None or self.only == name

    def __call__(self, name: str, out_dir: Path, config: Any, inputs: dict[str, str],
                 work: Callable[[], dict], prefix: str = "",
                 trained_from: dict[str, str] | None = None, key: str = "") -> None:
        """Run stage ``name`` into ``out_dir`` unless its manifest shows it already ran with this
        config and these inputs (then its metrics are read back). ``trained_from``: the inputs a
        training stage resumes from (a stale folder is set aside); ``key``: the results key when
        one stage runs twice (export)."""
        if not self.wanted(name):
            return
        key = key or name
        why = finished_reason(out_dir, config, inputs, prefix)
        if why is None:
            self.log.info("stage %s: up to date, skipped", name)
            metrics = json.loads((out_dir / f"{prefix}{METRICS}").read_text(encoding="utf-8"))
        else:
            self.log.info("stage %s: running (%s)", name, why)
            if trained_from is not None:  # a training stage records its own start (start_run)
                set_aside_if_stale(out_dir, config, trained_from)
            else:
                begin(out_dir, name, config, inputs, prefix)
            metrics = work()
        self.results[key] = metrics
        if self.on_stage:
            self.on_stage(key, metrics)


def run_stages(plan: Any, layout: RunLayout, *, only: str | None = None,
               resume: bool = True, on_stage: Callable[[str, dict], None] | None = None,
               callbacks: Mapping[str, Sequence[Any]] | None = None,
               logger: logging.Logger = log) -> dict[str, dict]:
    """Run the configured stages of ``plan`` (a ``pipeline.RunPlan``), or just ``only``, in
    order; returns each stage's metrics by key (``export_int8``/``export_teacher`` for the
    second and third export). ``callbacks``: extra Trainer callbacks per training stage."""
    callbacks = callbacks or {}
    stage = StageRunner(only, on_stage, logger)
    _run_teacher(stage, plan, layout, resume, callbacks)
    _run_students(stage, plan, resume, callbacks)
    _run_deploy(stage, plan)
    _run_bench(stage, plan)
    return stage.results


def _run_teacher(stage: StageRunner, plan: Any, layout: RunLayout, resume: bool,
                 callbacks: Mapping[str, Sequence[Any]]) -> None:
    """data check -> augment (when configured) -> vocab (from-scratch models only) -> pretrain
    (when configured) -> finetune (teacher) -> evaluate."""
    root, data = plan.run_dir, plan.data
    data_dir = layout.folder(root, "data")
    data_inputs = {"train_file": data.train_file, "dev_file": data.dev_file,
                   **{f"train_files_{i}": f for i, f in enumerate(data.train_files)},
                   **{f"traditional_files_{i}": f for i, f in enumerate(data.traditional_files)}}
    if data.validation_file:
        data_inputs["validation_file"] = data.validation_file
    stage("data", data_dir, data, data_inputs, lambda: data_stage.run(data, root, data_dir, data_inputs))
    aug = plan.augment
    if aug is not None:  # before the teacher: it may train on the variants (augment.teacher)
        out = Path(aug.output_file)
        stage("augment", out.parent, aug, {"input_file": aug.input_file},
              lambda: augment_stage.run(aug, progress=plan.finetune.progress),
              prefix=out.name[: -len("json")])
    vcfg = plan.vocab
    if vcfg is not None:
        stage("vocab", Path(vcfg.out_dir), vcfg, {f"data_{i}": f for i, f in enumerate(vcfg.data_files)},
              lambda: vocab_stage.run(vcfg))
    pre = plan.pretrain
    if pre is not None:
        stage("pretrain", Path(pre.output_dir), pre, pre.inputs(),
              lambda: pretrain_stage.run(pre, resume=resume, callbacks=callbacks.get("pretrain", ())),
              trained_from=pre.inputs())
    ft = plan.finetune
    ft_inputs = training_inputs(ft)
    if ft.model and Path(ft.model).is_dir():  # a local model (the pretrained one): redo when it changes
        ft_inputs["model"] = ft.model
    table = table_file(ft.arch.embeddings_from)  # a table file: redo when it changes
    stage("finetune", Path(ft.output_dir), ft, {**ft_inputs, **table},
          lambda: finetune_stage.run(ft, resume=resume, callbacks=callbacks.get("finetune", ())),
          trained_from={"model": ft.model, "tokenizer": ft.tokenizer, **table})
    ev = plan.evaluate
    stage("evaluate", Path(ev.out_dir), ev, {"model": ev.model, "data_file": ev.data_file},
          lambda: evaluate_stage.run(ev))


def _run_students(stage: StageRunner, plan: Any, resume: bool,
                  callbacks: Mapping[str, Sequence[Any]]) -> None:
    """distill -> prune, each when configured (or asked for by name); augment ran before the
    teacher."""
    di, pr = plan.distill, plan.prune
    if di is not None:
        table = table_file(di.student.embeddings_from)
        stage("distill", Path(di.output_dir), di, {**training_inputs(di), **table},
              lambda: distill_stage.run(di, resume=resume, callbacks=callbacks.get("distill", ())),
              trained_from={"teacher": di.teacher, **table})
    if pr is not None:
        student = {"model": pr.model} if pr.model else {}  # the student prune narrows (l1norm/fpgm)
        stage("prune", Path(pr.output_dir), pr, {**training_inputs(pr), **student},
              lambda: prune_stage.run(pr, resume=resume, callbacks=callbacks.get("prune", ())),
              trained_from={"teacher": pr.teacher, **student})


def _run_deploy(stage: StageRunner, plan: Any) -> None:
    """quantize -> export of the deployed model (fp32 graph, then the int8 graph) -> export of
    the teacher's own graph as the bench's latency baseline."""
    qu, ex, ex8, ext = plan.quantize, plan.export, plan.export_int8, plan.export_teacher
    if qu is not None:
        stage("quantize", Path(qu.out_dir), qu,
              {"model": qu.model, "dev_file": qu.dev_file, "calib_file": qu.calib_file},
              lambda: quantize_stage.run(qu))
    if ex is None:
        return
    stage("export", Path(ex.out_dir), ex, {"model": ex.model}, lambda: export_stage.run(ex))
    if ex8 is not None:
        stage("export", Path(ex8.out_dir), ex8,
              {"model": ex8.model, "inference_model": ex8.inference_model + ".pdmodel"},
              lambda: export_stage.run(ex8), key="export_int8")
    if ext is not None:
        stage("export", Path(ext.out_dir), ext, {"model": ext.model}, lambda: export_stage.run(ext),
              key="export_teacher")


def _run_bench(stage: StageRunner, plan: Any) -> None:
    """Time (and score) every artifact of the layout's bench list; its rows are the metrics."""
    be = plan.bench
    if be is None:
        return

    def do_bench() -> dict:
        result = bench_stage.run(be)
        write_manifest(Path(be.out).parent, "bench", to_dict(be), {a: a for a in be.artifacts},
                       {"results": be.out}, {"rows": result["rows"]})
        return {"rows": result["rows"]}

    stage("bench", Path(be.out).parent, be, {a: a for a in be.artifacts}, do_bench)
