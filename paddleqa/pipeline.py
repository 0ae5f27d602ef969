"""The whole chain in one place: one YAML -> stage configs -> stages run in order in one run dir.

    data check (+ validation split)  ->  augment (synonym variants of the training questions)
                ->  vocab (from-scratch tokenizer)  ->  pretrain (masked-LM, when configured)
                ->  finetune (teacher, from the pretrained encoder when there is one)  ->  evaluate
                ->  distill (student)
                ->  prune (width + depth pruning of the teacher, or channel pruning of the
                       distilled mobilenet student; distilled back)
                ->  quantize (int8 PTQ/QAT or k-means of the deployed model)
                ->  export (inference model + Lite .nb, fp32 and the int8 graph)
                ->  bench (latency, throughput, RSS of every runnable artifact, next to the
                           teacher's own exported inference model and x86 .nb as the baseline)

The deployed model (what quantize and export take) is the pruned student when ``prune``
narrows the distilled one (``prune.method`` l1norm/fpgm), else the distilled student when
``distill`` is configured, else the pruned one, else the teacher;
``quantize.model``/``export.model`` override it.

A pipeline YAML has ``run_dir`` and one section per stage holding only overrides of that stage's
defaults; the wiring between stages (which folder feeds which) is done here, and recorded as the
run's layout in ``RUN_DIR/layout.json`` (``runtime.layout``: stage -> folder, deployed model,
export folders, bench artifacts), which ``report`` and the benchmarks read. ``augment`` and
``distill``, ``prune`` and ``pretrain`` run only when the YAML has their section (``distill: {}`` takes every default); the
students train on the augmented file when ``augment`` is on, and so does the teacher with
``augment.teacher: true``. A stage whose
``manifest.json`` records the same config and the same input hashes is skipped
(``stages.runner``), so re-running a finished or interrupted run only does what is left.
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from .core.config import ConfigError, from_dict, opt
from .runtime import report as report_stage
from .runtime.bench import BenchConfig
from .runtime.evaluate import EvaluateConfig
from .runtime.layout import (
    DEFAULT_FOLDERS, MODEL_STAGES, ExportFolder, RunLayout, relative_to_run, same_path,
)
from .stages.data import DataConfig
from .stages.distill import DistillConfig
from .stages.export import ExportConfig
from .stages import pretrain as pretrain_stage
from .stages.finetune import FinetuneConfig
from .stages.prune import PruneConfig
from .stages.quantize import QuantizeConfig
from .stages.runner import int8_export_config, run_stages
from .text.augment import AugmentConfig

log = logging.getLogger(__name__)

STAGES = ("data", "augment", "vocab", "pretrain", "finetune", "evaluate", "distill", "prune",
          "quantize", "export", "bench")
# run only when their section is present
OPTIONAL = ("pretrain", "augment", "distill", "prune", "quantize", "export", "bench")


@dataclasses.dataclass
class VocabSection:
    """Character vocab for from-scratch models (skipped when finetune.tokenizer or .model is set)."""

    min_freq: int = opt(1, help="keep characters seen at least this often")
    max_size: int = opt(0, help="cap on vocab size (0 = none)")


def _sections(doc: dict[str, Any]) -> tuple[str, dict[str, dict[str, Any]]]:
    valid = ("run_dir",) + STAGES
    unknown = sorted(set(doc) - set(valid))
    if unknown:
        raise ConfigError(f"unknown top-level key(s) {', '.join(unknown)}; valid keys: {', '.join(valid)}")
    run_dir = doc.get("run_dir")
    if not isinstance(run_dir, str) or not run_dir:
        raise ConfigError("run_dir is required: the folder that holds every stage's output")
    sections = {}
    for name in STAGES:
        sec = doc.get(name) or {}
        if not isinstance(sec, dict):
            raise ConfigError(f"section {name} must be a mapping of overrides, got {sec!r}")
        sections[name] = sec
    return run_dir, sections


def stage_configs(doc: dict[str, Any]) -> dict[str, Any]:
    """Typed config of every stage: defaults <- wiring from earlier stages <- YAML overrides.

    Returns a dict: ``run_dir`` (a Path), ``data``, ``vocab`` (None when a tokenizer or model is
    given), ``pretrain`` (None when not configured), ``finetune``, ``evaluate``, ``augment``, ``distill``/``prune`` (None when not
    configured) with ``distill_config``/``prune_config`` (always, for running them by name),
    ``quantize``, ``export``, ``export_teacher`` and ``bench`` (None when not configured).
    """
    run_dir, sec = _sections(doc)
    root = Path(run_dir)
    data = from_dict(DataConfig, sec["data"], where="data")
    vocab = from_dict(VocabSection, sec["vocab"], where="vocab")
    ft_over, vocab_dir = sec["finetune"], str(root / DEFAULT_FOLDERS["vocab"])
    if "pretrain" in doc:  # finetune starts from the pretrained folder unless finetune.model is set
        ft_over = {"model": str(Path(pretrain_stage.pipeline_output_dir(root, sec["pretrain"])) / "model"),
                   **ft_over}
    augment = _wire_augment(root, data, sec["augment"]) if "augment" in doc else None
    if augment is not None and augment.teacher:  # the teacher learns from the variants too
        ft_over = {"train_file": augment.output_file, **ft_over}
    needs_vocab = not ft_over.get("model") and not ft_over.get("tokenizer")
    finetune = _wire_finetune(root, data, ft_over, needs_vocab)
    pretrain = None
    if "pretrain" in doc:  # never pre-trained on the files this run reports scores on
        reports = [data.dev_file] + [sec[s][k] for s, k in (("evaluate", "data_file"), (
            "bench", "score_file"), ("quantize", "dev_file")) if sec[s].get(k)]
        tok = sec["finetune"].get("tokenizer") or sec["finetune"].get("model") or vocab_dir
        pretrain = pretrain_stage.pipeline_config(root, finetune, sec["pretrain"], exclude=reports,
                                                  corpus=[data.training_file(root)], tokenizer=tok)
        needs_vocab = needs_vocab or pretrain.tokenizer == vocab_dir
    evaluate = _wire_evaluate(root, data, finetune, sec["evaluate"])
    distill, prune = _wire_students(root, data, finetune, augment, sec)
    deployed = str(Path(_deployed_stage(finetune, distill if "distill" in doc else None,
                                        prune if "prune" in doc else None).output_dir) / "model")
    quantize = export = export_teacher = bench = None
    if "quantize" in doc:
        quantize = _wire_quantize(root, data, finetune, deployed, sec["quantize"])
    if "export" in doc:
        export = from_dict(ExportConfig, {"model": quantize.model if quantize else deployed,
                                          "out_dir": str(root / DEFAULT_FOLDERS["export"]),
                                          **sec["export"]}, where="export")
    if "bench" in doc:
        export_teacher = _teacher_export(root, finetune, export)
        # The distilled student before channel pruning: its own row, so the table shows what
        # pruning cost and gained (distill scored it on dev).
        earlier = [prune.model] if "prune" in doc and "distill" in doc and prune.model else []
        arts, no_score = _bench_artifacts(finetune, deployed, quantize, export, export_teacher,
                                          earlier)
        wired_b = {"artifacts": arts, "no_score": no_score,
                   "out": str(root / DEFAULT_FOLDERS["bench"] / "results.json"),
                   "seq_lens": [finetune.max_seq_len], "threads": [1], "score_file": data.dev_file}
        bench = from_dict(BenchConfig, {**wired_b, **sec["bench"]}, where="bench")
    return {"run_dir": root, "data": data, "vocab": vocab if needs_vocab else None,
            "pretrain": pretrain, "finetune": finetune, "evaluate": evaluate, "augment": augment,
            "distill": distill if "distill" in doc else None, "distill_config": distill,
            "prune": prune if "prune" in doc else None, "prune_config": prune,
            "quantize": quantize, "export": export, "export_teacher": export_teacher, "bench": bench}


def _wire_finetune(root: Path, data: DataConfig, over: dict[str, Any], needs_vocab: bool
                   ) -> FinetuneConfig:
    """The teacher: trained on the data section's files, with the run's vocab when it needs one."""
    wired = {
        "train_file": data.training_file(root),
        "dev_file": data.dev_file,
        "validation_file": data.validation_path(root),
        "output_dir": str(root / DEFAULT_FOLDERS["finetune"]),
        "max_context_chars": data.max_context_chars,
        "tokenizer": str(root / DEFAULT_FOLDERS["vocab"]) if needs_vocab else "",
    }
    return from_dict(FinetuneConfig, {**wired, **over}, where="finetune")


def _wire_evaluate(root: Path, data: DataConfig, finetune: FinetuneConfig, over: dict[str, Any]
                   ) -> EvaluateConfig:
    """Scores the teacher's saved model on dev with the teacher's inference settings."""
    wired = {
        "model": str(Path(finetune.output_dir) / "model"),
        "data_file": data.dev_file,
        "out_dir": str(root / DEFAULT_FOLDERS["evaluate"]),
        "max_context_chars": data.max_context_chars,
        "n_best": finetune.n_best,
        "max_answer_length": finetune.max_answer_length,
        "cache_dir": finetune.cache_dir,
        "progress": finetune.progress,
    }
    return from_dict(EvaluateConfig, {**wired, **over}, where="evaluate")


@dataclasses.dataclass
class AugmentSection(AugmentConfig):
    """The augment stage of a run (it runs right after the data stage), and who learns from it."""

    teacher: bool = opt(False, help="the teacher (and the vocabulary) trains on the augmented "
                        "questions too; the students always do")


def _wire_augment(root: Path, data: DataConfig, over: dict[str, Any]) -> AugmentSection:
    """Synonym variants of the training questions (never of the validation split's)."""
    wired = {"input_file": data.training_file(root),
             "output_file": str(root / DEFAULT_FOLDERS["augment"] / "train.json")}
    return from_dict(AugmentSection, {**wired, **over}, where="augment")


def _wire_students(root: Path, data: DataConfig, finetune: FinetuneConfig,
                   augment: AugmentConfig | None, sec: dict[str, dict[str, Any]]
                   ) -> tuple[DistillConfig, PruneConfig]:
    """Distill and prune configs (always built, so either can run by name with its defaults):
    the teacher's shared settings, its saved model as teacher, the augmented file when on."""
    shared = ("dev_file", "validation_file", "max_context_chars", "cache_dir", "progress", "device", "n_best",
              "max_answer_length", "eval_max_questions", "seed")
    wired = {
        **{k: getattr(finetune, k) for k in shared},
        "train_file": augment.output_file if augment else data.training_file(root),
        "teacher": str(Path(finetune.output_dir) / "model"),
        "output_dir": str(root / DEFAULT_FOLDERS["distill"]),
    }
    distill = from_dict(DistillConfig, {**wired, **sec["distill"]}, where="distill")
    wired_pr = {**wired, "output_dir": str(root / DEFAULT_FOLDERS["prune"])}
    prune = from_dict(PruneConfig, {**wired_pr, **sec["prune"]}, where="prune")
    if prune.prunes_student and not prune.model:  # l1norm/fpgm: prune comes after distill
        prune = dataclasses.replace(prune, model=str(Path(distill.output_dir) / "model"))
    return distill, prune


def _deployed_stage(finetune: Any, distill: Any, prune: Any) -> Any:
    """The stage whose saved model is deployed (what quantize and export take unless their
    ``model`` is set): the pruned student when prune narrows a student (after distill), else the
    distilled student when distill is configured (not None), else the pruned model when prune
    is, else the teacher."""
    if prune is not None and prune.model:
        return prune
    return distill or prune or finetune


def _wire_quantize(root: Path, data: DataConfig, finetune: FinetuneConfig, deployed: str,
                   over: dict[str, Any]) -> QuantizeConfig:
    """Quantizes the deployed model, calibrated on training windows, scored on dev."""
    wired = {"model": deployed, "out_dir": str(root / DEFAULT_FOLDERS["quantize"]),
             "dev_file": data.dev_file, "calib_file": data.training_file(root),
             "cache_dir": finetune.cache_dir, "progress": finetune.progress}
    return from_dict(QuantizeConfig, {**wired, **over}, where="quantize")


def _teacher_export(root: Path, finetune: FinetuneConfig, export: ExportConfig | None
                    ) -> ExportConfig | None:
    """The teacher's own fp32 inference model and x86 .nb: the latency baseline the students are
    compared with on the same backends (not only against dygraph); None when export already
    takes the teacher or there is no export."""
    teacher_model = str(Path(finetune.output_dir) / "model")
    if export is None or export.model == teacher_model:
        return None
    return dataclasses.replace(export, model=teacher_model, targets=["x86"], precisions=["fp32"],
                               onnx_int8=False, inference_model="",
                               out_dir=str(root / DEFAULT_FOLDERS["export_teacher"]))


def _bench_artifacts(finetune: FinetuneConfig, deployed: str, quantize: QuantizeConfig | None,
                     export: ExportConfig | None, export_teacher: ExportConfig | None,
                     earlier: list[str] = ()) -> tuple[list[str], list[str]]:
    """What the bench stage times, and which of those it does not score again: model folders
    whose own stage scored them on this dev file (the teacher, ``earlier`` students of the
    chain, the deployed model), and the teacher's baseline graph."""
    teacher_model = str(Path(finetune.output_dir) / "model")
    arts, no_score = [teacher_model, *earlier], [teacher_model, *earlier]
    if export and export.model != teacher_model:
        arts.append(export.model)
        if export.model == deployed and deployed != teacher_model:
            no_score.append(deployed)
    if export_teacher is not None:
        baseline = [str(Path(export_teacher.out_dir) / "inference"),
                    str(Path(export_teacher.out_dir) / "x86-fp32")]
        if export.onnx:
            baseline.append(str(Path(export_teacher.out_dir) / "onnx"))
        arts += baseline
        no_score += baseline  # the same graph as the teacher (export is tested to agree)
    if export:
        arts += [str(Path(export.out_dir) / "inference")]
        if "x86" in export.targets and "fp32" in export.precisions:
            arts.append(str(Path(export.out_dir) / "x86-fp32"))
        if export.onnx:
            arts.append(str(Path(export.out_dir) / "onnx"))
        if export.onnx_int8:  # ONNX Runtime's dynamic int8 of the same graph, scored here
            arts.append(str(Path(export.out_dir) / "onnx" / "model.int8.onnx"))
    if quantize and quantize.method in ("ptq", "qat"):
        arts.append(str(Path(quantize.out_dir) / "inference"))
    return arts, no_score


def run_layout(cfg: dict[str, Any]) -> RunLayout:
    """The run folder's layout for ``stage_configs``' result: what ``run`` writes to
    ``RUN_DIR/layout.json`` and what ``report`` and the benchmarks read."""
    root: Path = cfg["run_dir"]
    ft, ev, aug, qu, ex, be = (cfg[k] for k in ("finetune", "evaluate", "augment", "quantize",
                                                 "export", "bench"))

    def rel(path: str | Path) -> str:
        return relative_to_run(path, root)

    folders = {"data": root / DEFAULT_FOLDERS["data"], "finetune": ft.output_dir,
               "evaluate": ev.out_dir, "distill": cfg["distill_config"].output_dir,
               "prune": cfg["prune_config"].output_dir, "report": root / DEFAULT_FOLDERS["report"]}
    if cfg["vocab"] is not None:
        folders["vocab"] = root / DEFAULT_FOLDERS["vocab"]
    if cfg["pretrain"] is not None:
        folders["pretrain"] = cfg["pretrain"].output_dir
    files = {}
    if cfg["data"].writes_training_file:
        files["merged_train"] = cfg["data"].training_file(root)
    if cfg["data"].validation_path(root):
        files["validation"] = cfg["data"].validation_path(root)
    if aug is not None:
        folders["augment"] = Path(aug.output_file).parent
        files["augmented_train"] = aug.output_file
    if qu is not None:
        folders["quantize"] = qu.out_dir
    if be is not None:
        folders["bench"] = Path(be.out).parent
        files["bench_results"] = be.out
    exports = {}
    if ex is not None:
        exports["export"] = ExportFolder(rel(ex.out_dir), "deployed")
        ex8 = int8_export_config(ex, qu)
        if ex8 is not None:
            exports["export_int8"] = ExportFolder(rel(ex8.out_dir), "int8")
        if cfg["export_teacher"] is not None:
            exports["export_teacher"] = ExportFolder(rel(cfg["export_teacher"].out_dir),
                                                     "teacher_baseline")
    folders = {k: rel(v) for k, v in folders.items()}
    models = {name: root / folders[stage] / "model" for name, stage in MODEL_STAGES.items()}
    default = _deployed_stage(ft, cfg["distill"], cfg["prune"]).output_dir
    candidates = [c.model for c in (qu, ex) if c is not None] or [str(Path(default) / "model")]
    deployed = next((name for c in candidates for name, m in models.items() if same_path(c, m)),
                    None)
    return RunLayout(folders=folders, files={k: rel(v) for k, v in files.items()},
                     deployed=deployed, deployed_model=rel(candidates[0]), exports=exports,
                     bench_artifacts=[rel(a) for a in be.artifacts] if be else [],
                     no_score=[rel(a) for a in be.no_score] if be else [])


def run(doc: dict[str, Any], *, only: str | None = None, resume: bool = True,
        on_stage: Callable[[str, dict], None] | None = None,
        callbacks: Mapping[str, Sequence[Any]] | None = None) -> dict[str, dict]:
    """Run every stage (or ``only`` one) of a pipeline document; returns each stage's metrics.

    ``on_stage(key, metrics)`` is called after each stage; ``callbacks`` maps a training stage
    (``pretrain``, ``finetune``, ``distill``, ``prune``) to extra PaddleNLP ``TrainerCallback``s for its Trainer
    (e.g. progress hooks; the kill/resume tests stop a run at a chosen step with one).
    The run's layout (``RUN_DIR/layout.json``, see ``runtime.layout``) is written first.
    """
    callbacks = callbacks or {}
    unknown = set(callbacks) - {"pretrain", "finetune", "distill", "prune"}
    if unknown:
        raise ValueError(f"callbacks are for pretrain, finetune, distill and prune, not {sorted(unknown)}")
    if only is not None and only not in STAGES:
        raise ConfigError(f"unknown stage {only!r}; stages: {', '.join(STAGES)}")
    cfg = stage_configs(doc)
    layout = run_layout(cfg)
    _select_only(cfg, only)
    root: Path = cfg["run_dir"]
    layout.write(root)
    results = run_stages(cfg, layout, only=only, resume=resume, on_stage=on_stage,
                         callbacks=callbacks, logger=log)
    if only is None:
        rep = report_stage.run(report_stage.ReportConfig(run_dir=str(root)))
        results["report"] = {k: v for k, v in rep.items() if k != "rows"}
        log.info("report: %s", rep["report_html"])
    return results


def _select_only(cfg: dict[str, Any], only: str | None) -> None:
    """Check that stage ``only`` can run with this config; distill and prune asked for by name
    run with their defaults even without a section."""
    for name in ("distill", "prune"):
        if only == name and cfg[name] is None:
            cfg[name] = cfg[f"{name}_config"]  # asked for by name: run it with its defaults
    if only == "augment" and cfg["augment"] is None:
        raise ConfigError("stage augment has no section in this config: add `augment: {}` "
                          "(its output feeds distill)")
    for name in ("pretrain", "quantize", "export", "bench"):
        if only == name and cfg[name] is None:
            raise ConfigError(f"stage {name} has no section in this config: add `{name}: {{}}`")
