"""The whole chain in one place: one YAML -> a typed :class:`RunPlan` -> stages run in order.

    data check (+ validation split)  ->  augment (synonym variants of the training questions)
      ->  vocab (from-scratch tokenizer)  ->  pretrain (masked-LM, when configured)
      ->  finetune (teacher, from the pretrained encoder when there is one)  ->  evaluate
      ->  distill (student)  ->  prune (heads/FFN/layers of the teacher, or channels of the
          distilled mobilenet student; distilled back)  ->  quantize (int8 PTQ/QAT or k-means)
      ->  export (inference model, Lite .nb, ONNX; fp32 and the int8 graph; the teacher's graph
          as the baseline)  ->  bench (latency, RSS, score of every runnable artifact)

A pipeline YAML has ``run_dir`` and one section per stage holding only overrides of that
stage's defaults. Every stage's wiring (which folder feeds which) is done here, in
:func:`build_plan`, and recorded as the run's layout in ``RUN_DIR/layout.json``
(``runtime.layout``), which ``report`` and the benchmarks read. The optional stages run only when
the YAML has their section (``distill: {}`` takes every default); the students train on the
augmented file when ``augment`` is on, the teacher too with ``augment.teacher: true``. The
deployed model (what quantize and export take) is the pruned student when ``prune`` narrows the
distilled one, else the distilled student, else the pruned teacher, else the teacher
(``quantize.model``/``export.model`` override it). A stage whose record shows a finished run of
the same config on the same inputs is skipped (``core.freshness``).
"""
from __future__ import annotations

import dataclasses
import functools
import logging
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from .core.config import ConfigError, from_dict, opt, to_dict
from .runtime import report as report_stage
from .runtime.bench import BenchConfig
from .runtime.evaluate import EvaluateConfig
from .runtime.layout import (
    DEFAULT_FOLDERS, MODEL_STAGES, ExportFolder, RunLayout, relative_to_run, same_path,
)
from .stages.data import DataConfig
from .stages.distill import DistillConfig
from .stages.export import ExportConfig
from .stages.finetune import FinetuneConfig
from .stages.pretrain import PretrainConfig
from .stages.prune import PruneConfig
from .stages.quantize import QuantizeConfig
from .stages.runner import run_stages
from .text.augment import AugmentConfig
from .text.tokenizer import VocabConfig

log = logging.getLogger(__name__)

STAGES = ("data", "augment", "vocab", "pretrain", "finetune", "evaluate", "distill", "prune",
          "quantize", "export", "bench")


@dataclasses.dataclass
class VocabSection:
    """Character vocab for from-scratch models (skipped when finetune.tokenizer or .model is set)."""

    min_freq: int = opt(1, help="keep characters seen at least this often")
    max_size: int = opt(0, help="cap on vocab size (0 = none)")


def _sections(doc: dict[str, Any]) -> tuple[str, dict[str, dict[str, Any]]]:
    valid = ("run_dir",) + STAGES + ("autocompress",)  # autocompress: read by `paddleqa autocompress`
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


@dataclasses.dataclass
class RunPlan:
    """Every stage config of one run, wired together: what ``paddleqa run`` executes in order.

    A stage that runs only when its section is present (``pretrain``, ``augment``, ``distill``,
    ``prune``, ``quantize``, ``export``, ``bench``) is None without it; so is ``vocab`` when the
    teacher has a tokenizer or a model already, ``export_int8`` without an int8 graph and
    ``export_teacher`` when export takes the teacher itself or nothing is benched.
    """

    run_dir: Path
    data: DataConfig
    vocab: VocabConfig | None
    pretrain: PretrainConfig | None
    finetune: FinetuneConfig
    evaluate: EvaluateConfig
    augment: "AugmentSection | None"
    distill: DistillConfig | None
    prune: PruneConfig | None
    quantize: QuantizeConfig | None
    export: ExportConfig | None
    export_int8: ExportConfig | None
    export_teacher: ExportConfig | None
    bench: BenchConfig | None

    def deployed_stage(self):
        """The stage whose ``model/`` is deployed (see :func:`_deployed_stage`)."""
        return _deployed_stage(self.finetune, self.distill, self.prune)


