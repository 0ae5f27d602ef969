"""The PaddleNLP Trainer pieces of masked-LM pre-training (``paddleqa pretrain``).

What the Trainer is fed: packed sequences (:class:`SequenceDataset`) in an epoch-seeded order
that tags every row with its epoch (:class:`EpochTaggedSampler`), padded in the DataLoader
(:class:`RowPacker`) and masked on the training thread (:meth:`MLMTrainer._prepare_inputs`) by
PaddleNLP's ``DataCollatorForWholeWordMask`` made a function of the batch alone
(:class:`SeededWholeWordMask`); the fixed-mask probe loss the stage reports before and after
training (:func:`probe_loss`); and :class:`MaskedLMObjective`, what ``pretrain.run`` drives for
``objective: mlm`` (ELECTRA's twin: :mod:`.electra`).

This module imports paddle and paddlenlp at load, so :func:`paddleqa.stages.pretrain.run` imports
it when training starts (deferred on purpose), as :mod:`.trainer` is.
"""
from __future__ import annotations

import hashlib
import logging
import random
import warnings
from typing import Any, Sequence

import numpy as np
import paddle
from paddle.io import DistributedBatchSampler
from paddlenlp.data import DataCollatorForWholeWordMask

from ..models.build import build_mlm_from_scratch, count_params
from .trainer import ResumableTrainer

log = logging.getLogger(__name__)


class SequenceDataset:
    """Rows of a :class:`paddleqa.text.corpus.Sequences`, addressed by *tagged* indices.

    Index ``epoch * len(self) + i`` is row ``i`` as seen in ``epoch``; the tag travels with the
    row to the collator as ``mask_key``, so each epoch masks a row afresh (dynamic masking) while
    a resumed run masks it exactly as an uninterrupted one did.
    """

    def __init__(self, sequences):
        self.sequences = sequences

    def __len__(self) -> int:
        return len(self.sequences)

    def __getitem__(self, tagged: int) -> dict[str, Any]:
        i = int(tagged) % len(self.sequences)
        ids, refs = self.sequences.row(i)
        return {"input_ids": ids.astype(np.int64), "chinese_ref": refs, "mask_key": int(tagged)}


class EpochTaggedSampler(DistributedBatchSampler):
    """``DistributedBatchSampler`` (order drawn from the epoch number, see
    :class:`~paddleqa.stages.trainer.ResumableTrainer`) that yields tagged indices
    (``epoch * N + i``) for :class:`SequenceDataset`."""

    def __iter__(self):
        epoch, n = self.epoch, len(self.dataset)  # read before the parent's iterator bumps it
        for batch in super().__iter__():
            yield [epoch * n + i for i in batch]


class RowPacker:
    """The DataLoader's ``collate_fn``: pads rows into arrays and draws nothing at random.

    The paddle DataLoader collates in a prefetch thread while the Trainer steps. Masking there
    raced with the Trainer: on a resume it sets the global ``random``/``np.random`` states from
    the checkpoint (``_load_rng_state``) while the thread may be masking the next batch between
    its seeding and its draws, so the first step after a resume now and then trained on other
    masks. The thread therefore only packs; :class:`MLMTrainer` masks on the training thread.
    """

    def __init__(self, pad_token_id: int):
        self.pad = pad_token_id

    def __call__(self, rows: Sequence[dict[str, Any]]) -> dict[str, np.ndarray]:
        width = max(len(r["input_ids"]) for r in rows)
        ids = np.full((len(rows), width), self.pad, dtype=np.int64)
        refs = np.zeros((len(rows), width), dtype=np.int64)
        for k, r in enumerate(rows):
            ids[k, :len(r["input_ids"])] = r["input_ids"]
            refs[k, np.asarray(r["chinese_ref"], dtype=np.int64)] = 1
        return {"input_ids": ids, "ref_mask": refs, "length": np.array([len(r["input_ids"]) for r in rows]),
                "mask_key": np.array([r["mask_key"] for r in rows], dtype=np.int64)}


