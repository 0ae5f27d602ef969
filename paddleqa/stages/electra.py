"""The Trainer pieces of ELECTRA pre-training (``paddleqa pretrain --objective electra``).

The masked-LM pieces (:mod:`.mlm`: the dataset, the epoch-seeded sampler, the whole-word masks on
the training thread) carry over unchanged; ELECTRA adds the seed of each batch's generator
samples to the masks (:class:`ElectraMask`), the model (:mod:`paddleqa.models.electra`), and a
probe that reports the generator's MLM loss, the RTD loss and accuracy and the replaced share on
fixed rows (:func:`electra_probe`). :class:`ElectraObjective` is what ``pretrain.run`` drives.

This module imports paddle at load (as :mod:`.mlm` does), so ``pretrain`` imports it when
training starts (deferred on purpose).
"""
from __future__ import annotations

import hashlib
import logging
from typing import Any, Sequence

import numpy as np
import paddle

from ..models.electra import ElectraPretrainer, build_electra, electra_sizes
from .mlm import SeededWholeWordMask, SequenceDataset

log = logging.getLogger(__name__)


class ElectraMask:
    """The masks of :class:`~paddleqa.stages.mlm.SeededWholeWordMask` (the same ones ``mlm``
    draws) plus ``sample_seed``: a seed of the generator's samples drawn from (seed, the rows'
    tagged indices), so the replaced tokens are a function of the batch, as the masks are."""

    def __init__(self, masker: SeededWholeWordMask):
        self.masker = masker

    def __call__(self, rows: Sequence[dict[str, Any]]) -> dict[str, np.ndarray]:
        batch = self.masker(rows)
        key = repr(("generator samples", self.masker.seed, [int(r["mask_key"]) for r in rows]))
        seed = int.from_bytes(hashlib.sha256(key.encode("ascii")).digest()[:4], "little")
        return {**batch, "sample_seed": np.array([seed], dtype=np.int64)}


def electra_probe(model: ElectraPretrainer, dataset: SequenceDataset, collate: ElectraMask,
                  rows: int, batch_size: int) -> dict[str, float]:
    """On the first ``rows`` sequences with their epoch-0 masks and samples, in eval mode: the
    generator's MLM loss per masked token (``probe_loss``, as ``mlm`` reports its own), the RTD
    loss and accuracy per non-pad token, and the share of non-pad tokens the generator replaced."""
    model.eval()
    sums = dict.fromkeys(("mlm", "rtd", "correct", "tokens", "replaced", "masked"), 0.0)
    n = min(rows, len(dataset))
    with paddle.no_grad():
        for start in range(0, n, batch_size):
            batch = collate([dataset[i] for i in range(start, min(n, start + batch_size))])
            out = {k: float(v) for k, v in model(**{k: paddle.to_tensor(v) for k, v in batch.items()}).items()}
            sums["mlm"] += out["mlm_loss"] * out["masked"]
            sums["rtd"] += out["rtd_loss"] * out["tokens"]
            for k in ("correct", "tokens", "replaced", "masked"):
                sums[k] += out["rtd_correct" if k == "correct" else k]
    model.train()
    tokens, masked = max(1.0, sums["tokens"]), max(1.0, sums["masked"])
    return {"probe_loss": round(sums["mlm"] / masked, 5), "probe_rtd_loss": round(sums["rtd"] / tokens, 5),
            "probe_rtd_accuracy": round(sums["correct"] / tokens, 5),
            "probe_replaced_share": round(sums["replaced"] / tokens, 5)}


class ElectraObjective:
    """Replaced-token detection with a small generator (:mod:`paddleqa.models.electra`)."""

    name = "electra"

    def build(self, config, vocab_size: int, pad_token_id: int) -> ElectraPretrainer:
        return build_electra(config.arch, vocab_size, pad_token_id, config.generator_size,
                             config.rtd_weight)

    def saved(self, model: ElectraPretrainer):
        """What ``model/`` holds: the discriminator (the generator and RTD head are dropped)."""
        return model.discriminator

    def sizes(self, model: ElectraPretrainer) -> dict[str, int]:
        return electra_sizes(model)

    def collate(self, masker: SeededWholeWordMask) -> ElectraMask:
        return ElectraMask(masker)

    def probe(self, model: ElectraPretrainer, dataset, collate, rows: int, batch_size: int) -> dict:
        return electra_probe(model, dataset, collate, rows, batch_size)

    def settings(self, config) -> dict[str, Any]:
        return {"generator_size": config.generator_size, "rtd_weight": config.rtd_weight}