def build_plan(doc: dict[str, Any], *, enable: Sequence[str] = ()) -> RunPlan:
    """Typed config of every stage: defaults <- wiring from earlier stages <- YAML overrides.

    ``enable``: stages to build as if their section were present (empty), for running one by
    name (``--only distill``, ``paddleqa distill --config``) without a section.
    """
    run_dir, sec = _sections(doc)
    root, on = Path(run_dir), set(doc) | set(enable)
    data = from_dict(DataConfig, sec["data"], where="data")
    ft_over, vocab_dir = sec["finetune"], str(root / DEFAULT_FOLDERS["vocab"])
    if "pretrain" in on:  # finetune starts from the pretrained folder unless finetune.model is set
        ft_over = {"model": str(Path(_pretrain_dir(root, sec["pretrain"])) / "model"), **ft_over}
    augment = _wire_augment(root, data, sec["augment"]) if "augment" in on else None
    if augment is not None and augment.teacher:  # the teacher learns from the variants too
        ft_over = {"train_file": augment.output_file, **ft_over}
    needs_vocab = not ft_over.get("model") and not ft_over.get("tokenizer")
    finetune = _wire_finetune(root, data, ft_over, needs_vocab)
    pretrain = None
    if "pretrain" in on:  # never pre-trained on the files this run reports scores on
        reports = [data.dev_file] + [sec[s][k] for s, k in (("evaluate", "data_file"), (
            "bench", "score_file"), ("quantize", "dev_file")) if sec[s].get(k)]
        tok = sec["finetune"].get("tokenizer") or sec["finetune"].get("model") or vocab_dir
        pretrain = _wire_pretrain(root, finetune, sec["pretrain"], exclude=reports,
                                  corpus=[data.training_file(root)], tokenizer=tok)
        needs_vocab = needs_vocab or pretrain.tokenizer == vocab_dir
    vocab = _wire_vocab(root, data, augment, sec["vocab"]) if needs_vocab else None
    evaluate = _wire_evaluate(root, data, finetune, sec["evaluate"])
    distill, prune = _wire_students(root, data, finetune, augment, sec)
    distill, prune = (distill if "distill" in on else None), (prune if "prune" in on else None)
    deployed = str(Path(_deployed_stage(finetune, distill, prune).output_dir) / "model")
    quantize = export = export_teacher = bench = None
    if "quantize" in on:
        quantize = _wire_quantize(root, data, finetune, deployed, sec["quantize"])
    if "export" in on:
        export = from_dict(ExportConfig, {"model": quantize.model if quantize else deployed,
                                          "out_dir": str(root / DEFAULT_FOLDERS["export"]),
                                          **sec["export"]}, where="export")
    if "bench" in on:
        export_teacher = _teacher_export(root, finetune, export)
        # The distilled student before channel pruning: its own row (what pruning cost), scored on
        # dev by distill, or by bench when distill had no dev file (an autocompress trial).
        earlier = [prune.model] if prune is not None and distill is not None and prune.model else []
        arts, no_score = _bench_artifacts(finetune, deployed, quantize, export, export_teacher,
                                          earlier, earlier_scored=bool(distill and distill.dev_file))
        wired_b = {"artifacts": arts, "no_score": no_score,
                   "out": str(root / DEFAULT_FOLDERS["bench"] / "results.json"),
                   "seq_lens": [finetune.max_seq_len], "threads": [1], "score_file": data.dev_file}
        bench = from_dict(BenchConfig, {**wired_b, **sec["bench"]}, where="bench")
    return RunPlan(root, data, vocab, pretrain, finetune, evaluate, augment, distill, prune, quantize,
                   export, int8_export_config(export, quantize) if export else None, export_teacher,
                   bench)


def _wire_vocab(root: Path, data: DataConfig, augment: "AugmentSection | None",
                over: dict[str, Any]) -> VocabConfig:
    """The character vocabulary of a from-scratch teacher: from the training file (and the
    augmented questions when the teacher reads them)."""
    section = from_dict(VocabSection, over, where="vocab")
    files = [data.training_file(root)] + ([augment.output_file] if augment and augment.teacher else [])
    return VocabConfig(data_files=files, out_dir=str(root / DEFAULT_FOLDERS["vocab"]),
                       min_freq=section.min_freq, max_size=section.max_size)


