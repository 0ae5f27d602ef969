"""Fine-tune a teacher QA model on SQuAD/CMRC data with PaddleNLP's Trainer."""
from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..core.config import opt, read_yaml, to_dict
from ..core.distributed import world_size
from ..core.errors import ConfigError, PaddleQAError
from ..core.io import write_json, write_yaml
from ..core.manifest import RESOLVED_CONFIG, sha256_path, write_manifest
from ..core.metrics import cmrc_scores
from ..core.postprocess import predictions_from_spans
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
class TrainSettings:
    """What every training stage (finetune, distill) shares: data, schedule, checkpoints, scoring."""

    train_file: str = opt("", help="SQuAD/CMRC training JSON")
    dev_file: str = opt("", help="SQuAD/CMRC dev JSON scored after training ('' = none)")
    output_dir: str = opt("", help="run folder: checkpoints/, model/, metrics, manifest")
    epochs: float = opt(2.0, help="training epochs (ignored when max_steps > 0)")
    max_steps: int = opt(-1, help="stop after this many optimizer steps (-1 = use epochs)")
    batch_size: int = opt(16, help="windows per optimizer step (per process)")
    learning_rate: float = opt(5e-5, help="peak learning rate (linear warm-up and decay)")
    warmup_ratio: float = opt(0.1, help="fraction of steps spent warming up")
    weight_decay: float = opt(0.01, help="AdamW weight decay")
    seed: int = opt(42, help="seed for paddle, numpy and random")
    logging_steps: int = opt(20, help="log the training loss every N steps")
    save_steps: int = opt(200, help="checkpoint every N steps (resume point)")
    save_total_limit: int = opt(2, help="checkpoints kept")
    eval_each_epoch: bool = opt(True, help="score the dev file after every epoch (learning curve)")
    eval_max_questions: int = opt(0, help="questions used for per-epoch scores (0 = all)")
    n_best: int = opt(20, help="n-best candidates in post-processing")
    max_answer_length: int = opt(64, help="longest answer in tokens at prediction time")
    max_context_chars: int = opt(5000, help="drop paragraphs longer than this (with a message)")
    cache_dir: str = opt("", help="feature cache folder; '' = ~/.cache/paddleqa (PADDLEQA_CACHE)")
    progress: bool = opt(True, help="show progress bars")
    device: str = opt("cpu", help="cpu or gpu (a CUDA build of paddlepaddle is needed for gpu)")

    def __post_init__(self) -> None:
        if self.device not in ("cpu", "gpu"):
            raise ValueError(f"device must be 'cpu' or 'gpu', got {self.device!r}")
        if not self.train_file:
            raise ValueError("train_file is required")
        if not self.output_dir:
            raise ValueError("output_dir is required")
        if self.max_steps == 0 or self.max_steps < -1:
            raise ValueError(f"max_steps must be -1 (use epochs) or > 0, got {self.max_steps}")
        if self.max_steps == -1 and self.epochs <= 0:
            raise ValueError(f"epochs must be > 0, got {self.epochs}")
        for name in ("batch_size", "logging_steps", "save_steps", "save_total_limit", "n_best",
                     "max_answer_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 < self.learning_rate < 1:
            raise ValueError(f"learning_rate must be in (0, 1), got {self.learning_rate}")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
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


class _WindowDataset:
    """Training windows as dicts of numpy rows, trimmed to their true length.

    Rows are visited through a fixed permutation drawn from ``seed``, so the seed decides the
    batch order even though the sampler below shuffles by epoch number alone.
    """

    def __init__(self, feats: dict[str, np.ndarray], seed: int):
        self.feats = feats
        self.order = np.random.RandomState(seed).permutation(len(feats["input_ids"]))

    def __len__(self) -> int:
        return len(self.feats["input_ids"])

    def __getitem__(self, j: int) -> dict[str, Any]:
        i = int(self.order[j])
        n = int(self.feats["length"][i])
        return {
            "input_ids": self.feats["input_ids"][i, :n],
            "token_type_ids": self.feats["token_type_ids"][i, :n],
            "start_positions": self.feats["start_positions"][i],
            "end_positions": self.feats["end_positions"][i],
        }


def _collate(pad_id: int):
    # Written by hand because PaddleNLP's DataCollatorWithPadding pads through the tokenizer, which
    # does not know the scalar span labels; this pads ids to the batch's longest row and stacks labels.
    def collate(rows: Sequence[dict[str, Any]]) -> dict[str, np.ndarray]:
        width = max(len(r["input_ids"]) for r in rows)
        ids = np.full((len(rows), width), pad_id, dtype=np.int64)
        types = np.zeros((len(rows), width), dtype=np.int64)
        for k, r in enumerate(rows):
            ids[k, : len(r["input_ids"])] = r["input_ids"]
            types[k, : len(r["token_type_ids"])] = r["token_type_ids"]
        return {
            "input_ids": ids,
            "token_type_ids": types,
            "start_positions": np.asarray([r["start_positions"] for r in rows], dtype=np.int64),
            "end_positions": np.asarray([r["end_positions"] for r in rows], dtype=np.int64),
        }

    return collate


def replica_fingerprints(model) -> list[str]:
    """sha256 of the weights on every data-parallel rank ([] outside data-parallel runs).

    Each rank hashes its own parameters; the digests are exchanged with ``all_gather``, so rank 0
    can record whether the replicas stayed identical.
    """
    import hashlib

    import numpy as np
    import paddle
    import paddle.distributed as dist


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


def _trainer_class():
    from paddle.io import DistributedBatchSampler
    from paddlenlp.trainer import Trainer

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

    return ResumableTrainer


def _comparable(cfg: dict[str, Any]) -> dict[str, Any]:
    """Config fields that decide the result (progress display and eval extras do not)."""
    skip = {"progress", "cache_dir", "eval_each_epoch", "eval_max_questions", "logging_steps", "device"}
    return {k: v for k, v in cfg.items() if k not in skip}


def _input_hashes(config: TrainSettings, inputs: dict[str, str]) -> dict[str, str]:
    """sha256 of the inputs that decide what the checkpoints hold (local files/folders only)."""

    paths = {"train_file": config.train_file, **inputs}
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
    from paddlenlp.trainer.trainer_utils import get_last_checkpoint

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
    import paddle
    from paddlenlp.trainer import TrainerCallback, TrainingArguments


    started = time.time()
    out = Path(config.output_dir)
    last_checkpoint = _check_output_dir(config, resume, recipe.inputs)
    out.mkdir(parents=True, exist_ok=True)
    # Written first: --resume compares the config and the inputs with these.
    write_yaml(to_dict(config), out / RESOLVED_CONFIG)
    write_json(out / RUN_INPUTS, _input_hashes(config, recipe.inputs))
    paddle.set_device(config.device)

    tokenizer, params = recipe.tokenizer, recipe.params
    cache = config.cache_dir or None
    train_examples, train_report = load_examples(config.train_file, mode="train",
                                                 max_context_chars=config.max_context_chars)
    if not train_examples:
        raise PaddleQAError(f"{config.train_file}: no usable training questions "
                            f"({train_report.dropped} dropped; see `paddleqa data check`)")
    dev_examples = []
    if config.dev_file:
        dev_examples, _ = load_examples(config.dev_file, mode="eval",
                                        max_context_chars=config.max_context_chars)
    train_feats = cached_features(train_examples, tokenizer, params, train=True, cache_dir=cache,
                                  progress=config.progress)
    log.info("training on %d questions -> %d windows (%d without the answer inside)",
             len(train_examples), len(train_feats["input_ids"]),
             int((train_feats["start_positions"] == 0).sum()))

    paddle.seed(config.seed)
    trainable, model = recipe.build()
    sizes = count_params(model)
    log.info("model: %s params (%s non-embedding)", f"{sizes['params']:,}",
             f"{sizes['non_embedding_params']:,}")

    curve_path = out / CURVE
    curve: list[dict[str, Any]] = []
    if last_checkpoint and curve_path.exists():
        curve = json.loads(curve_path.read_text(encoding="utf-8"))
    dev_subset = dev_examples[: config.eval_max_questions] if config.eval_max_questions else dev_examples

    def predict(examples) -> dict[str, str]:
        spans = answer(model, tokenizer, examples, params, n_best=config.n_best,
                       max_answer_length=config.max_answer_length, cache_dir=cache,
                       progress=config.progress)
        return predictions_from_spans([ex.qid for ex in examples], spans)

    class EpochEval(TrainerCallback):
        # Every rank scores (the same questions): a rank that waited instead would sit in the next
        # gradient all-reduce until gloo's timeout kills it. Only rank 0 records the point.
        def on_epoch_end(self, args, state, control, **kwargs):
            if not (config.eval_each_epoch and dev_subset):
                return
            s = cmrc_scores({ex.qid: ex.answers for ex in dev_subset}, predict(dev_subset))
            trainable.train()
            if not state.is_world_process_zero:
                return
            losses = [h["loss"] for h in state.log_history if "loss" in h]
            entry = {"epoch": round(state.epoch or 0, 3), "step": state.global_step,
                     "seconds": round(time.time() - started, 1),
                     "train_loss": losses[-1] if losses else None,
                     "dev_em": s["em"], "dev_f1": s["f1"], "dev_questions": s["total"]}
            curve.append(entry)
            write_json(curve_path, curve)
            log.info("epoch %.2f: dev EM %.2f F1 %.2f", entry["epoch"], s["em"], s["f1"])

    class StepSeed(TrainerCallback):
        """Reseed Paddle before every step from (seed, step, rank).

        The Trainer saves and restores the CPU generator's state with each checkpoint, but on CPU
        that state does not capture the engine's position, so dropout masks after a resume differ
        from an uninterrupted run. Seeding per step makes them a function of the step alone.
        """

        def on_step_begin(self, args, state, control, **kwargs):
            paddle.seed(config.seed + 1_000_003 * args.process_index + state.global_step)

    args = TrainingArguments(
        output_dir=str(out / "checkpoints"),
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
    trainer = _trainer_class()(
        model=trainable,
        args=args,
        train_dataset=_WindowDataset(train_feats, config.seed),
        data_collator=_collate(tokenizer.pad_token_id or 0),
        tokenizer=tokenizer,
        callbacks=[StepSeed(), EpochEval(), *callbacks],
    )
    t_train = time.time()
    result = trainer.train(resume_from_checkpoint=last_checkpoint)
    train_seconds = time.time() - t_train

    replicas = replica_fingerprints(model)  # every rank takes part (a collective)
    model_dir = out / "model"
    if not trainer.is_world_process_zero():
        return {}  # data-parallel: rank 0 alone saves, scores and writes the records
    # The QA model itself (not a distillation wrapper) with its tokenizer: a plain model folder.
    model.save_pretrained(str(model_dir))
    tokenizer.save_pretrained(str(model_dir))
    write_json(model_dir / TRAINING_INFO, {
        "feature_params": dataclasses.asdict(params),
        "train_file": config.train_file,
        "source": f"paddleqa {recipe.stage}",
        **recipe.info,
    })
    write_json(out / "train_log.json", trainer.state.log_history)

    metrics: dict[str, Any] = {
        **sizes,
        "train_questions": len(train_examples),
        "train_windows": int(len(train_feats["input_ids"])),
        "train_dropped": train_report.dropped,
        "train_repaired": train_report.repaired,
        "global_step": trainer.state.global_step,
        "epochs": round(trainer.state.epoch or 0, 3),
        "train_loss": round(float(result.training_loss), 5) if result.training_loss is not None else None,
        "train_seconds": round(train_seconds, 1),
        "train_windows_per_second": round(result.metrics.get("train_samples_per_second", 0.0), 3),
        "resumed_from": Path(last_checkpoint).name if last_checkpoint else None,
        "steps_this_run": trainer.state.global_step - (
            int(Path(last_checkpoint).name.rsplit("-", 1)[-1]) if last_checkpoint else 0),
    }
    metrics.update(recipe.metrics)
    if replicas:
        metrics["replica_weight_sha256"] = replicas
        metrics["replicas_identical"] = len(set(replicas)) == 1
        if len(set(replicas)) != 1:
            log.error("data-parallel replicas ended with different weights: %s", replicas)
    # FLOPs of one window at the length this model was trained and is evaluated with
    metrics["flops_per_query"] = flops_per_query(model.config, params.max_seq_len)
    metrics["flops_seq_len"] = params.max_seq_len
    metrics["model_bytes"] = sum(f.stat().st_size for f in model_dir.iterdir() if f.is_file())
    if dev_examples:
        preds = predict(dev_examples)
        write_json(out / "dev_predictions.json", preds)
        dev = cmrc_scores(gold_references(config.dev_file), preds)
        metrics.update({f"dev_{k}": v for k, v in dev.items()})
        if recipe.metrics.get("teacher_dev_f1"):
            metrics["f1_retention"] = round(dev["f1"] / recipe.metrics["teacher_dev_f1"], 4)
        log.info("dev: EM %.3f F1 %.3f (%d questions)", dev["em"], dev["f1"], dev["total"])
    inputs = {"train_file": config.train_file, "dev_file": config.dev_file or None}
    inputs.update({k: p for k, p in recipe.inputs.items() if p and Path(p).exists()})
    write_manifest(out, recipe.stage, to_dict(config), inputs, {"model": model_dir}, metrics,
                   started=started)
    return metrics