def unpack_rows(batch: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows :class:`RowPacker` packed (arrays or paddle tensors), as the dataset gave them."""
    arrays = {k: v.numpy() if hasattr(v, "numpy") else np.asarray(v) for k, v in batch.items()}
    return [{"input_ids": arrays["input_ids"][k, :n], "chinese_ref": np.flatnonzero(arrays["ref_mask"][k, :n]),
             "mask_key": int(arrays["mask_key"][k])} for k, n in enumerate(arrays["length"].tolist())]


class MLMTrainer(ResumableTrainer):
    """The Trainer over :class:`SequenceDataset`: same schedule and resume as every stage's.

    Batches arrive packed (:class:`RowPacker`) and are masked here, on the training thread, by
    ``masker`` (a :class:`SeededWholeWordMask`): nothing else draws from the global RNGs while
    it seeds, draws and restores them.
    """

    def __init__(self, *args, masker: "SeededWholeWordMask", **kwargs):
        super().__init__(*args, **kwargs)
        self.masker = masker

    def _prepare_inputs(self, inputs):
        if "mask_key" in inputs:
            masked = self.masker(unpack_rows(inputs))
            inputs = {k: paddle.to_tensor(v) for k, v in masked.items()}
        return super()._prepare_inputs(inputs)

    def _get_train_sampler(self):
        return EpochTaggedSampler(
            self.train_dataset, batch_size=self.args.per_device_train_batch_size, shuffle=True,
            num_replicas=self.args.dataset_world_size, rank=self.args.dataset_rank,
            drop_last=self.args.dataloader_drop_last,
        )


class SeededWholeWordMask:
    """PaddleNLP's ``DataCollatorForWholeWordMask`` (numpy), reproducible batch by batch.

    The collator picks words with the global ``random`` module and draws the 80/10/10 split with
    ``np.random``, whose states the Trainer also saves and restores. Here each batch seeds both
    from (seed, the rows' tagged indices) and the caller's RNG states are restored afterwards:
    the masks are a function of the batch alone, on every rank and after any resume. Call it on
    the training thread (:class:`MLMTrainer` does), never from the DataLoader's prefetch thread.

    Written around the collator, not instead of it: it adds two things the collator lacks. The
    seeding above, and one masked token in a row where it masks none (when every word of the row
    is longer than its 15% budget), since a batch of such rows has no label and a NaN loss.
    """

    def __init__(self, tokenizer, mlm_probability: float, seed: int):
        self.collator = DataCollatorForWholeWordMask(tokenizer, mlm_probability=mlm_probability,
                                                     return_tensors="np")
        self.tokenizer, self.seed = tokenizer, seed
        self.special = np.asarray(sorted({tokenizer.cls_token_id, tokenizer.sep_token_id,
                                          tokenizer.pad_token_id}), dtype=np.int64)

    def batch_seed(self, keys: Sequence[int]) -> int:
        digest = hashlib.sha256(repr((self.seed, list(keys))).encode("ascii")).digest()
        return int.from_bytes(digest[:4], "little")

    def __call__(self, rows: Sequence[dict[str, Any]]) -> dict[str, np.ndarray]:
        seed = self.batch_seed([r["mask_key"] for r in rows])
        py_state, np_state = random.getstate(), np.random.get_state()
        random.seed(seed)
        np.random.seed(seed)
        try:
            with warnings.catch_warnings():
                # it warns on every batch that the tokenizer is not a BertTokenizer; ERNIE's
                # tokenizer uses the same "##" WordPiece scheme the whole-word grouping reads
                warnings.filterwarnings("ignore", message="DataCollatorForWholeWordMask is only")
                batch = self.collator([{"input_ids": r["input_ids"], "chinese_ref": r["chinese_ref"]}
                                       for r in rows])
            self._mask_one_where_none(batch, rows, np.random.RandomState(seed))
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)
        return {"input_ids": batch["input_ids"].astype(np.int64), "labels": batch["labels"].astype(np.int64)}

    def _mask_one_where_none(self, batch: dict[str, np.ndarray], rows, rng) -> None:
        for k, r in enumerate(rows):
            if (batch["labels"][k] != -100).any():
                continue
            ids = np.asarray(r["input_ids"])
            candidates = np.flatnonzero(~np.isin(ids, self.special))
            if len(candidates):
                p = int(candidates[rng.randint(len(candidates))])
                batch["labels"][k, p] = ids[p]
                batch["input_ids"][k, p] = self.tokenizer.mask_token_id


def probe_loss(model, dataset: SequenceDataset, collate: SeededWholeWordMask, rows: int,
               batch_size: int) -> float:
    """Mean masked-LM loss per masked token on the first ``rows`` sequences with fixed masks
    (their epoch-0 masks), in eval mode: comparable before and after training, and between runs."""
    model.eval()
    total, count = 0.0, 0
    with paddle.no_grad():
        for start in range(0, min(rows, len(dataset)), batch_size):
            batch = collate([dataset[i] for i in range(start, min(rows, len(dataset), start + batch_size))])
            labels = batch["labels"]
            n = int((labels != -100).sum())
            loss = model(input_ids=paddle.to_tensor(batch["input_ids"]), labels=paddle.to_tensor(labels))
            loss = loss[0] if isinstance(loss, (tuple, list)) else loss
            total += float(loss) * n
            count += n
    model.train()
    return round(total / max(1, count), 5)


class MaskedLMObjective:
    """Masked-LM with whole-word masking: the model is trained and saved as it is."""

    name = "mlm"

    def build(self, config, vocab_size: int, pad_token_id: int):
        return build_mlm_from_scratch(config.arch, vocab_size, pad_token_id)

    def saved(self, model):
        return model

    def sizes(self, model) -> dict[str, int]:
        encoder = getattr(model, model.base_model_prefix)
        return {**count_params(model), "encoder_params": count_params(encoder)["params"]}

    def collate(self, masker: SeededWholeWordMask) -> SeededWholeWordMask:
        return masker

    def probe(self, model, dataset: SequenceDataset, collate: SeededWholeWordMask, rows: int,
              batch_size: int) -> dict[str, float]:
        return {"probe_loss": probe_loss(model, dataset, collate, rows, batch_size)}

    def settings(self, config) -> dict:
        return {}
