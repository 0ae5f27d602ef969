"""ELECTRA pre-training (Clark et al. 2020): a small generator and replaced-token detection.

A small masked-LM generator fills the masked positions with tokens sampled from its softmax, and
the discriminator -- the encoder ``paddleqa pretrain`` writes and finetune starts from -- learns
to tell, for every token, whether it was replaced. Loss = generator MLM loss + ``rtd_weight`` x
RTD loss (binary cross-entropy over non-pad tokens; a sample equal to the original counts as
original), as in the paper.

Choices, kept simple:

- The discriminator is the same masked-LM model the ``mlm`` objective trains
  (:func:`paddleqa.models.build.build_mlm_from_scratch`), so ``model/`` is the same kind of
  folder with the same ``config.json`` architecture. Its masked-LM head is not used: it stays as
  initialised and is frozen (no gradient, which also keeps ``paddle.DataParallel`` free of
  unused parameters); finetune drops it. The RTD head (dense, GELU, dense to one logit, the
  paper's) lives here and is not saved.
- The generator is :class:`paddleqa.models.mobile.MobileQAForMaskedLM` for both families: for
  ``kind: ernie`` with no conv blocks (Transformer layers of ERNIE's arithmetic, the compact
  layer), for ``kind: mobilenet`` with the discriminator's conv blocks. Width, FFN and heads are
  ``generator_size`` times the discriminator's; layers are the same. It is used rather than
  ``ErnieForMaskedLM`` because it has factorised embeddings: the generator takes the
  discriminator's embedding layer itself (word, position and token-type tables and their
  LayerNorm: ELECTRA's tied embeddings), projects it to its own width, and its MLM decoder is the
  shared word table transposed. The generator is discarded after pre-training (not saved).
- Sampling is Gumbel-max in numpy from a seed the batch carries (``sample_seed``, drawn from the
  rows' tagged indices like the masks), so the replaced tokens are a function of the batch and
  the weights: resume-exact and fixed on the probe rows. No gradient flows through the sample.
"""
from __future__ import annotations

import dataclasses
import logging

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from .build import ArchConfig, build_mlm_from_scratch, count_params, mobile_config
from .mobile import MobileQAForMaskedLM

log = logging.getLogger(__name__)

IGNORE = -100  # label of a position the generator does not predict (the collator's)


def generator_arch(arch: ArchConfig, size: float) -> ArchConfig:
    """The generator's architecture: ``size`` x the discriminator's width, FFN and heads (at
    least 1 each, the width a multiple of the heads), the same layers, the discriminator's
    embedding width (its embeddings are shared), conv blocks only for ``kind: mobilenet``."""
    heads = max(1, round(arch.num_heads * size))
    hidden = heads * max(1, round(arch.hidden_size * size / heads))
    return dataclasses.replace(
        arch, kind="mobilenet", hidden_size=hidden, num_heads=heads,
        intermediate_size=max(1, round(arch.intermediate_size * size)),
        conv_blocks=arch.conv_blocks if arch.kind == "mobilenet" else 0,
        embedding_size=(arch.embedding_size if arch.kind == "mobilenet" else 0) or arch.hidden_size)


