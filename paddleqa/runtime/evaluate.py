"""Run an artifact over a SQuAD/CMRC file: ``evaluate`` scores it with the official CMRC 2018
metric (and bootstrap intervals), ``predict`` writes a leaderboard submission for a file with or
without answers. Both go through :func:`answer_file`: same windows, runtime and post-processor."""
from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Sequence

from ..core.config import opt, to_dict
from ..core.errors import PaddleQAError
from ..core.io import write_json
from ..core.manifest import write_manifest
from ..core.postprocess import best_spans, predictions_from_spans
from ..core.settings import InferenceSettings
from ..core.stats import DEFAULT_RESAMPLES, DEFAULT_SEED, scores_with_intervals
from ..models.build import count_params
from ..text.dataset import QAExample, gold_references, load_examples
from ..text.features import FeatureParams, cached_features, feature_params_for
from ..text.tokenizer import load_tokenizer
from .artifacts import Runner, model_runner, open_artifact, predict_logits

log = logging.getLogger(__name__)


@dataclasses.dataclass
class ArtifactInput(InferenceSettings):
    """An artifact run over a SQuAD/CMRC file: what ``evaluate`` and ``predict`` share."""

    model: str = opt("", help="artifact: a model folder (or a training stage's output folder), a "
                     "Paddle inference model (PREFIX.pdmodel or its folder), a Lite x86 .nb or an "
                     "ONNX model")
    data_file: str = opt("", help="SQuAD/CMRC JSON")
    tokenizer: str = opt("", help="tokenizer folder/name; default: the model folder")
    max_seq_len: int = opt(0, help="window length; 0 = what the model was trained with (else 384)")
    doc_stride: int = opt(0, help="step between windows; 0 = as trained (else 128)")
    max_query_length: int = opt(0, help="question tokens kept; 0 = as trained (else 64)")
    batch_size: int = opt(32, help="windows per forward pass")
    # n_best, max_answer_length, max_context_chars, cache_dir, progress, threads, int8_ops:
    # inherited from InferenceSettings (core/settings.py)

    def __post_init__(self) -> None:
        for name in ("model", "data_file"):
            if not getattr(self, name):
                raise ValueError(f"{name} is required")
        for name in ("max_seq_len", "doc_stride", "max_query_length"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0 (0 = as trained), got {getattr(self, name)}")
        if self.batch_size < 1 or self.n_best < 1 or self.max_answer_length < 1:
            raise ValueError("batch_size, n_best and max_answer_length must be >= 1")


@dataclasses.dataclass
class EvaluateConfig(ArtifactInput):
    """Run a model over a CMRC-format file; write leaderboard predictions and EM/F1."""

    out_dir: str = opt("", help="folder for predictions.json, nbest.json, metrics.json, manifest.json")
    resamples: int = opt(DEFAULT_RESAMPLES, help="bootstrap resamples of the questions for the 95% "
                         "intervals em_ci95/f1_ci95 (0 = no intervals)")
    seed: int = opt(DEFAULT_SEED, help="seed of the bootstrap")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.out_dir:
            raise ValueError("out_dir is required")
        if self.resamples < 0:
            raise ValueError(f"resamples must be >= 0, got {self.resamples}")


@dataclasses.dataclass
class PredictConfig(ArtifactInput):
    """Answer every question of a SQuAD/CMRC file, labelled or not: a leaderboard submission."""

    out: str = opt("", help="predictions JSON to write ({question_id: answer}); OUT.manifest.json, "
                   "OUT.metrics.json (and OUT.nbest.json) go beside it")
    nbest: int = opt(0, help="also write OUT.nbest.json with this many spans per question "
                     "(text, score, probability); 0 = none")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.out:
            raise ValueError("out is required: the predictions file to write")
        if self.nbest < 0 or self.nbest > self.n_best:
            raise ValueError(f"nbest must be between 0 and n_best ({self.n_best}), got {self.nbest}")


def answer(model, tokenizer, examples: Sequence[QAExample], params: FeatureParams, *,
           batch_size: int = 32, n_best: int = 20, max_answer_length: int = 64,
           cache_dir: str | None = "", progress: bool = True):
    """N-best spans for ``examples`` (features -> logits -> spans).

    ``model`` is a dygraph model or any :class:`paddleqa.runtime.artifacts.Runner` (inference model,
    Lite ``.nb``): they share the features, the batching and the post-processor.
    """

    runner = model if isinstance(model, Runner) else model_runner(model)
    feats = cached_features(examples, tokenizer, params, train=False, cache_dir=cache_dir,
                            progress=progress)
    start, end = predict_logits(runner, feats, batch_size=batch_size, progress=progress)
    return best_spans(start, end, feats["offsets"], feats["example_index"],
                      [ex.context for ex in examples], n_best=n_best,
                      max_answer_length=max_answer_length)


@dataclasses.dataclass
class Answers:
    """An artifact's answers to a file: what ``evaluate`` scores and ``predict`` writes."""

    examples: list[QAExample]
    spans: list
    dropped: int
    seconds: float
    runner: Runner
    params: FeatureParams

    @property
    def predictions(self) -> dict[str, str]:
        return predictions_from_spans([ex.qid for ex in self.examples], self.spans)

    def nbest(self, k: int) -> dict[str, list[dict]]:
        return {ex.qid: [dataclasses.asdict(s) for s in sp[:k]] for ex, sp in zip(self.examples, self.spans)}

    def facts(self) -> dict:
        """What the run was: artifact, backend, sizes, speed, window settings."""
        n = len(self.examples)
        return {"artifact": str(self.runner.path), "backend": self.runner.backend,
                "precision": self.runner.precision, "file_bytes": self.runner.file_bytes,
                "dropped_by_loader": self.dropped, "predict_seconds": round(self.seconds, 2),
                "questions_per_second": round(n / self.seconds, 2) if self.seconds else None,
                **(count_params(self.runner.model) if self.runner.model is not None else {}),
                "feature_params": dataclasses.asdict(self.params)}

    def model_files(self) -> dict[str, Path]:
        path = self.runner.path
        if self.runner.backend == "paddle-inference":
            return {"pdmodel": path.with_suffix(".pdmodel"), "pdiparams": path.with_suffix(".pdiparams")}
        return {"model": path}


def answer_file(config: ArtifactInput, *, mode: str) -> Answers:
    """Open the artifact, read the file (``mode`` eval: labelled, predict: answers not needed),
    window, run and post-process: the one code path of ``evaluate`` and ``predict``."""
    runner = open_artifact(config.model, threads=config.threads, int8_ops=tuple(config.int8_ops))
    tokenizer = load_tokenizer(config.tokenizer or str(runner.tokenizer_dir))
    params = feature_params_for(str(runner.tokenizer_dir), config.max_seq_len, config.doc_stride,
                                config.max_query_length)
    examples, report = load_examples(config.data_file, mode=mode,
                                     max_context_chars=config.max_context_chars)
    if not examples:
        raise PaddleQAError(f"{config.data_file}: no usable questions to answer "
                            f"({report.dropped} dropped; run `paddleqa data check` on it)")
    t0 = time.time()
    spans = answer(runner, tokenizer, examples, params, batch_size=config.batch_size,
                   n_best=config.n_best, max_answer_length=config.max_answer_length,
                   cache_dir=config.cache_dir or None, progress=config.progress)
    return Answers(examples, spans, report.dropped, time.time() - t0, runner, params)


def run(config: EvaluateConfig) -> dict:
    """Evaluate; writes predictions.json (leaderboard format), nbest.json, metrics.json, manifest."""
    started = time.time()
    result = answer_file(config, mode="eval")
    predictions = result.predictions
    # Score against every question of the gold file, as the official script does: questions the
    # loader had to drop count as missing rather than disappearing from the denominator.
    scores = scores_with_intervals(gold_references(config.data_file), predictions,
                                   resamples=config.resamples, seed=config.seed)
    out = Path(config.out_dir)
    write_json(out / "predictions.json", predictions)
    write_json(out / "nbest.json", result.nbest(5))
    facts = result.facts()
    metrics = {**{k: facts.pop(k) for k in ("artifact", "backend", "precision", "file_bytes")},
               **scores, **facts}
    write_manifest(out, "evaluate", to_dict(config), {**result.model_files(), "data_file": config.data_file},
                   {"predictions": out / "predictions.json"}, metrics, started=started)
    return metrics


def predict(config: PredictConfig) -> dict:
    """Write the leaderboard-format predictions of an artifact for a file (labelled or not)."""
    started = time.time()
    result = answer_file(config, mode="predict")
    out = Path(config.out)
    write_json(out, result.predictions)
    outputs = {"predictions": out}
    if config.nbest:
        outputs["nbest"] = out.with_name(f"{out.stem}.nbest.json")
        write_json(outputs["nbest"], result.nbest(config.nbest))
    metrics = {"questions": len(result.examples), **result.facts(), "predictions": str(out)}
    write_manifest(out.parent, "predict", to_dict(config), {**result.model_files(), "data_file": config.data_file},
                   outputs, metrics, started=started, prefix=f"{out.stem}.")
    return metrics
