"""A MobileNetV2-style QA student: 1-D inverted-residual conv blocks, then transformer layers.

Token embeddings (ERNIE's: word + position + token type, LayerNorm) pass through
``conv_blocks`` inverted-residual blocks -- 1x1 expansion by ``expand_ratio``, a depthwise
convolution of width ``kernel_size`` along the sequence, 1x1 projection back, residual add and
LayerNorm -- which mix local context cheaply (a depthwise conv costs ``k`` multiply-adds per
channel per token where attention costs ``seq_len``). ``num_transformer_layers`` self-attention
layers (the compact ERNIE layer) then give the long-range matching between question and passage
that span extraction needs, and a linear span head gives start/end logits.

Padding positions are zeroed before every convolution, so padding never leaks into real tokens
and a window's logits do not depend on how much the batch padded it. The class is a PaddleNLP
``PretrainedModel``: ``save_pretrained``/``from_pretrained`` folders, the same call signature and
outputs as ``ErnieForQuestionAnswering``.
"""
from __future__ import annotations

import copy
import logging
from typing import Optional

import paddle
import paddle.nn as nn
import paddle.nn.functional as F
from paddlenlp.transformers import ErnieConfig
from paddlenlp.transformers.ernie.modeling import ErnieEmbeddings, ErniePretrainedModel

from .compact import CompactLayer, span_outputs


ARCHITECTURE = "MobileQAForQuestionAnswering"
log = logging.getLogger(__name__)


class MobileQAConfig(ErnieConfig):
    """ERNIE embedding settings plus the conv stack; ``num_hidden_layers`` = conv + transformer."""

    model_type = "mobile_qa"

    def __init__(self, conv_blocks: int = 4, expand_ratio: int = 4, kernel_size: int = 5,
                 num_transformer_layers: int = 1, embedding_size: int = 0,
                 block_channels: Optional[list] = None, **kwargs):
        super().__init__(**kwargs)
        # 0 = embeddings as wide as the hidden states; E > 0 = ALBERT-style factorisation: the
        # word/position/type tables are E wide and one linear map lifts their sum to hidden_size
        # (the tables are most of a small model's bytes: a character vocab of ~5.6k x 128).
        self.embedding_size = int(embedding_size)
        if self.embedding_size < 0:
            raise ValueError(f"embedding_size must be >= 0, got {embedding_size}")
        self.conv_blocks = int(conv_blocks)
        self.expand_ratio = int(expand_ratio)
        self.kernel_size = int(kernel_size)
        self.num_transformer_layers = int(num_transformer_layers)
        if self.conv_blocks < 0 or self.num_transformer_layers < 0 or \
                self.conv_blocks + self.num_transformer_layers < 1:
            raise ValueError("a mobile student needs at least one conv block or transformer layer")
        if self.expand_ratio < 1 or self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError("expand_ratio must be >= 1 and kernel_size odd (same-length output)")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not a multiple of "
                             f"{self.num_attention_heads} heads")
        # Inner (expanded) width of each conv block: hidden_size * expand_ratio unless channel
        # pruning (paddleqa.stages.channels) narrowed them block by block.
        widths = block_channels or [self.hidden_size * self.expand_ratio] * self.conv_blocks
        self.block_channels = [int(c) for c in widths]
        if len(self.block_channels) != self.conv_blocks or min(self.block_channels, default=1) < 1:
            raise ValueError(f"block_channels {self.block_channels} must give one width >= 1 for each "
                             f"of the {self.conv_blocks} conv blocks")
        self.num_hidden_layers = self.conv_blocks + self.num_transformer_layers
        # Read by the compact transformer layer.
        self.head_dim = self.hidden_size // self.num_attention_heads
        self.layer_heads = [self.num_attention_heads] * self.num_transformer_layers
        self.layer_ffn = [self.intermediate_size] * self.num_transformer_layers