def _pretrain_dir(root: Path, over: Mapping[str, Any]) -> str:
    return str(over.get("output_dir") or root / DEFAULT_FOLDERS["pretrain"])


def _wire_pretrain(root: Path, finetune: FinetuneConfig, over: Mapping[str, Any], *,
                   corpus: list[str], tokenizer: str, exclude: list[str]) -> PretrainConfig:
    """The pretrain stage: the encoder finetune's ``arch`` describes (section ``pretrain.arch``
    overrides it key by key), finetune's window length, seed, device and progress, ``corpus``
    and ``tokenizer`` by default; the run's report files (``exclude``) are always excluded,
    whatever the section says."""
    arch = {**to_dict(finetune.arch), **(over.get("arch") or {})}
    extra = over.get("exclude_files") or []
    extra = [x.strip() for x in extra.split(",")] if isinstance(extra, str) else list(extra)
    wired = {"corpus": corpus, "tokenizer": tokenizer, "output_dir": _pretrain_dir(root, over),
             "max_seq_len": min(finetune.max_seq_len, arch["max_position_embeddings"]),
             **{k: getattr(finetune, k) for k in ("seed", "device", "progress", "cache_dir")}}
    return from_dict(PretrainConfig, {**wired, **over, "arch": arch,
                                      "exclude_files": list(dict.fromkeys(exclude + extra))},
                     where="pretrain")


def int8_export_config(export: ExportConfig, quantize: QuantizeConfig | None) -> ExportConfig | None:
    """The int8 graph of the quantize stage (PTQ/QAT), converted for export's targets into a
    sibling folder of export's; None when there is no int8 graph. ONNX comes from fp32 only, and
    so do int8 embedding tables (``export.embeddings: int8`` re-traces the model; the quantized
    graph keeps the tables it was quantized with)."""
    if quantize is None or quantize.method not in ("ptq", "qat"):
        return None
    return dataclasses.replace(
        export, out_dir=str(Path(export.out_dir).with_name(DEFAULT_FOLDERS["export_int8"])),
        inference_model=str(Path(quantize.out_dir) / "inference" / "model"),
        precisions=["fp32"], onnx=False, onnx_int8=False, embeddings="fp32")


def _wire_finetune(root: Path, data: DataConfig, over: dict[str, Any], needs_vocab: bool
                   ) -> FinetuneConfig:
    """The teacher: trained on the data section's files, with the run's vocab when it needs one."""
    wired = {"train_file": data.training_file(root), "dev_file": data.dev_file,
             "validation_file": data.validation_path(root), "max_context_chars": data.max_context_chars,
             "output_dir": str(root / DEFAULT_FOLDERS["finetune"]),
             "tokenizer": str(root / DEFAULT_FOLDERS["vocab"]) if needs_vocab else ""}
    return from_dict(FinetuneConfig, {**wired, **over}, where="finetune")


def _wire_evaluate(root: Path, data: DataConfig, finetune: FinetuneConfig, over: dict[str, Any]
                   ) -> EvaluateConfig:
    """Scores the teacher's saved model on dev with the teacher's inference settings."""
    wired = {"model": str(Path(finetune.output_dir) / "model"), "data_file": data.dev_file,
             "out_dir": str(root / DEFAULT_FOLDERS["evaluate"]),
             "max_context_chars": data.max_context_chars,
             **{k: getattr(finetune, k) for k in ("n_best", "max_answer_length", "cache_dir", "progress")}}
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
    compared with on the same backends (not only against dygraph), all fp32 (int8 embedding
    tables are a student's export choice, not the baseline's); None when export already takes
    the teacher or there is no export."""
    teacher_model = str(Path(finetune.output_dir) / "model")
    if export is None or export.model == teacher_model:
        return None
    return dataclasses.replace(export, model=teacher_model, targets=["x86"], precisions=["fp32"],
                               onnx_int8=False, inference_model="", embeddings="fp32",
                               out_dir=str(root / DEFAULT_FOLDERS["export_teacher"]))


def _bench_artifacts(finetune: FinetuneConfig, deployed: str, quantize: QuantizeConfig | None,
                     export: ExportConfig | None, export_teacher: ExportConfig | None,
                     earlier: list[str] = (), earlier_scored: bool = True) -> tuple[list[str], list[str]]:
    """What the bench stage times, and which of those it does not score again: model folders
    whose own stage scored them on this dev file (the teacher, ``earlier`` students of the
    chain unless not ``earlier_scored``, the deployed model), and the teacher's baseline graph."""
    teacher_model = str(Path(finetune.output_dir) / "model")
    arts, no_score = [teacher_model, *earlier], [teacher_model, *(earlier if earlier_scored else [])]
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


