"""Structured pruning -> a smaller dense model, distilled back from the teacher.

``method`` picks what is pruned (``PRUNE_METHODS``): ``heads_ffn``, the teacher's layers, heads
and FFN neurons (below); ``l1norm``/``fpgm``, the conv channels of a distilled mobilenet student
through PaddleSlim's filter pruners (:mod:`paddleqa.stages.channels`). heads_ffn:

1. The teacher is converted, output for output, to the compact ERNIE (:mod:`paddleqa.models.compact`).
2. Depth: each layer is removed in turn and the model scored (official CMRC F1) on the
   validation split (held-out training contexts; the dev set stays untouched for the final
   score); the ``drop_layers``
   layers whose removal costs least are dropped. The table goes to ``layer_sensitivity.json/.md``.
3. Width (DynaBERT): head importance = |d loss / d head_mask| and neuron importance =
   |sum(w * d loss / d w)| over the FFN's input and output weights, accumulated over labelled
   training windows; in every kept layer the top ``width_mult`` share of heads and neurons is kept,
   most important first (DynaBERT's reorder, then the slice that keeps the leading ones).
4. The pruned model is distilled back from the teacher (the ``distill`` objective and settings).

PaddleSlim's ``compute_neuron_head_importance`` is written for sentence classification (one
logits tensor and ``labels``) and for OFA's patched attention that takes ``[None, head_mask]``;
neither fits span extraction, so the importance pass is written here with the same formulas.
Its ``reorder_head``/``reorder_neuron`` are not used either: importing
``paddleslim.nas.ofa.utils.nlp_utils`` replaces ``paddle.nn.TransformerEncoder.forward`` for the
whole process, which breaks PaddleNLP's ERNIE (the teacher) with "unexpected keyword 'cache'";
:func:`paddleqa.models.compact.select` does the reorder-and-slice in one index_select per weight.
The output is an ordinary model folder with per-layer head and FFN counts in its config.
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..core.config import opt
from ..core.errors import ConfigError
from ..core.io import atomic_write_text, write_json
from ..core.metrics import cmrc_scores
from ..core.postprocess import predictions_from_spans
from ..models.build import count_params, load_model
from ..models.flops import flops_per_query
from ..models.weights import spaced_layers
from ..runtime.evaluate import answer
from ..text.dataset import load_examples
from ..text.features import cached_features, pad_batch
from .channels import PRUNERS, prune_channels
from .distill import KDSettings, kd_run

log = logging.getLogger(__name__)


@dataclasses.dataclass
class PruneConfig(KDSettings):
    """``paddleqa prune``: structured pruning, then distillation back from the teacher.

    ``method`` (a name from ``PRUNE_METHODS``): ``heads_ffn`` prunes the (ERNIE) teacher's heads,
    FFN neurons and layers; ``l1norm``/``fpgm`` prune the channels of a mobilenet student's conv
    blocks with PaddleSlim's filter pruners (:mod:`paddleqa.stages.channels`)."""

    method: str = opt("heads_ffn", help="heads_ffn (the teacher's heads, FFN neurons, layers) or "
                      "l1norm / fpgm (a mobilenet student's conv channels, PaddleSlim filter pruners "
                      "by that criterion)")
    model: str = opt("", help="l1norm/fpgm: the mobilenet student folder to prune (`paddleqa run` "
                     "wires distill's model/); heads_ffn prunes the teacher and takes none")
    flops_ratio: float = opt(0.75, help="l1norm/fpgm: FLOPs per window of the pruned student as a "
                             "share of the student's (per-block ratios chosen by sensitivity)")
    width_mult: float = opt(0.5, help="share of heads and FFN neurons kept in every layer")
    drop_layers: int = opt(0, help="whole layers removed, chosen by the sensitivity table")
    importance_windows: int = opt(512, help="labelled training windows for head/neuron importance")
    sensitivity_questions: int = opt(300, help="validation questions scored per removed layer or "
                                     "channel share (the last training questions without one)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.width_mult <= 1:
            raise ValueError(f"width_mult must be in (0, 1], got {self.width_mult}")
        if self.drop_layers < 0:
            raise ValueError(f"drop_layers must be >= 0, got {self.drop_layers}")
        if self.importance_windows < 1 or self.sensitivity_questions < 1:
            raise ValueError("importance_windows and sensitivity_questions must be >= 1")
        if self.method not in PRUNE_METHODS:
            raise ValueError(f"unknown prune method {self.method!r}; valid: {', '.join(PRUNE_METHODS)}")
        if not 0 < self.flops_ratio < 1:
            raise ValueError(f"flops_ratio must be in (0, 1), got {self.flops_ratio}")
        if self.prunes_student and self.drop_layers:
            raise ValueError(f"drop_layers is for method heads_ffn; {self.method} keeps every layer")
        if not self.prunes_student and self.model:
            raise ValueError("model is for methods that prune a student (l1norm, fpgm); heads_ffn "
                             "prunes the teacher: leave prune.model empty")

    @property
    def prunes_student(self) -> bool:
        """True when the method prunes a (distilled) student rather than the teacher."""
        return self.method in PRUNERS


def importance(model, feats: dict[str, np.ndarray], n_windows: int, batch_size: int, seed: int):
    """Head importance ``[layers, heads]`` and per-layer neuron importance (DynaBERT formulas)."""
    import paddle


    n_layers = len(model.ernie.encoder.layers)
    max_heads = max(layer.self_attn.num_heads for layer in model.ernie.encoder.layers)
    head_mask = paddle.ones([n_layers, max_heads])
    head_mask.stop_gradient = False
    heads = np.zeros([n_layers, max_heads], dtype=np.float64)
    neurons = [np.zeros(layer.linear1.weight.shape[1], dtype=np.float64)
               for layer in model.ernie.encoder.layers]
    rows = np.random.RandomState(seed).permutation(len(feats["input_ids"]))[:n_windows]
    model.eval()  # no dropout: the gradients measure the network itself
    for b in range(0, len(rows), batch_size):
        batch = pad_batch(feats, rows[b: b + batch_size])
        out = model(input_ids=paddle.to_tensor(batch["input_ids"]),
                    token_type_ids=paddle.to_tensor(batch["token_type_ids"]),
                    start_positions=paddle.to_tensor(batch["start_positions"]),
                    end_positions=paddle.to_tensor(batch["end_positions"]), head_mask=head_mask)
        out[0].backward()
        heads += np.abs(head_mask.grad.numpy())
        for i, layer in enumerate(model.ernie.encoder.layers):
            w1, b1, w2 = layer.linear1.weight, layer.linear1.bias, layer.linear2.weight
            neurons[i] += np.abs((w1.numpy() * w1.grad.numpy()).sum(0) + b1.numpy() * b1.grad.numpy())
            neurons[i] += np.abs((w2.numpy() * w2.grad.numpy()).sum(1))
        model.clear_gradients()
        head_mask.clear_gradient()
    return heads, neurons


def heldout_f1(model, tokenizer, params, examples, *, n_best: int, max_answer_length: int,
               cache_dir, progress: bool) -> float:
    """Official CMRC F1 of ``model`` on ``examples``."""

    spans = answer(model, tokenizer, examples, params, n_best=n_best,
                   max_answer_length=max_answer_length, cache_dir=cache_dir, progress=progress)
    gold = {ex.qid: ex.answers for ex in examples}
    return cmrc_scores(gold, predictions_from_spans([ex.qid for ex in examples], spans))["f1"]


def sensitivity_examples(config: "PruneConfig", train_examples: list) -> list:
    """The questions sensitivity is scored on: the first ``sensitivity_questions`` of the
    validation split (questions about passages the teacher and student never trained on), or,
    without one, the last training questions (seen in training: a weaker, optimistic signal)."""
    if config.validation_file:
        examples, _ = load_examples(config.validation_file, mode="eval",
                                    max_context_chars=config.max_context_chars)
        return examples[:config.sensitivity_questions]
    log.warning("no validation_file: layer/channel sensitivity is scored on the last %d training "
                "questions, which the models were trained on", config.sensitivity_questions)
    return train_examples[-config.sensitivity_questions:]


def _f1(model, tokenizer, params, examples, config: "PruneConfig") -> float:
    return heldout_f1(model, tokenizer, params, examples, n_best=config.n_best,
                      max_answer_length=config.max_answer_length,
                      cache_dir=config.cache_dir or None, progress=config.progress)


def layer_sensitivity(model, tokenizer, params, examples, *, n_best: int, max_answer_length: int,
                      cache_dir, progress: bool) -> list[dict[str, Any]]:
    """F1 on ``examples`` with each layer removed in turn (row 0: nothing removed)."""
    from ..models.compact import select

    n = len(model.ernie.encoder.layers)
    full_heads = [list(range(layer.self_attn.num_heads)) for layer in model.ernie.encoder.layers]
    full_ffn = [list(range(layer.linear1.weight.shape[1])) for layer in model.ernie.encoder.layers]

    def f1(m) -> float:
        return heldout_f1(m, tokenizer, params, examples, n_best=n_best,
                          max_answer_length=max_answer_length, cache_dir=cache_dir, progress=progress)

    base = f1(model)
    rows = [{"removed_layer": None, "f1": base, "f1_drop": 0.0}]
    for i in range(n):
        keep = [j for j in range(n) if j != i]
        score = f1(select(model, keep, [full_heads[j] for j in keep], [full_ffn[j] for j in keep]))
        rows.append({"removed_layer": i + 1, "f1": score, "f1_drop": round(base - score, 3)})
        log.info("without layer %d: F1 %.2f (drop %.2f)", i + 1, score, base - score)
    return rows


def _write_table(out: Path, rows: list[dict[str, Any]], dropped: list[int]) -> None:
    write_json(out / "layer_sensitivity.json", rows)
    lines = ["| removed layer | F1 | F1 drop | dropped |", "| ---: | ---: | ---: | :---: |"]
    for r in rows:
        name = "none" if r["removed_layer"] is None else str(r["removed_layer"])
        mark = "yes" if r["removed_layer"] in dropped else ""
        lines.append(f"| {name} | {r['f1']:.2f} | {r['f1_drop']:.2f} | {mark} |")
    atomic_write_text(out / "layer_sensitivity.md", "\n".join(lines) + "\n")


def run(config: PruneConfig, *, resume: bool = False, callbacks=()) -> dict:
    """Prune (``config.method``), distil the pruned model back; metrics before and after each step."""
    inputs = {"model": config.model} if config.model else {}
    return kd_run(config, "prune", PRUNE_METHODS[config.method](config), resume=resume,
                  callbacks=callbacks, inputs=inputs)


def _heads_ffn(config: PruneConfig) -> Callable:
    """``make_student`` for kd_run: the teacher's layers, heads and FFN neurons (module doc)."""
    from ..models.compact import from_ernie, select

    out = Path(config.output_dir)

    def make_student(teacher, metrics, tokenizer, params, data):
        compact = from_ernie(teacher)
        n_layers = len(compact.ernie.encoder.layers)
        if config.drop_layers >= n_layers:
            raise ConfigError(f"drop_layers ({config.drop_layers}) must leave at least one of the "
                              f"teacher's {n_layers} layers")
        examples, _ = load_examples(config.train_file, mode="train",
                                    max_context_chars=config.max_context_chars)
        cache = config.cache_dir or None
        # Depth: sensitivity on the validation split (never the dev set, kept for the final score)
        held_out = sensitivity_examples(config, examples)
        rows = []
        dropped: list[int] = []
        if config.drop_layers:
            rows = layer_sensitivity(compact, tokenizer, params, held_out, n_best=config.n_best,
                                     max_answer_length=config.max_answer_length, cache_dir=cache,
                                     progress=config.progress)
            ranked = sorted(rows[1:], key=lambda r: r["f1_drop"])
            dropped = sorted(r["removed_layer"] for r in ranked[: config.drop_layers])
        kept = [i for i in range(n_layers) if i + 1 not in dropped]
        # Width: importance on labelled training windows, then keep the top share per layer.
        feats = cached_features(examples, tokenizer, params, train=True, cache_dir=cache,
                                progress=config.progress)
        head_imp, neuron_imp = importance(compact, feats, config.importance_windows,
                                          config.batch_size, config.seed)
        heads, neurons = [], []
        for i in kept:
            # Most important first; the pruned layer holds its heads and neurons in that order.
            n_h = compact.ernie.encoder.layers[i].self_attn.num_heads
            order_h = np.argsort(-head_imp[i, :n_h], kind="stable")
            order_n = np.argsort(-neuron_imp[i], kind="stable")
            heads.append(order_h[: max(1, round(config.width_mult * n_h))].tolist())
            neurons.append(order_n[: max(1, round(config.width_mult * len(order_n)))].tolist())
        pruned = select(compact, kept, heads, neurons)
        # Before/after on the held-out training questions, before any recovery training.
        pruned_f1 = _f1(pruned, tokenizer, params, held_out, config)
        teacher_f1 = rows[0]["f1"] if rows else _f1(compact, tokenizer, params, held_out, config)
        before, after = count_params(teacher), count_params(pruned)
        metrics.update(
            pruned_params=after["params"], pruned_non_embedding_params=after["non_embedding_params"],
            pruned_flops_per_query=flops_per_query(pruned.config, params.max_seq_len),
            layers_dropped=dropped, layer_heads=pruned.config.layer_heads,
            layer_ffn=pruned.config.layer_ffn,
            params_ratio=round(after["params"] / before["params"], 4),
            teacher_heldout_f1=teacher_f1, pruned_heldout_f1_before_recovery=pruned_f1,
        )
        if rows:
            out.mkdir(parents=True, exist_ok=True)
            _write_table(out, rows, dropped)
            metrics["layer_sensitivity"] = rows
        log.info("pruned: layers %s kept, heads %s, FFN %s", [i + 1 for i in kept],
                 pruned.config.layer_heads, pruned.config.layer_ffn)
        info = {"kept_layers": [i + 1 for i in kept], "kept_heads": heads,
                "kept_neurons": neurons,
                "width_mult": config.width_mult, "head_importance": head_imp.round(6).tolist()}
        return pruned, [i + 1 for i in kept], info

    return make_student


def _channels(config: PruneConfig) -> Callable:
    """``make_student`` for kd_run: the conv channels of the mobilenet student ``config.model``,
    per-block ratios from PaddleSlim's sensitivity on held-out training questions."""
    def make_student(teacher, metrics, tokenizer, params, data):
        if not config.model or not Path(config.model).is_dir():
            raise ConfigError(f"prune.method {config.method} prunes a mobilenet student, and "
                              f"prune.model ({config.model or 'not set'}) is not a model folder: run "
                              "distill with student.kind mobilenet first (`paddleqa run` wires its "
                              "model/), or set prune.model")
        student = load_model(config.model)
        student.eval()
        examples, _ = load_examples(config.train_file, mode="train",
                                    max_context_chars=config.max_context_chars)
        held_out = sensitivity_examples(config, examples)  # never the dev set

        def score(model) -> float:
            return _f1(model, tokenizer, params, held_out, config)

        pruned, info = prune_channels(student, config.method, score, flops_ratio=config.flops_ratio,
                                      seq_len=params.max_seq_len, out_dir=Path(config.output_dir))
        before, after = count_params(student), count_params(pruned)
        metrics.update(
            pruned_params=after["params"], pruned_non_embedding_params=after["non_embedding_params"],
            student_params=before["params"], student_flops_per_query=info["flops_before"],
            pruned_flops_per_query=info["flops_after"], pruned_flops_ratio=info["flops_ratio"],
            block_channels_before=info["block_channels_before"], block_channels=info["block_channels"],
            params_ratio=round(after["params"] / before["params"], 4),
            student_heldout_f1=score(student), pruned_heldout_f1_before_recovery=score(pruned),
            channel_sensitivity=info["channel_sensitivity"])
        layers = spaced_layers(pruned.config.num_hidden_layers, teacher.config.num_hidden_layers)
        return pruned, layers, {"pruned_model": config.model, "method": config.method,
                                "block_channels": info["block_channels"],
                                "pruned_ratios": info["pruned_ratios"]}

    return make_student


# prune.method -> make_student factory for kd_run; l1norm/fpgm: PaddleSlim's filter pruners
PRUNE_METHODS: dict[str, Callable] = {"heads_ffn": _heads_ffn, **{name: _channels for name in PRUNERS}}