class InvertedResidual1D(nn.Layer):
    """MobileNetV2's inverted residual over a sequence ([batch, seq, hidden] in and out)."""

    def __init__(self, hidden: int, inner: int, kernel: int, dropout: float, act: str):
        super().__init__()
        self.expand = nn.Conv1D(hidden, inner, 1)
        self.depthwise = nn.Conv1D(inner, inner, kernel, padding=kernel // 2, groups=inner)
        self.project = nn.Conv1D(inner, hidden, 1)
        self.norm = nn.LayerNorm(hidden, epsilon=1e-12)
        self.dropout = nn.Dropout(dropout, mode="upscale_in_train")
        self.activation = getattr(F, act)

    def forward(self, x, keep):
        # keep: [batch, 1, seq] with 1 for real tokens. The 1x1 convolutions run as matmuls on
        # [batch, seq, channels] with the same weights: identical maths, and Paddle Lite's ARM
        # `sparse_conv_detect_pass` crashes (SIGSEGV) on 1x1 conv2d ops from this graph.
        keep_last = keep.transpose([0, 2, 1])
        h = self.activation(_pointwise(self.expand, x * keep_last)) * keep_last
        h = self.activation(self.depthwise(h.transpose([0, 2, 1]))).transpose([0, 2, 1])
        h = _pointwise(self.project, h)
        return self.norm(x + self.dropout(h))


def _pointwise(conv: nn.Conv1D, x):
    """A kernel-1 ``Conv1D`` applied to channels-last ``x`` ([batch, seq, in] -> [batch, seq, out])."""
    return paddle.matmul(x, conv.weight.squeeze(-1), transpose_y=True) + conv.bias


class MobileQAModel(ErniePretrainedModel):
    config_class = MobileQAConfig
    base_model_prefix = "mobile"

    def __init__(self, config: MobileQAConfig):
        super().__init__(config)
        self.pad_token_id = config.pad_token_id
        width = config.embedding_size or config.hidden_size
        if width != config.hidden_size:
            narrow = copy.deepcopy(config)
            narrow.hidden_size = width
            self.embeddings = ErnieEmbeddings(narrow, weight_attr=None)
            self.embeddings_project = nn.Linear(width, config.hidden_size)
        else:
            self.embeddings = ErnieEmbeddings(config, weight_attr=None)
            self.embeddings_project = None
        self.blocks = nn.LayerList([
            InvertedResidual1D(config.hidden_size, inner, config.kernel_size,
                               config.hidden_dropout_prob, config.hidden_act)
            for inner in config.block_channels])
        self.layers = nn.LayerList([CompactLayer(config, config.num_attention_heads,
                                                 config.intermediate_size)
                                    for _ in range(config.num_transformer_layers)])

    def get_input_embeddings(self):
        return self.embeddings.word_embeddings

    def forward(self, input_ids=None, token_type_ids=None, position_ids=None, attention_mask=None,
                inputs_embeds=None):
        dtype = paddle.get_default_dtype()
        if attention_mask is None:
            real = (input_ids != self.pad_token_id).astype(dtype)
        elif attention_mask.ndim == 2:
            real = attention_mask.astype(dtype)
        else:
            raise ValueError("MobileQAModel takes a [batch, seq] attention_mask of 1/0")
        x = self.embeddings(input_ids=input_ids, token_type_ids=token_type_ids,
                            position_ids=position_ids, inputs_embeds=inputs_embeds)
        if self.embeddings_project is not None:
            x = self.embeddings_project(x)
        hidden, attentions = [x], []
        keep = real.unsqueeze(1)
        for block in self.blocks:
            x = block(x, keep)
            hidden.append(x)
        additive = ((1.0 - real) * -1e4).unsqueeze([1, 2])
        additive.stop_gradient = True
        for layer in self.layers:
            x, weights = layer(x, additive)
            hidden.append(x)
            attentions.append(weights)
        return x, hidden, attentions


class MobileQAForQuestionAnswering(ErniePretrainedModel):
    """Span head over :class:`MobileQAModel`; outputs as ``ErnieForQuestionAnswering``."""

    config_class = MobileQAConfig
    base_model_prefix = "mobile"

    def __init__(self, config: MobileQAConfig):
        super().__init__(config)
        self.mobile = MobileQAModel(config)
        self.classifier = nn.Linear(config.hidden_size, 2)

    def get_input_embeddings(self):
        return self.mobile.get_input_embeddings()

    def forward(self, input_ids=None, token_type_ids=None, position_ids=None, attention_mask=None,
                inputs_embeds=None, start_positions=None, end_positions=None,
                output_hidden_states: Optional[bool] = None, output_attentions: Optional[bool] = None,
                return_dict: Optional[bool] = None):
        seq, hidden, attentions = self.mobile(input_ids, token_type_ids, position_ids,
                                              attention_mask, inputs_embeds)
        return span_outputs(self.classifier(seq), hidden, attentions, start_positions, end_positions,
                            output_hidden_states, output_attentions, return_dict)


class MobileQAForMaskedLM(ErniePretrainedModel):
    """Masked-LM head over :class:`MobileQAModel`, for ``paddleqa pretrain`` of the hybrid.

    Written by hand: PaddleNLP's ``ErnieForMaskedLM`` is tied to ERNIE's own encoder. Its head is
    ERNIE's shape (dense, GELU, LayerNorm, then the word embeddings transposed as the decoder,
    plus a bias), narrowed to the embedding width when the embeddings are factorised. The encoder
    sits under the same ``mobile`` prefix as in :class:`MobileQAForQuestionAnswering`, so a saved
    folder loads into the QA model with the span head fresh and this head dropped.
    """

    config_class = MobileQAConfig
    base_model_prefix = "mobile"

    def __init__(self, config: MobileQAConfig):
        super().__init__(config)
        self.mobile = MobileQAModel(config)
        width = config.embedding_size or config.hidden_size
        self.transform = nn.Linear(config.hidden_size, width)
        self.transform_norm = nn.LayerNorm(width, epsilon=1e-12)
        self.decoder_bias = self.create_parameter([config.vocab_size], is_bias=True)

    def get_input_embeddings(self):
        return self.mobile.get_input_embeddings()

    def forward(self, input_ids=None, token_type_ids=None, position_ids=None, attention_mask=None,
                inputs_embeds=None, labels=None):
        """Logits ``[batch, seq, vocab]``; with ``labels`` (-100 = not predicted), (loss, logits)."""
        seq, _, _ = self.mobile(input_ids, token_type_ids, position_ids, attention_mask, inputs_embeds)
        h = self.transform_norm(F.gelu(self.transform(seq)))
        logits = paddle.matmul(h, self.get_input_embeddings().weight, transpose_y=True) + self.decoder_bias
        if labels is None:
            return logits
        loss = F.cross_entropy(logits.reshape([-1, logits.shape[-1]]), labels.reshape([-1]), ignore_index=-100)
        return loss, logits
