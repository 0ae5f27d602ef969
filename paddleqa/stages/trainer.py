"""The PaddleNLP Trainer pieces every training stage shares (finetune, distill, prune).

What the Trainer is fed (:class:`WindowDataset`, :func:`window_collator`), the Trainer itself
(:class:`ResumableTrainer`, built by :func:`make_trainer`), its callbacks (:class:`StepSeed`,
:class:`EpochEval`) and the data-parallel replica check (:func:`replica_fingerprints`).

This module imports paddle and paddlenlp at load, so :func:`paddleqa.stages.training.train`
imports it when training starts (deferred on purpose), as the model families are.
"""
from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import paddle
import paddle.distributed as dist
from paddle.io import DistributedBatchSampler
from paddlenlp.trainer import Trainer, TrainerCallback, TrainingArguments

from ..core.distributed import world_size
from ..core.io import write_json
from ..core.metrics import cmrc_scores

log = logging.getLogger(__name__)


class WindowDataset:
    """Training windows as dicts of numpy rows, trimmed to their true length.

    Rows are visited through a fixed permutation drawn from ``seed``, so the seed decides the
    batch order even though the sampler below shuffles by epoch number alone. ``with_index``:
    each row also carries ``window``, its row number in ``feats`` (what a teacher cache is
    indexed by).
    """

    def __init__(self, feats: dict[str, np.ndarray], seed: int, with_index: bool = False):
        self.feats = feats
        self.with_index = with_index
        self.order = np.random.RandomState(seed).permutation(len(feats["input_ids"]))

    def __len__(self) -> int:
        return len(self.feats["input_ids"])

    def __getitem__(self, j: int) -> dict[str, Any]:
        i = int(self.order[j])
        n = int(self.feats["length"][i])
        row = {
            "input_ids": self.feats["input_ids"][i, :n],
            "token_type_ids": self.feats["token_type_ids"][i, :n],
            "start_positions": self.feats["start_positions"][i],
            "end_positions": self.feats["end_positions"][i],
        }
        if self.with_index:
            row["window"] = i
        return row


def window_collator(pad_id: int) -> Callable[[Sequence[dict[str, Any]]], dict[str, np.ndarray]]:
    """The batch collator: pads ids to the batch's longest row and stacks the span labels.

    Written by hand because PaddleNLP's DataCollatorWithPadding pads through the tokenizer, which
    does not know the scalar span labels.
    """

    def collate(rows: Sequence[dict[str, Any]]) -> dict[str, np.ndarray]:
        width = max(len(r["input_ids"]) for r in rows)
        ids = np.full((len(rows), width), pad_id, dtype=np.int64)
        types = np.zeros((len(rows), width), dtype=np.int64)
        for k, r in enumerate(rows):
            ids[k, : len(r["input_ids"])] = r["input_ids"]
            types[k, : len(r["token_type_ids"])] = r["token_type_ids"]
        batch = {
            "input_ids": ids,
            "token_type_ids": types,
            "start_positions": np.asarray([r["start_positions"] for r in rows], dtype=np.int64),
            "end_positions": np.asarray([r["end_positions"] for r in rows], dtype=np.int64),
        }
        if "window" in rows[0]:
            batch["window"] = np.asarray([r["window"] for r in rows], dtype=np.int64)
        return batch

    return collate


class ResumableTrainer(Trainer):
    """PaddleNLP's Trainer with an epoch-seeded sampler.

    With one process the stock Trainer shuffles through ``paddle.io.BatchSampler``, which draws
    each epoch's order from the global RNG; a run resumed mid-way cannot replay those draws and
    trains on different batches. ``DistributedBatchSampler`` orders by epoch number (the Trainer
    calls its ``set_epoch``), so a resumed run sees exactly the batches of an uninterrupted one.
    """

    def _get_train_sampler(self):
        return DistributedBatchSampler(
            self.train_dataset, batch_size=self.args.per_device_train_batch_size, shuffle=True,
            num_replicas=self.args.dataset_world_size, rank=self.args.dataset_rank,
            drop_last=self.args.dataloader_drop_last,
        )


class StepSeed(TrainerCallback):
    """Reseed Paddle before every step from (seed, step, rank).

    The Trainer saves and restores the CPU generator's state with each checkpoint, but on CPU
    that state does not capture the engine's position, so dropout masks after a resume differ
    from an uninterrupted run. Seeding per step makes them a function of the step alone.
    """

    def __init__(self, seed: int):
        self.seed = seed

    def on_step_begin(self, args, state, control, **kwargs):
        paddle.seed(self.seed + 1_000_003 * args.process_index + state.global_step)


