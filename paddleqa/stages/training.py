"""The training loop every training stage shares: :func:`train`, given a :class:`Recipe`.

finetune (the teacher), distill and prune (students against a teacher) describe what they train
as a :class:`Recipe`; :func:`train` does the rest: the output-folder and resume checks
(:func:`start_run`, which records the run as started in its manifest, see
:mod:`paddleqa.core.freshness`), the training questions and their cached windows, PaddleNLP's
Trainer (its pieces are in :mod:`.trainer`), then saving ``model/`` and scoring it on the
validation split and the dev file. ``paddleqa pretrain`` shares :func:`start_run` and the
schedule. paddle loads only when :func:`train` runs.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..core.config import opt, to_dict
from ..core.errors import PaddleQAError
from ..core.freshness import begin, resume_reason
from ..core.io import write_json
from ..core.manifest import write_manifest
from ..core.metrics import cmrc_scores
from ..core.postprocess import predictions_from_spans
from ..core.settings import AnswerSettings, FeatureSettings, ScheduleSettings
from ..models.build import count_params
from ..models.flops import flops_per_query
from ..runtime.evaluate import answer
from ..text.dataset import gold_references, load_examples
from ..text.features import TRAINING_INFO, cached_features
from ..text.tokenizer import token_counts, vocab_tokens

log = logging.getLogger(__name__)

CURVE = "learning_curve.json"


@dataclasses.dataclass
class TrainSettings(ScheduleSettings, FeatureSettings, AnswerSettings):
    """What every training stage (finetune, distill) shares: data, schedule, checkpoints, scoring."""

    train_file: str = opt("", help="SQuAD/CMRC training JSON")
    dev_file: str = opt("", help="SQuAD/CMRC dev JSON scored after training ('' = none)")
    validation_file: str = opt("", help="held-out training questions (the data stage's split by "
                               "context) for the per-epoch curve and the score settings are chosen "
                               "on; '' = the curve uses dev_file")
    extra_train_files: list[str] = opt(factory=list, help="more training files only this stage "
                                       "reads, merged with train_file: e.g. DRCD (after `paddleqa "
                                       "data simplify`) for a student alone, whose distill loss "
                                       "adds the teacher's predictions on it to the gold spans")
    output_dir: str = opt("", help="run folder: checkpoints/, model/, metrics, manifest")
    eval_each_epoch: bool = opt(True, help="score the validation file (else the dev file) after "
                                "every epoch: the learning curve", result=False)
    eval_max_questions: int = opt(0, help="questions used for per-epoch scores (0 = all)",
                                  result=False)
    # the schedule (epochs ... device), n_best, max_answer_length, max_context_chars, cache_dir,
    # progress: inherited (core/settings.py)

    def __post_init__(self) -> None:
        super().__post_init__()  # the schedule's checks
        if not self.train_file:
            raise ValueError("train_file is required")
        if not self.output_dir:
            raise ValueError("output_dir is required")
        for f in self.extra_train_files:
            if not f or (self.dev_file and Path(f).resolve() == Path(self.dev_file).resolve()):
                raise ValueError(f"extra_train_files: {f!r} is empty or the dev file; list training "
                                 "files only (the dev file's scores must stay unseen)")
        for name in ("n_best", "max_answer_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.eval_max_questions < 0:
            raise ValueError("eval_max_questions must be >= 0")


@dataclasses.dataclass
class Recipe:
    """What a training stage trains, handed to :func:`train`.

    ``build(data)`` runs after the seed is set, with the run's :class:`TrainingData`, and
    returns ``(trainable, model)``: the layer the
    Trainer optimises (the model itself, or a distillation wrapper around it) and the QA model
    that is scored, saved to ``model/`` and later exported.
    """

    stage: str
    tokenizer: Any
    params: Any  # FeatureParams
    build: Callable[[Any], tuple[Any, Any]]  # TrainingData -> (trainable, model)
    inputs: dict[str, str]  # name -> path of what decides the result besides the data (hashed)
    info: dict[str, Any] = dataclasses.field(default_factory=dict)  # extra training-record fields
    metrics: dict[str, Any] = dataclasses.field(default_factory=dict)  # extra metrics (build may fill)


def start_embeddings(model, source: str, std: str, tokenizer, ids: np.ndarray, seed: int
                     ) -> dict[str, Any] | None:
    """Start ``model``'s word embeddings from the trained table ``source`` (``''``: leave them
    random), with coverage counted over the token ids the run trains on; the report or None."""
    if not source:
        return None
    from ..models.tables import seed_embeddings

    return seed_embeddings(model, source, vocab_tokens(tokenizer), counts=token_counts(tokenizer, ids),
                           std=std, seed=seed, pad_token=tokenizer.pad_token or "[PAD]")


def provenance(report: dict[str, Any]) -> dict[str, Any]:
    """What a trained model's record keeps of :func:`start_embeddings`' report: where its
    embeddings came from (source, licence, sha256)."""
    return {k: report[k] for k in ("source", "licence", "sha256")}


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
    why = resume_reason(out, config, run_inputs(config, inputs))
    if why:
        raise PaddleQAError(f"cannot resume {out}: {why}; use the same config and inputs, delete "
                            "the folder or choose a new output_dir")
    if last is None:
        log.info("no checkpoint in %s yet; training from the start", ckpt_dir)
    else:
        log.info("resuming from %s", last)
    return last


def extra_file_inputs(config: Any) -> dict[str, str]:
    """``extra_train_files`` as manifest inputs (name -> path), so a changed file retrains."""
    return {f"extra_train_file_{i}": f for i, f in enumerate(getattr(config, "extra_train_files", []))}


def run_inputs(config: Any, inputs: dict[str, str]) -> dict[str, str]:
    """What decides a training run's checkpoints besides its config: ``inputs`` (name -> path)
    and, for a TrainSettings, its training files (pretrain's inputs say it all)."""
    return {"train_file": getattr(config, "train_file", ""), **extra_file_inputs(config), **inputs}


def start_run(config: Any, resume: bool, inputs: dict[str, str], stage: str) -> str | None:
    """Check the output folder (see :func:`_check_output_dir`), then record the run as started
    (its config and input hashes, :func:`paddleqa.core.freshness.begin`): ``--resume`` and the
    pipeline compare the next run with that record. Returns the checkpoint to resume from."""
    last_checkpoint = _check_output_dir(config, resume, inputs)
    begin(config.output_dir, stage, config, run_inputs(config, inputs))
    return last_checkpoint


def train(config: TrainSettings, recipe: Recipe, *, resume: bool = False,
          callbacks: Sequence[Any] = ()) -> dict:
    """The training loop every stage shares: PaddleNLP's Trainer over cached window features,
    resumable checkpoints, per-epoch dev points, ``model/`` + records + manifest at the end."""
    import paddle  # deferred on purpose: the stages load without paddle

    from . import trainer as tr  # imports paddle and paddlenlp at load: deferred on purpose

    started = time.time()
    out = Path(config.output_dir)
    last_checkpoint = start_run(config, resume, recipe.inputs, recipe.stage)
    paddle.set_device(config.device)
    data = load_training_data(config, recipe)

    paddle.seed(config.seed)
    trainable, model = recipe.build(data)
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
    inputs = {"train_file": config.train_file, **extra_file_inputs(config),
              "dev_file": config.dev_file or None, "validation_file": config.validation_file or None}
    inputs.update({k: p for k, p in recipe.inputs.items() if p and Path(p).exists()})
    write_manifest(out, recipe.stage, to_dict(config), inputs, {"model": model_dir}, metrics,
                   started=started)
    return metrics


# ---------------------------------------------------------------- data
@dataclasses.dataclass
class TrainingData:
    """The questions one training run reads, and the training windows built from them."""

    train_examples: list  # QAExample
    train_report: Any  # what loading the training file dropped and repaired
    dev_examples: list  # QAExample ([] without a dev file)
    train_feats: dict[str, np.ndarray]  # training windows with their span labels
    validation_examples: list  # QAExample ([] without a validation file)
    extra_questions: int = 0  # of train_examples, how many came from extra_train_files


def load_training_data(config: TrainSettings, recipe: Recipe) -> TrainingData:
    """Training and dev questions, and the training windows (from the feature cache)."""
    train_examples, train_report = load_examples(config.train_file, mode="train",
                                                 max_context_chars=config.max_context_chars)
    if not train_examples:
        raise PaddleQAError(f"{config.train_file}: no usable training questions "
                            f"({train_report.dropped} dropped; see `paddleqa data check`)")
    extra = 0
    for f in config.extra_train_files:
        more, report = load_examples(f, mode="train", max_context_chars=config.max_context_chars)
        if not more:
            raise PaddleQAError(f"{f} (extra_train_files): no usable training questions "
                                f"({report.dropped} dropped; see `paddleqa data check`)")
        log.info("%s: %d more training questions (extra_train_files)", f, len(more))
        train_examples, extra = train_examples + more, extra + len(more)
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
    return TrainingData(train_examples, train_report, dev_examples, train_feats, validation_examples,
                        extra)


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
        "extra_train_questions": data.extra_questions,
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
