"""The whole chain in one place: one YAML -> stage configs -> stages run in order in one run dir.

    data check  ->  vocab (from-scratch tokenizer)  ->  finetune (teacher)  ->  evaluate
                ->  augment (synonym variants of the training questions)  ->  distill (student)
                ->  prune (width + depth pruning of the teacher, distilled back)
                ->  quantize (int8 PTQ/QAT or k-means of the deployed model)
                ->  export (inference model + Lite .nb, fp32 and the int8 graph)
                ->  bench (latency, throughput, RSS of every runnable artifact, next to the
                           teacher's own exported inference model and x86 .nb as the baseline)

The deployed model (what quantize and export take) is the distilled student when ``distill``
is configured, else the pruned one, else the teacher; ``quantize.model``/``export.model``
override it.

A pipeline YAML has ``run_dir`` and one section per stage holding only overrides of that stage's
defaults; the wiring between stages (which folder feeds which) is done here. ``augment`` and
``distill`` and ``prune`` run only when the YAML has their section (``distill: {}`` takes every default); the
students train on the augmented file when ``augment`` is on. A stage whose
``manifest.json`` records the same config and the same input hashes is skipped, so re-running a
finished or interrupted run only does what is left.
"""
from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any, Callable

from .core.config import ConfigError, from_dict, opt, to_dict
from .core.manifest import MANIFEST, sha256_path, write_manifest
from .runtime import bench as bench_stage, evaluate as evaluate_stage, report as report_stage
from .runtime.bench import BenchConfig
from .runtime.evaluate import EvaluateConfig
from .stages import (
    distill as distill_stage,
    export as export_stage,
    finetune as finetune_stage,
    prune as prune_stage,
    quantize as quantize_stage,
)
from .stages.distill import DistillConfig
from .stages.export import ExportConfig
from .stages.finetune import FinetuneConfig, stale_reason
from .stages.prune import PruneConfig
from .stages.quantize import QuantizeConfig
from .text import augment as augment_stage, tokenizer as vocab_stage
from .text.augment import AugmentConfig
from .text.dataset import load_examples

log = logging.getLogger(__name__)

STAGES = ("data", "vocab", "finetune", "evaluate", "augment", "distill", "prune", "quantize",
          "export", "bench")
# run only when their section is present
OPTIONAL = ("augment", "distill", "prune", "quantize", "export", "bench")


@dataclasses.dataclass
class DataSection:
    """Where the data comes from (paths may use ${VAR:-default})."""

    train_file: str = opt("", help="SQuAD/CMRC training JSON")
    dev_file: str = opt("", help="SQuAD/CMRC dev JSON")
    max_context_chars: int = opt(5000, help="paragraphs longer than this are dropped (reported)")

    def __post_init__(self) -> None:
        if not self.train_file or not self.dev_file:
            raise ValueError("data.train_file and data.dev_file are required")


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
    """Typed config of every stage: defaults <- wiring from earlier stages <- YAML overrides."""

    run_dir, sec = _sections(doc)
    root = Path(run_dir)
    data = from_dict(DataSection, sec["data"], where="data")
    vocab = from_dict(VocabSection, sec["vocab"], where="vocab")
    ft_over = dict(sec["finetune"])
    needs_vocab = not ft_over.get("model") and not ft_over.get("tokenizer")
    wired_ft = {
        "train_file": data.train_file,
        "dev_file": data.dev_file,
        "output_dir": str(root / "teacher"),
        "max_context_chars": data.max_context_chars,
        "tokenizer": str(root / "vocab") if needs_vocab else "",
    }
    finetune = from_dict(FinetuneConfig, {**wired_ft, **ft_over}, where="finetune")
    wired_ev = {
        "model": str(root / "teacher" / "model"),
        "data_file": data.dev_file,
        "out_dir": str(root / "evaluate"),
        "max_context_chars": data.max_context_chars,
        "n_best": finetune.n_best,
        "max_answer_length": finetune.max_answer_length,
        "cache_dir": finetune.cache_dir,
        "progress": finetune.progress,
    }
    evaluate = from_dict(EvaluateConfig, {**wired_ev, **sec["evaluate"]}, where="evaluate")
    augment = None
    if "augment" in doc:
        wired_aug = {"input_file": data.train_file, "output_file": str(root / "augment" / "train.json")}
        augment = from_dict(AugmentConfig, {**wired_aug, **sec["augment"]}, where="augment")
    shared = ("dev_file", "max_context_chars", "cache_dir", "progress", "device", "n_best",
              "max_answer_length", "eval_max_questions", "seed")
    wired_di = {
        **{k: getattr(finetune, k) for k in shared},
        "train_file": augment.output_file if augment else data.train_file,
        "teacher": str(Path(finetune.output_dir) / "model"),
        "output_dir": str(root / "distill"),
    }
    distill = from_dict(DistillConfig, {**wired_di, **sec["distill"]}, where="distill")
    wired_pr = {**wired_di, "output_dir": str(root / "prune")}
    prune = from_dict(PruneConfig, {**wired_pr, **sec["prune"]}, where="prune")
    deployed = (distill.output_dir if "distill" in doc else prune.output_dir if "prune" in doc
                else finetune.output_dir)
    deployed = str(Path(deployed) / "model")
    wired_q = {"model": deployed, "out_dir": str(root / "quantize"), "dev_file": data.dev_file,
               "calib_file": data.train_file, "cache_dir": finetune.cache_dir,
               "progress": finetune.progress}
    quantize = from_dict(QuantizeConfig, {**wired_q, **sec["quantize"]}, where="quantize") \
        if "quantize" in doc else None
    export = None
    if "export" in doc:
        export = from_dict(ExportConfig, {"model": quantize.model if quantize else deployed,
                                          "out_dir": str(root / "export"), **sec["export"]},
                           where="export")
    bench = export_teacher = None
    if "bench" in doc:
        teacher_model = str(Path(finetune.output_dir) / "model")
        arts = [teacher_model]
        # Model folders whose own stage scored them on this dev file are timed, not re-scored.
        no_score = [teacher_model]
        if export and export.model != teacher_model:
            arts.append(export.model)
            if export.model == deployed and deployed != teacher_model:
                no_score.append(deployed)
            # The teacher's own fp32 inference model and x86 .nb: the latency baseline the
            # students are compared with on the same backends (not only against dygraph).
            export_teacher = dataclasses.replace(export, model=teacher_model, targets=["x86"],
                                                 precisions=["fp32"], inference_model="",
                                                 out_dir=str(root / "export-teacher"))
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
        if quantize and quantize.method in ("ptq", "qat"):
            arts.append(str(Path(quantize.out_dir) / "inference"))
        wired_b = {"artifacts": arts, "no_score": no_score, "out": str(root / "bench" / "results.json"),
                   "seq_lens": [finetune.max_seq_len], "threads": [1], "score_file": data.dev_file}
        bench = from_dict(BenchConfig, {**wired_b, **sec["bench"]}, where="bench")
    return {"run_dir": root, "data": data, "vocab": vocab if needs_vocab else None,
            "finetune": finetune, "evaluate": evaluate, "augment": augment,
            "distill": distill if "distill" in doc else None, "distill_config": distill,
            "prune": prune if "prune" in doc else None, "prune_config": prune,
            "quantize": quantize, "export": export, "export_teacher": export_teacher, "bench": bench}


