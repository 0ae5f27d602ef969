"""Fine-tune a teacher QA model on SQuAD/CMRC data with PaddleNLP's Trainer.

Also the training loop every training stage shares (:func:`train`, given a :class:`Recipe`): the
resume checks, the data, the Trainer run (its pieces are in :mod:`.trainer`), then save-and-score.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..core.config import opt, read_yaml, to_dict
from ..core.errors import ConfigError, PaddleQAError
from ..core.io import write_json, write_yaml
from ..core.manifest import RESOLVED_CONFIG, sha256_path, write_manifest
from ..core.metrics import cmrc_scores
from ..core.postprocess import predictions_from_spans
from ..core.settings import AnswerSettings, FeatureSettings, ScheduleSettings
from ..models.build import ArchConfig, build_from_scratch, count_params, load_model
from ..models.flops import flops_per_query
from ..runtime.evaluate import answer
from ..text.dataset import gold_references, load_examples
from ..text.features import FeatureParams, TRAINING_INFO, cached_features
from ..text.tokenizer import load_tokenizer

log = logging.getLogger(__name__)

CURVE = "learning_curve.json"
RUN_INPUTS = "run_inputs.json"  # sha256 of the inputs the checkpoints were trained from


@dataclasses.dataclass
class TrainSettings(ScheduleSettings, FeatureSettings, AnswerSettings):
    """What every training stage (finetune, distill) shares: data, schedule, checkpoints, scoring."""

    train_file: str = opt("", help="SQuAD/CMRC training JSON")
    dev_file: str = opt("", help="SQuAD/CMRC dev JSON scored after training ('' = none)")
    validation_file: str = opt("", help="held-out training questions (the data stage's split by "
                               "context) for the per-epoch curve and the score settings are chosen "
                               "on; '' = the curve uses dev_file")
    output_dir: str = opt("", help="run folder: checkpoints/, model/, metrics, manifest")
    eval_each_epoch: bool = opt(True, help="score the validation file (else the dev file) after "
                                "every epoch: the learning curve")
    eval_max_questions: int = opt(0, help="questions used for per-epoch scores (0 = all)")
    # the schedule (epochs ... device), n_best, max_answer_length, max_context_chars, cache_dir,
    # progress: inherited (core/settings.py)

    def __post_init__(self) -> None:
        super().__post_init__()  # the schedule's checks
        if not self.train_file:
            raise ValueError("train_file is required")
        if not self.output_dir:
            raise ValueError("output_dir is required")
        for name in ("n_best", "max_answer_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.eval_max_questions < 0:
            raise ValueError("eval_max_questions must be >= 0")


@dataclasses.dataclass
class FinetuneConfig(TrainSettings):
    """Fine-tune (or train from scratch) an extractive QA model with PaddleNLP's Trainer."""

    model: str = opt("", help="pretrained model: hub name or folder; '' = from scratch (see arch)")
    tokenizer: str = opt("", help="tokenizer folder or hub name; default: the model's own")
    arch: ArchConfig = opt(factory=ArchConfig, help="architecture when training from scratch")
    max_seq_len: int = opt(384, help="tokens per window (question + context + 3 special)")
    doc_stride: int = opt(128, help="step in tokens between overlapping context windows")
    max_query_length: int = opt(64, help="question tokens kept")
    overlap_types: bool = opt(False, help="mark question/context tokens that occur in both with "
                              "token types 2/3 (an exact-match signal for from-scratch models)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.model and not self.tokenizer:
            raise ValueError("a from-scratch model (model: '') needs a tokenizer: build one with "
                             "`paddleqa vocab build` and set tokenizer to its folder")
        self.feature_params()  # validates the window settings
        if self.max_seq_len > self.arch.max_position_embeddings and not self.model:
            raise ValueError(f"max_seq_len ({self.max_seq_len}) exceeds arch.max_position_embeddings "
                             f"({self.arch.max_position_embeddings})")

    def feature_params(self):
        return FeatureParams(self.max_seq_len, self.doc_stride, self.max_query_length,
                             self.overlap_types)


@dataclasses.dataclass
class Recipe:
    """What a training stage trains, handed to :func:`train`.

    ``build()`` runs after the seed is set and returns ``(trainable, model)``: the layer the
    Trainer optimises (the model itself, or a distillation wrapper around it) and the QA model
    that is scored, saved to ``model/`` and later exported.
    """

    stage: str
    tokenizer: Any
    params: Any  # FeatureParams
    build: Callable[[], tuple[Any, Any]]
    inputs: dict[str, str]  # name -> path of what decides the result besides the data (hashed)
    info: dict[str, Any] = dataclasses.field(default_factory=dict)  # extra training-record fields
    metrics: dict[str, Any] = dataclasses.field(default_factory=dict)  # extra metrics (build may fill)


def _comparable(cfg: dict[str, Any]) -> dict[str, Any]:
    """Config fields that decide the result (progress display and eval extras do not)."""
    skip = {"progress", "cache_dir", "eval_each_epoch", "eval_max_questions", "logging_steps", "device"}
    return {k: v for k, v in cfg.items() if k not in skip}


def _input_hashes(config: Any, inputs: dict[str, str]) -> dict[str, str]:
    """sha256 of the inputs that decide what the checkpoints hold (local files/folders only);
    ``config`` is a TrainSettings, or pretrain's config (no train_file: its inputs say it all)."""

    paths = {"train_file": getattr(config, "train_file", ""), **inputs}
    return {k: sha256_path(p) for k, p in paths.items() if p and Path(p).exists()}


def stale_reason(config: TrainSettings, inputs: dict[str, str]) -> str | None:
    """Why the run in ``config.output_dir`` cannot be continued with this config, or None."""

    out = Path(config.output_dir)
    previous = out / RESOLVED_CONFIG
    if previous.exists():
        old, new = _comparable(read_yaml(previous)), _comparable(to_dict(config))
        diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        if diff:
            return f"its checkpoints were made with a different config (differs in: {', '.join(diff)})"
    recorded = out / RUN_INPUTS
    if recorded.exists():
        old_inputs = json.loads(recorded.read_text(encoding="utf-8"))
        changed = sorted(k for k, v in _input_hashes(config, inputs).items() if old_inputs.get(k) != v)
        if changed:
            return f"{', '.join(changed)} changed since its checkpoints were made"
    return None


def _check_output_dir(config: TrainSettings, resume: bool, inputs: dict[str, str]) -> str | None:
    """Refuse to mix runs: returns the checkpoint to resume from, if any."""
    from paddlenlp.trainer.trainer_utils import get_last_checkpoint  # paddlenlp: deferred on purpose

    out = Path(config.output_dir)
    ckpt_dir = out / "checkpoints"
    last = get_last_checkpoint(str(ckpt_dir)) if ckpt_dir.is_dir() else None
    if not resume:
        if last or (out / "model").exists():
            raise PaddleQAError(
                f"{out} already holds a run ({'checkpoint ' + Path(last).name if last else 'model/'}); "
                "pass --resume to continue it, or choose another output_dir"
            )
        return None
    why = stale_reason(config, inputs)
    if why:
        raise PaddleQAError(f"cannot resume {out}: {why}; use the same config and inputs, delete "
                            "the folder or choose a new output_dir")
    if last is None:
        log.info("no checkpoint in %s yet; training from the start", ckpt_dir)
    else:
        log.info("resuming from %s", last)
    return last


def run(config: FinetuneConfig, *, resume: bool = False, callbacks: Sequence[Any] = ()) -> dict:
    """Train, save ``model/``, score the dev file; returns the metrics (also in metrics.json)."""

    tokenizer = load_tokenizer(config.tokenizer or config.model)
    params = config.feature_params()

    def build():
        if config.model:
            model = load_model(config.model)
        else:
            model = build_from_scratch(config.arch, vocab_size=len(tokenizer),
                                       pad_token_id=tokenizer.pad_token_id or 0)
        n_types = getattr(model.config, "type_vocab_size", 0)
        if params.overlap_types and n_types < 4:
            raise ConfigError(f"overlap_types needs a model with >= 4 token types; {config.model} "
                              f"has {n_types}. Set overlap_types: false for this model.")
        return model, model

    recipe = Recipe("finetune", tokenizer, params, build,
                    inputs={"model": config.model, "tokenizer": config.tokenizer})
    return train(config, recipe, resume=resume, callbacks=callbacks)


def train(config: TrainSettings, recipe: Recipe, *, resume: bool = False,
          callbacks: Sequence[Any] = ()) -> dict:
    """The training loop every stage shares: PaddleNLP's Trainer over cached window features,
    resumable checkpoints, per-epoch dev points, ``model/`` + records + manifest at the end."""
    import paddle  # deferred on purpose: the stages load without paddle

    from . import trainer as tr  # imports paddle and paddlenlp at load: deferred on purpose

    started = time.time()
    out = Path(config.output_dir)
    last_checkpoint = start_run(config, resume, recipe.inputs)
    paddle.set_device(config.device)
    data = load_training_data(config, recipe)

    paddle.seed(config.seed)
    trainable, model = recipe.build()
    sizes = count_params(model)
    log.info("model: %s params (%s non-embedding)", f"{sizes['params']:,}",
             f"{sizes['non_embedding_params']:,}")
    predict = _predictor(config, recipe, model)
    label, curve_examples = ("validation", data.validation_examples) if config.validation_file else (
        "dev", data.dev_examples)
    if config.eval_max_questions:
        curve_examples = curve_examples[: config.eval_max_questions]
    epoch_eval = tr.EpochEval(curve_examples if config.eval_each_epoch else [], predict, trainable,
                              _learning_curve(out, last_checkpoint), out / CURVE, started, label)
    trainer = tr.make_trainer(config, trainable, recipe.tokenizer, data.train_feats,
                              [tr.StepSeed(config.seed), epoch_eval, *callbacks])
    t_train = time.time()
    result = trainer.train(resume_from_checkpoint=last_checkpoint)
    train_seconds = time.time() - t_train

    replicas = tr.replica_fingerprints(model)  # every rank takes part (a collective)
    if not trainer.is_world_process_zero():
        return {}  # data-parallel: rank 0 alone saves, scores and writes the records
    model_dir = _save_model(config, recipe, model, out)
    write_json(out / "train_log.json", trainer.state.log_history)
    metrics: dict[str, Any] = {
        **sizes,
        **_data_metrics(data),
        **tr.run_metrics(trainer.state, result, train_seconds, last_checkpoint, "train_windows_per_second"),
    }
    metrics.update(recipe.metrics)
    _save_and_score(config, recipe, model, model_dir, metrics, replicas, predict, data)
    inputs = {"train_file": config.train_file, "dev_file": config.dev_file or None,
              "validation_file": config.validation_file or None}
    inputs.update({k: p for k, p in recipe.inputs.items() if p and Path(p).exists()})
    write_manifest(out, recipe.stage, to_dict(config), inputs, {"model": model_dir}, metrics,
                   started=started)
    return metrics


def start_run(config: Any, resume: bool, inputs: dict[str, str]) -> str | None:
    """Check the output folder (see :func:`_check_output_dir`), then record the config and the
    input hashes first: ``--resume`` compares the next run with these. Returns the checkpoint."""
    last_checkpoint = _check_output_dir(config, resume, inputs)
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_yaml(to_dict(config), out / RESOLVED_CONFIG)
    write_json(out / RUN_INPUTS, _input_hashes(config, inputs))
    return last_checkpoint


# ---------------------------------------------------------------- data
@dataclasses.dataclass
class TrainingData:
    """The questions one training run reads, and the training windows built from them."""

    train_examples: list  # QAExample
    train_report: Any  # what loading the training file dropped and repaired
    dev_examples: list  # QAExample ([] without a dev file)
    train_feats: dict[str, np.ndarray]  # training windows with their span labels
    validation_examples: list  # QAExample ([] without a validation file)


def load_training_data(config: TrainSettings, recipe: Recipe) -> TrainingData:
    """Training and dev questions, and the training windows (from the feature cache)."""
    train_examples, train_report = load_examples(config.train_file, mode="train",
                                                 max_context_chars=config.max_context_chars)
    if not train_examples:
        raise PaddleQAError(f"{config.train_file}: no usable training questions "
                            f"({train_report.dropped} dropped; see `paddleqa data check`)")
    dev_examples, validation_examples = [], []
    if config.dev_file:
        dev_examples, _ = load_examples(config.dev_file, mode="eval",
                                        max_context_chars=config.max_context_chars)
    if config.validation_file:
        validation_examples, _ = load_examples(config.validation_file, mode="eval",
                                               max_context_chars=config.max_context_chars)
    train_feats = cached_features(train_examples, recipe.tokenizer, recipe.params, train=True,
                                  cache_dir=config.cache_dir or None, progress=config.progress)
    log.info("training on %d questions -> %d windows (%d without the answer inside)",
             len(train_examples), len(train_feats["input_ids"]),
             int((train_feats["start_positions"] == 0).sum()))
    return TrainingData(train_examples, train_report, dev_examples, train_feats, validation_examples)


def _learning_curve(out: Path, last_checkpoint: str | None) -> list[dict[str, Any]]:
    """The per-epoch dev points so far: kept when resuming, else a new curve."""
    curve_path = out / CURVE
    if last_checkpoint and curve_path.exists():
        return json.loads(curve_path.read_text(encoding="utf-8"))
    return []


def _predictor(config: TrainSettings, recipe: Recipe, model) -> Callable[[list], dict[str, str]]:
    """``predict(examples) -> {qid: answer text}`` with ``model`` as it is when called."""

    def predict(examples) -> dict[str, str]:
        spans = answer(model, recipe.tokenizer, examples, recipe.params, n_best=config.n_best,
                       max_answer_length=config.max_answer_length, cache_dir=config.cache_dir or None,
                       progress=config.progress)
        return predictions_from_spans([ex.qid for ex in examples], spans)

    return predict


# ---------------------------------------------------------------- save and score
def _save_model(config: TrainSettings, recipe: Recipe, model, out: Path) -> Path:
    """Save ``out/model/``: the QA model itself (not a distillation wrapper) with its tokenizer,
    a plain model folder, and the training record (feature params, source)."""
    model_dir = out / "model"
    model.save_pretrained(str(model_dir))
    recipe.tokenizer.save_pretrained(str(model_dir))
    write_json(model_dir / TRAINING_INFO, {
        "feature_params": dataclasses.asdict(recipe.params),
        "train_file": config.train_file,
        "source": f"paddleqa {recipe.stage}",
        **recipe.info,
    })
    return model_dir


def _data_metrics(data: TrainingData) -> dict[str, Any]:
    """What the training run read: questions, windows, what loading dropped and repaired."""
    return {
        "train_questions": len(data.train_examples),
        "train_windows": int(len(data.train_feats["input_ids"])),
        "train_dropped": data.train_report.dropped,
        "train_repaired": data.train_report.repaired,
    }


def _save_and_score(config: TrainSettings, recipe: Recipe, model, model_dir: Path,
                    metrics: dict[str, Any], replicas: list[str],
                    predict: Callable[[list], dict[str, str]], data: TrainingData) -> None:
    """Add to ``metrics``: the replica check, FLOPs, the model's size, and the validation and dev
    scores (predictions written to ``validation_predictions.json`` / ``dev_predictions.json``)."""
    params = recipe.params
    if replicas:
        metrics["replica_weight_sha256"] = replicas
        metrics["replicas_identical"] = len(set(replicas)) == 1
        if len(set(replicas)) != 1:
            log.error("data-parallel replicas ended with different weights: %s", replicas)
    # FLOPs of one window at the length this model was trained and is evaluated with
    metrics["flops_per_query"] = flops_per_query(model.config, params.max_seq_len)
    metrics["flops_seq_len"] = params.max_seq_len
    metrics["model_bytes"] = sum(f.stat().st_size for f in model_dir.iterdir() if f.is_file())
    for name, path, examples in (("validation", config.validation_file, data.validation_examples),
                                 ("dev", config.dev_file, data.dev_examples)):
        if not examples:
            continue
        preds = predict(examples)
        write_json(model_dir.parent / f"{name}_predictions.json", preds)
        scores = cmrc_scores(gold_references(path), preds)
        metrics.update({f"{name}_{k}": v for k, v in scores.items()})
        teacher_f1 = recipe.metrics.get(f"teacher_{name}_f1")
        if teacher_f1:
            key = "f1_retention" if name == "dev" else "validation_f1_retention"
            metrics[key] = round(scores["f1"] / teacher_f1, 4)
        log.info("%s: EM %.3f F1 %.3f (%d questions)", name, scores["em"], scores["f1"], scores["total"])