def run_layout(plan: RunPlan) -> RunLayout:
    """The run folder's layout for ``plan``: what ``run`` writes to ``RUN_DIR/layout.json`` and
    what ``report`` and the benchmarks read."""
    root, ex, be = plan.run_dir, plan.export, plan.bench
    rel = functools.partial(relative_to_run, run_dir=root)
    folders = {"data": root / DEFAULT_FOLDERS["data"], "finetune": plan.finetune.output_dir,
               "evaluate": plan.evaluate.out_dir, "report": root / DEFAULT_FOLDERS["report"],
               # the students' folders, configured or not: the report looks for them
               "distill": root / DEFAULT_FOLDERS["distill"], "prune": root / DEFAULT_FOLDERS["prune"]}
    optional = {"vocab": plan.vocab and plan.vocab.out_dir, "augment": plan.augment and
                Path(plan.augment.output_file).parent, "pretrain": plan.pretrain and
                plan.pretrain.output_dir, "distill": plan.distill and plan.distill.output_dir,
                "prune": plan.prune and plan.prune.output_dir, "quantize": plan.quantize and
                plan.quantize.out_dir, "bench": be and Path(be.out).parent}
    folders.update({k: v for k, v in optional.items() if v})
    files = {"merged_train": plan.data.writes_training_file and plan.data.training_file(root),
             "validation": plan.data.validation_path(root),
             "augmented_train": plan.augment and plan.augment.output_file,
             "bench_results": be and be.out}
    exports = {key: ExportFolder(rel(c.out_dir), role) for key, c, role in (
        ("export", ex, "deployed"), ("export_int8", plan.export_int8, "int8"),
        ("export_teacher", plan.export_teacher, "teacher_baseline")) if c is not None}
    folders = {k: rel(v) for k, v in folders.items()}
    models = {name: root / folders[stage] / "model" for name, stage in MODEL_STAGES.items()}
    candidates = [c.model for c in (plan.quantize, ex) if c is not None] or [
        str(Path(plan.deployed_stage().output_dir) / "model")]
    deployed = next((name for c in candidates for name, m in models.items() if same_path(c, m)),
                    None)
    return RunLayout(folders=folders, files={k: rel(v) for k, v in files.items() if v},
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
    plan = build_plan(doc)
    layout = run_layout(plan)  # the layout of the whole run, also when one stage runs by name
    plan = _select_only(doc, plan, only)
    layout.write(plan.run_dir)
    results = run_stages(plan, layout, only=only, resume=resume, on_stage=on_stage,
                         callbacks=callbacks, logger=log)
    if only is None:
        rep = report_stage.run(report_stage.ReportConfig(run_dir=str(plan.run_dir)))
        results["report"] = {k: v for k, v in rep.items() if k != "rows"}
        log.info("report: %s", rep["report_html"])
    return results


def _select_only(doc: dict[str, Any], plan: RunPlan, only: str | None) -> RunPlan:
    """The plan that runs stage ``only``: distill and prune asked for by name run with their
    defaults even without a section; the other optional stages need theirs."""
    if only in ("distill", "prune") and getattr(plan, only) is None:
        return dataclasses.replace(plan, **{only: getattr(build_plan(doc, enable=(only,)), only)})
    if only == "augment" and plan.augment is None:
        raise ConfigError("stage augment has no section in this config: add `augment: {}` "
                          "(its output feeds distill)")
    if only in ("pretrain", "quantize", "export", "bench") and getattr(plan, only) is None:
        raise ConfigError(f"stage {only} has no section in this config: add `{only}: {{}}`")
    return plan