class ElectraPretrainer(nn.Layer):
    """Generator + discriminator + RTD head; ``forward`` returns the loss and its parts.

    ``discriminator`` is a masked-LM model (ERNIE's or the hybrid's) whose encoder sits under its
    ``base_model_prefix``; ``generator`` a :class:`MobileQAForMaskedLM` whose embedding layer is
    replaced here by the discriminator's.
    """

    def __init__(self, discriminator, generator: MobileQAForMaskedLM, rtd_weight: float,
                 pad_token_id: int):
        super().__init__()
        self.discriminator, self.generator = discriminator, generator
        self.rtd_weight, self.pad_token_id = float(rtd_weight), int(pad_token_id)
        encoder = self.encoder
        generator.mobile.embeddings = encoder.embeddings  # ELECTRA's tied embeddings
        hidden = discriminator.config.hidden_size
        self.rtd_transform = nn.Linear(hidden, hidden)
        self.rtd_out = nn.Linear(hidden, 1)
        used = {id(p) for p in encoder.parameters()}
        for p in discriminator.parameters():  # its MLM head: unused, kept as initialised
            if id(p) not in used:
                p.stop_gradient = True

    @property
    def encoder(self):
        return getattr(self.discriminator, self.discriminator.base_model_prefix)

    def forward(self, input_ids, labels, sample_seed):
        """``input_ids``: the masked rows; ``labels``: the original token where masked, else -100;
        ``sample_seed``: the seed of this batch's generator samples. Returns a dict: ``loss``
        (to train on), ``mlm_loss``, ``rtd_loss`` and counts (``tokens``, ``replaced``,
        ``rtd_correct``, ``masked``) for the metrics."""
        mlm_loss, logits = self.generator(input_ids=input_ids, labels=labels)
        masked = labels != IGNORE
        original = paddle.where(masked, labels, input_ids)
        corrupted = self._corrupt(original, masked, logits, sample_seed)
        real = (original != self.pad_token_id).astype("float32")
        replaced = (corrupted != original).astype("float32")
        seq = self.encoder(input_ids=corrupted)[0]
        rtd_logits = self.rtd_out(F.gelu(self.rtd_transform(seq))).squeeze(-1)
        per_token = F.binary_cross_entropy_with_logits(rtd_logits, replaced, reduction="none")
        tokens = real.sum()
        rtd_loss = (per_token * real).sum() / paddle.clip(tokens, min=1.0)
        correct = (((rtd_logits > 0).astype("float32") == replaced).astype("float32") * real).sum()
        return {"loss": mlm_loss + self.rtd_weight * rtd_loss, "mlm_loss": mlm_loss,
                "rtd_loss": rtd_loss, "tokens": tokens, "replaced": (replaced * real).sum(),
                "rtd_correct": correct, "masked": masked.astype("float32").sum()}

    @staticmethod
    def _corrupt(original, masked, logits, sample_seed):
        """``original`` with every masked position replaced by a token sampled (Gumbel-max,
        numpy, seeded by ``sample_seed``) from the generator's softmax there."""
        where = paddle.nonzero(masked)  # [n, 2]
        if where.shape[0] == 0:
            return original
        picked = paddle.gather_nd(logits.detach(), where).numpy().astype(np.float64)
        rng = np.random.default_rng(int(np.asarray(sample_seed).reshape(-1)[0]))
        sample = np.argmax(picked + rng.gumbel(size=picked.shape), axis=-1).astype(np.int64)
        flat = original.reshape([-1]).clone()
        index = where[:, 0] * original.shape[1] + where[:, 1]
        flat = paddle.scatter(flat, index, paddle.to_tensor(sample), overwrite=True)
        return flat.reshape(original.shape).detach()


def build_electra(arch: ArchConfig, vocab_size: int, pad_token_id: int, generator_size: float,
                  rtd_weight: float) -> ElectraPretrainer:
    """A randomly initialised ELECTRA pair for ``arch`` (the discriminator first, then the
    generator, so a seed gives the discriminator the same initial weights as ``mlm`` would)."""
    discriminator = build_mlm_from_scratch(arch, vocab_size, pad_token_id)
    generator = MobileQAForMaskedLM(mobile_config(generator_arch(arch, generator_size), vocab_size,
                                                  pad_token_id))
    return ElectraPretrainer(discriminator, generator, rtd_weight, pad_token_id)


def electra_sizes(model: ElectraPretrainer) -> dict[str, int]:
    """Parameter counts: the saved discriminator's, its encoder's, and the generator's own (the
    shared embeddings counted with the discriminator only)."""
    shared = {id(p) for p in model.encoder.embeddings.parameters()}
    own = sum(int(np.prod(p.shape)) for p in model.generator.parameters() if id(p) not in shared)
    return {**count_params(model.discriminator),
            "encoder_params": count_params(model.encoder)["params"],
            "generator_params": own, "training_params": count_params(model)["params"]}