class EpochEval(TrainerCallback):
    """Score ``examples`` after every epoch and append the point to the learning curve (keys
    ``{label}_em``/``{label}_f1``: the validation split, or the dev file without one).

    Every rank scores (the same questions): a rank that waited instead would sit in the next
    gradient all-reduce until gloo's timeout kills it. Only rank 0 records the point.
    """

    def __init__(self, examples: list, predict: Callable[[list], dict[str, str]], trainable,
                 curve: list[dict[str, Any]], curve_path: Path, started: float, label: str = "dev"):
        self.examples, self.predict, self.trainable, self.label = examples, predict, trainable, label
        self.curve, self.curve_path, self.started = curve, curve_path, started

    def on_epoch_end(self, args, state, control, **kwargs):
        if not self.examples:
            return
        s = cmrc_scores({ex.qid: ex.answers for ex in self.examples}, self.predict(self.examples))
        self.trainable.train()
        if not state.is_world_process_zero:
            return
        losses = [h["loss"] for h in state.log_history if "loss" in h]
        entry = {"epoch": round(state.epoch or 0, 3), "step": state.global_step,
                 "seconds": round(time.time() - self.started, 1),
                 "train_loss": losses[-1] if losses else None,
                 f"{self.label}_em": s["em"], f"{self.label}_f1": s["f1"],
                 f"{self.label}_questions": s["total"]}
        self.curve.append(entry)
        write_json(self.curve_path, self.curve)
        log.info("epoch %.2f: %s EM %.2f F1 %.2f", entry["epoch"], self.label, s["em"], s["f1"])


def training_arguments(config: Any) -> TrainingArguments:
    """The Trainer's arguments from a training stage's ``config`` (a ``TrainSettings``, or any
    config with its schedule fields: pretrain's): schedule, checkpoints in
    ``output_dir/checkpoints``, progress bar."""
    return TrainingArguments(
        output_dir=str(Path(config.output_dir) / "checkpoints"),
        device=config.device,
        per_device_train_batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        warmup_ratio=config.warmup_ratio,
        weight_decay=config.weight_decay,
        seed=config.seed,
        logging_steps=config.logging_steps,
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        disable_tqdm=not config.progress,
        report_to=["none"],
        dataloader_num_workers=0,
        do_train=True,
    )


def make_trainer(config: Any, trainable, tokenizer, train_feats: dict[str, np.ndarray],
                 callbacks: Sequence[Any]) -> ResumableTrainer:
    """The Trainer of a training stage's ``config`` (a ``TrainSettings``): its schedule, its
    checkpoints in ``output_dir/checkpoints``, the windows ``train_feats`` in seeded order (with
    their row numbers when ``trainable.takes_window``: a distiller reading a teacher cache)."""
    return ResumableTrainer(
        model=trainable,
        args=training_arguments(config),
        train_dataset=WindowDataset(train_feats, config.seed, getattr(trainable, "takes_window", False)),
        data_collator=window_collator(tokenizer.pad_token_id or 0),
        tokenizer=tokenizer,
        callbacks=list(callbacks),
    )


def replica_fingerprints(model) -> list[str]:
    """sha256 of the weights on every data-parallel rank ([] outside data-parallel runs).

    Each rank hashes its own parameters; the digests are exchanged with ``all_gather``, so rank 0
    can record whether the replicas stayed identical.
    """
    if world_size() < 2:
        return []
    h = hashlib.sha256()
    for name, p in sorted(model.state_dict().items()):
        h.update(name.encode("utf-8"))
        h.update(np.ascontiguousarray(p.numpy()).tobytes())
    mine = paddle.to_tensor(np.frombuffer(h.digest(), dtype=np.int32).copy())
    try:
        gathered: list = []
        dist.all_gather(gathered, mine)
    except Exception as exc:  # noqa: BLE001 -- a failed check must not lose the trained model
        log.warning("could not compare replica weights (%s: %s)", type(exc).__name__, exc)
        return []
    return [t.numpy().astype(np.int32).tobytes().hex() for t in gathered]


def run_metrics(state, result, train_seconds: float, last_checkpoint: str | None,
                rate_name: str) -> dict[str, Any]:
    """What a Trainer run did: steps, epochs, loss, time, its rate (``rate_name``: samples per
    second), where it resumed from and how many steps this leg trained."""
    done_before = int(Path(last_checkpoint).name.rsplit("-", 1)[-1]) if last_checkpoint else 0
    return {
        "global_step": state.global_step,
        "epochs": round(state.epoch or 0, 3),
        "train_loss": round(float(result.training_loss), 5) if result.training_loss is not None else None,
        "train_seconds": round(train_seconds, 1),
        rate_name: round(result.metrics.get("train_samples_per_second", 0.0), 3),
        "resumed_from": Path(last_checkpoint).name if last_checkpoint else None,
        "steps_this_run": state.global_step - done_before,
    }