def training_inputs(config: Any) -> dict[str, str]:
    """The inputs a training stage (finetune, distill, prune) records in its manifest."""
    inputs = {"train_file": config.train_file, "dev_file": config.dev_file}
    if getattr(config, "teacher", ""):
        inputs["teacher"] = config.teacher
    return inputs


def training_done(config: Any) -> bool:
    """True when a training stage's folder already holds a finished run of this config."""
    return _up_to_date(Path(config.output_dir), config, training_inputs(config))


def _up_to_date(out_dir: Path, config: Any, inputs: dict[str, str], prefix: str = "") -> bool:
    """True when ``out_dir`` holds a manifest for this exact config and these exact inputs."""
    path = out_dir / f"{prefix}{MANIFEST}"
    if not path.exists():
        return False
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    if manifest.get("config") != to_dict(config):
        return False
    recorded = manifest.get("inputs", {})
    for name, p in inputs.items():
        if not p:
            continue
        if name not in recorded or not Path(p).exists() or recorded[name]["sha256"] != sha256_path(p):
            return False
    for name, rec in manifest.get("outputs", {}).items():
        if not Path(rec["path"]).exists() or rec["sha256"] != sha256_path(rec["path"]):
            log.warning("%s: output %s changed since it was written; redoing the stage", out_dir, name)
            return False
    return True


def _set_aside_if_stale(out_dir: Path, config: Any, inputs: dict[str, str]) -> None:
    """A training folder made with another config or other inputs cannot be resumed; rather than
    refuse (as ``--resume`` on the command line does) or delete it, the pipeline renames it
    ``<folder>.superseded-<time>`` and trains afresh, so nothing is lost."""
    import datetime as _dt


    if not out_dir.exists():
        return
    why = stale_reason(config, inputs)
    if why is None:
        return
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    target = out_dir.with_name(f"{out_dir.name}.superseded-{stamp}")
    out_dir.rename(target)
    log.warning("%s: %s; kept the old run as %s and training afresh", out_dir, why, target)


