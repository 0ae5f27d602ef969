"""Evaluate a model on a SQuAD/CMRC file with the official CMRC 2018 metric."""
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
from ..core.metrics import cmrc_scores
from ..core.postprocess import best_spans, predictions_from_spans
from ..models.build import count_params
from ..text.dataset import QAExample, gold_references, load_examples
from ..text.features import FeatureParams, cached_features, feature_params_for
from ..text.tokenizer import load_tokenizer
from .artifacts import Runner, model_runner, open_artifact, predict_logits

log = logging.getLogger(__name__)


@dataclasses.dataclass
class EvaluateConfig:
    """Run a model over a CMRC-format file; write leaderboard predictions and EM/F1."""

    model: str = opt("", help="artifact: a model folder (or a training stage's output folder), a "
                     "Paddle inference model (PREFIX.pdmodel or its folder) or a Lite x86 .nb")
    data_file: str = opt("", help="SQuAD/CMRC JSON with reference answers")
    out_dir: str = opt("", help="folder for predictions.json, nbest.json, metrics.json, manifest.json")
    tokenizer: str = opt("", help="tokenizer folder/name; default: the model folder")
    max_seq_len: int = opt(0, help="window length; 0 = what the model was trained with (else 384)")
    doc_stride: int = opt(0, help="step between windows; 0 = as trained (else 128)")
    max_query_length: int = opt(0, help="question tokens kept; 0 = as trained (else 64)")
    batch_size: int = opt(32, help="windows per forward pass")
    n_best: int = opt(20, help="candidate starts/ends per window and spans kept per question")
    max_answer_length: int = opt(64, help="longest answer in tokens (CMRC dev: 99.6% <= 64 chars)")
    max_context_chars: int = opt(5000, help="drop paragraphs longer than this (with a message)")
    cache_dir: str = opt("", help="feature cache folder; '' = ~/.cache/paddleqa (PADDLEQA_CACHE)")
    progress: bool = opt(True, help="show progress bars")
    threads: int = opt(0, help="CPU threads for Paddle Inference (0 = OMP_NUM_THREADS)")
    int8_ops: list[str] = opt(factory=lambda: ["fc"], help="ops Paddle Inference runs in int8 "
                              "(MKLDNN) for a quantized model; the rest runs fp32; \"all\" = every op MKLDNN supports")

    def __post_init__(self) -> None:
        for name in ("model", "data_file", "out_dir"):
            if not getattr(self, name):
                raise ValueError(f"{name} is required")
        for name in ("max_seq_len", "doc_stride", "max_query_length"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0 (0 = as trained), got {getattr(self, name)}")
        if self.batch_size < 1 or self.n_best < 1 or self.max_answer_length < 1:
            raise ValueError("batch_size, n_best and max_answer_length must be >= 1")


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


def run(config: EvaluateConfig) -> dict:
    """Evaluate; writes predictions.json (leaderboard format), nbest.json, metrics.json, manifest."""

    started = time.time()
    runner = open_artifact(config.model, threads=config.threads, int8_ops=tuple(config.int8_ops))
    model_path = runner.path
    tokenizer = load_tokenizer(config.tokenizer or str(runner.tokenizer_dir))
    params = feature_params_for(str(runner.tokenizer_dir), config.max_seq_len, config.doc_stride,
                                config.max_query_length)
    examples, report = load_examples(config.data_file, mode="eval",
                                     max_context_chars=config.max_context_chars)
    if not examples:
        raise PaddleQAError(f"{config.data_file}: no usable questions to evaluate "
                            f"({report.dropped} dropped; run `paddleqa data check` on it)")
    t0 = time.time()
    spans = answer(runner, tokenizer, examples, params, batch_size=config.batch_size,
                   n_best=config.n_best, max_answer_length=config.max_answer_length,
                   cache_dir=config.cache_dir or None, progress=config.progress)
    seconds = time.time() - t0
    predictions = predictions_from_spans([ex.qid for ex in examples], spans)
    # Score against every question of the gold file, as the official script does: questions the
    # loader had to drop count as missing rather than disappearing from the denominator.
    scores = cmrc_scores(gold_references(config.data_file), predictions)
    out = Path(config.out_dir)
    write_json(out / "predictions.json", predictions)
    write_json(out / "nbest.json", {
        ex.qid: [dataclasses.asdict(s) for s in sp[:5]] for ex, sp in zip(examples, spans)
    })
    metrics = {
        "artifact": str(model_path), "backend": runner.backend, "precision": runner.precision,
        "file_bytes": runner.file_bytes,
        **scores,
        "dropped_by_loader": report.dropped,
        "predict_seconds": round(seconds, 2),
        "questions_per_second": round(len(examples) / seconds, 2) if seconds else None,
        **(count_params(runner.model) if runner.model is not None else {}),
        "feature_params": dataclasses.asdict(params),
    }
    model_files = ({"pdmodel": model_path.with_suffix(".pdmodel"),
                    "pdiparams": model_path.with_suffix(".pdiparams")}
                   if runner.backend == "paddle-inference" else {"model": model_path})
    write_manifest(out, "evaluate", to_dict(config), {**model_files, "data_file": config.data_file},
                   {"predictions": out / "predictions.json"}, metrics, started=started)
    return metrics