def run(doc: dict[str, Any], *, only: str | None = None, resume: bool = True,
        on_stage: Callable[[str, dict], None] | None = None) -> dict[str, dict]:
    """Run every stage (or ``only`` one) of a pipeline document; returns each stage's metrics."""

    if only is not None and only not in STAGES:
        raise ConfigError(f"unknown stage {only!r}; stages: {', '.join(STAGES)}")
    cfg = stage_configs(doc)
    for name in ("distill", "prune"):
        if only == name and cfg[name] is None:
            cfg[name] = cfg[f"{name}_config"]  # asked for by name: run it with its defaults
    if only == "augment" and cfg["augment"] is None:
        raise ConfigError("stage augment has no section in this config: add `augment: {}` "
                          "(its output feeds distill)")
    for name in ("quantize", "export", "bench"):
        if only == name and cfg[name] is None:
            raise ConfigError(f"stage {name} has no section in this config: add `{name}: {{}}`")
    root: Path = cfg["run_dir"]
    results: dict[str, dict] = {}

    def wanted(name: str) -> bool:
        return only is None or only == name

    def stage(name: str, out_dir: Path, config: Any, inputs: dict[str, str], work: Callable[[], dict],
              prefix: str = "", trained_from: dict[str, str] | None = None, key: str = ""):
        """Run one stage unless its manifest shows it already ran with this config and inputs."""
        if not wanted(name):
            return
        key = key or name
        if _up_to_date(out_dir, config, inputs, prefix):
            log.info("stage %s: up to date, skipped", name)
            results[key] = json.loads((out_dir / f"{prefix}metrics.json").read_text(encoding="utf-8"))
        else:
            log.info("stage %s: running", name)
            if trained_from is not None:
                _set_aside_if_stale(out_dir, config, trained_from)
            results[key] = work()
        if on_stage:
            on_stage(key, results[key])

    data = cfg["data"]
    data_files = {"train_file": data.train_file, "dev_file": data.dev_file}

    def check_data() -> dict:
        metrics = {}
        for name, mode in (("train_file", "train"), ("dev_file", "eval")):
            _, report = load_examples(data_files[name], mode=mode, max_context_chars=data.max_context_chars)
            summary = report.summary()
            summary.pop("findings")
            metrics[name.replace("_file", "")] = summary
        write_manifest(root / "data", "data", to_dict(data), data_files, {}, metrics)
        return metrics

    stage("data", root / "data", data, data_files, check_data)
    if cfg["vocab"] is not None:
        vcfg = vocab_stage.VocabConfig(data_files=[data.train_file], out_dir=str(root / "vocab"),
                                       min_freq=cfg["vocab"].min_freq, max_size=cfg["vocab"].max_size)
        stage("vocab", root / "vocab", vcfg, {"data_0": data.train_file}, lambda: vocab_stage.run(vcfg))
    ft = cfg["finetune"]
    stage("finetune", Path(ft.output_dir), ft, training_inputs(ft),
          lambda: finetune_stage.run(ft, resume=resume),
          trained_from={"model": ft.model, "tokenizer": ft.tokenizer})
    ev = cfg["evaluate"]
    stage("evaluate", Path(ev.out_dir), ev, {"model": ev.model, "data_file": ev.data_file},
          lambda: evaluate_stage.run(ev))
    aug = cfg["augment"]
    if aug is not None:
        out = Path(aug.output_file)
        stage("augment", out.parent, aug, {"input_file": aug.input_file},
              lambda: augment_stage.run(aug, progress=ft.progress), prefix=out.name[: -len("json")])
    di = cfg["distill"]
    if di is not None:
        stage("distill", Path(di.output_dir), di,
              training_inputs(di),
              lambda: distill_stage.run(di, resume=resume), trained_from={"teacher": di.teacher})
    pr = cfg["prune"]
    if pr is not None:
        stage("prune", Path(pr.output_dir), pr,
              training_inputs(pr),
              lambda: prune_stage.run(pr, resume=resume), trained_from={"teacher": pr.teacher})
    qu = cfg["quantize"]
    if qu is not None:

        stage("quantize", Path(qu.out_dir), qu, {"model": qu.model, "dev_file": qu.dev_file,
                                                 "calib_file": qu.calib_file},
              lambda: quantize_stage.run(qu))
    ex = cfg["export"]
    if ex is not None:

        stage("export", Path(ex.out_dir), ex, {"model": ex.model}, lambda: export_stage.run(ex))
        if qu is not None and qu.method in ("ptq", "qat"):
            # The int8 graph of the quantize stage, converted for the same targets.
            # (ONNX is converted from the fp32 graph only.)
            ex8 = dataclasses.replace(ex, out_dir=str(Path(ex.out_dir).with_name("export-int8")),
                                      inference_model=str(Path(qu.out_dir) / "inference" / "model"),
                                      precisions=["fp32"], onnx=False)
            stage("export", Path(ex8.out_dir), ex8,
                  {"model": ex8.model, "inference_model": ex8.inference_model + ".pdmodel"},
                  lambda: export_stage.run(ex8), key="export_int8")
        ext = cfg["export_teacher"]
        if ext is not None:
            stage("export", Path(ext.out_dir), ext, {"model": ext.model}, lambda: export_stage.run(ext),
                  key="export_teacher")
    be = cfg["bench"]
    if be is not None:

        def do_bench() -> dict:
            result = bench_stage.run(be)
            write_manifest(Path(be.out).parent, "bench", to_dict(be), {a: a for a in be.artifacts},
                           {"results": be.out},
                           {"rows": result["rows"]})
            return {"rows": result["rows"]}

        stage("bench", Path(be.out).parent, be, {a: a for a in be.artifacts}, do_bench)
    if only is None:

        rep = report_stage.run(report_stage.ReportConfig(run_dir=str(root)))
        results["report"] = {k: v for k, v in rep.items() if k != "rows"}
        log.info("report: %s", rep["report_html"])
    return results
