"""A dense ERNIE whose layers may each have their own head count and FFN width.

Structured pruning (``paddleqa prune``) ends in this model: an ordinary, smaller dense network
(no masks, no supernet) that saves and loads as a model folder and exports like any other. A
stock ``ErnieConfig`` cannot express it -- Paddle's ``nn.MultiHeadAttention`` ties the attention
width to the hidden size (heads x head_dim == hidden) and every layer has the same shape -- so the
attention and layer are written here, with the same parameter names and the same arithmetic as
Paddle's post-norm ``TransformerEncoderLayer`` that PaddleNLP's ERNIE uses. An ERNIE QA model
converts to this class without changing a single output (``from_ernie``).

The forward pass takes an optional ``head_mask`` ``[layers, max_heads]`` that scales each head's
attention weights, which is what head-importance scoring differentiates through.
"""
from __future__ import annotations

import logging
from typing import Optional, Sequence

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F
from paddlenlp.transformers import ErnieConfig
from paddlenlp.transformers.ernie.modeling import ErnieEmbeddings, ErniePretrainedModel
from paddlenlp.transformers.model_outputs import QuestionAnsweringModelOutput

log = logging.getLogger(__name__)

ARCHITECTURE = "CompactErnieForQuestionAnswering"


class CompactErnieConfig(ErnieConfig):
    """ERNIE config plus per-layer ``layer_heads`` and ``layer_ffn`` and a fixed ``head_dim``."""

    model_type = "compact_ernie"

    def __init__(self, layer_heads: Sequence[int] = (), layer_ffn: Sequence[int] = (),
                 head_dim: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.layer_heads = [int(h) for h in layer_heads] or [self.num_attention_heads] * self.num_hidden_layers
        self.layer_ffn = [int(f) for f in layer_ffn] or [self.intermediate_size] * self.num_hidden_layers
        self.head_dim = int(head_dim or self.hidden_size // self.num_attention_heads)
        if len(self.layer_heads) != len(self.layer_ffn):
            raise ValueError(f"layer_heads ({len(self.layer_heads)}) and layer_ffn "
                             f"({len(self.layer_ffn)}) must name the same layers")
        if any(h < 1 for h in self.layer_heads) or any(f < 1 for f in self.layer_ffn):
            raise ValueError("every layer keeps at least one head and one FFN neuron "
                             "(drop a whole layer instead)")
        self.num_hidden_layers = len(self.layer_heads)
        self.num_attention_heads = max(self.layer_heads, default=self.num_attention_heads)
        self.intermediate_size = max(self.layer_ffn, default=self.intermediate_size)


class CompactAttention(nn.Layer):
    """Multi-head self-attention with ``heads * head_dim`` free of the hidden size."""

    def __init__(self, hidden: int, heads: int, head_dim: int, dropout: float):
        super().__init__()
        self.num_heads, self.head_dim, self.dropout = heads, head_dim, dropout
        inner = heads * head_dim
        self.q_proj = nn.Linear(hidden, inner)
        self.k_proj = nn.Linear(hidden, inner)
        self.v_proj = nn.Linear(hidden, inner)
        self.out_proj = nn.Linear(inner, hidden)

    def _split(self, x):
        return x.reshape([0, 0, self.num_heads, self.head_dim]).transpose([0, 2, 1, 3])

    def forward(self, x, attn_mask=None, head_mask=None):
        q = self._split(self.q_proj(x))
        k = self._split(self.k_proj(x))
        v = self._split(self.v_proj(x))
        scores = paddle.matmul(q * self.head_dim ** -0.5, k, transpose_y=True)
        if attn_mask is not None:
            scores = scores + attn_mask
        weights = F.softmax(scores)
        if self.dropout:
            weights = F.dropout(weights, self.dropout, training=self.training, mode="upscale_in_train")
        if head_mask is not None:
            weights = weights * head_mask.reshape([1, -1, 1, 1])
        out = paddle.matmul(weights, v).transpose([0, 2, 1, 3])
        out = out.reshape([0, 0, self.num_heads * self.head_dim])
        return self.out_proj(out), weights


class CompactLayer(nn.Layer):
    """Post-norm transformer layer (as Paddle's ``TransformerEncoderLayer``, ERNIE's settings)."""

    def __init__(self, config: CompactErnieConfig, heads: int, ffn: int):
        super().__init__()
        h = config.hidden_size
        self.self_attn = CompactAttention(h, heads, config.head_dim, config.attention_probs_dropout_prob)
        self.linear1 = nn.Linear(h, ffn)
        self.linear2 = nn.Linear(ffn, h)
        self.norm1 = nn.LayerNorm(h, epsilon=1e-12)
        self.norm2 = nn.LayerNorm(h, epsilon=1e-12)
        self.dropout1 = nn.Dropout(config.hidden_dropout_prob, mode="upscale_in_train")
        self.dropout2 = nn.Dropout(config.hidden_dropout_prob, mode="upscale_in_train")
        self.activation = getattr(F, config.hidden_act)

    def forward(self, x, attn_mask=None, head_mask=None):
        attn, weights = self.self_attn(x, attn_mask, head_mask)
        x = self.norm1(x + self.dropout1(attn))
        x = self.norm2(x + self.dropout2(self.linear2(self.activation(self.linear1(x)))))
        return x, weights


class CompactEncoder(nn.Layer):
    def __init__(self, config: CompactErnieConfig):
        super().__init__()
        self.layers = nn.LayerList([CompactLayer(config, h, f)
                                    for h, f in zip(config.layer_heads, config.layer_ffn)])


class CompactErnieModel(ErniePretrainedModel):
    config_class = CompactErnieConfig
    base_model_prefix = "ernie"

    def __init__(self, config: CompactErnieConfig):
        super().__init__(config)
        self.pad_token_id = config.pad_token_id
        self.embeddings = ErnieEmbeddings(config, weight_attr=None)
        self.encoder = CompactEncoder(config)

    def get_input_embeddings(self):
        return self.embeddings.word_embeddings

    def forward(self, input_ids=None, token_type_ids=None, position_ids=None, attention_mask=None,
                inputs_embeds=None, head_mask=None, output_hidden_states=False, output_attentions=False):
        if attention_mask is None:
            attention_mask = ((input_ids == self.pad_token_id).astype(paddle.get_default_dtype())
                              * -1e4).unsqueeze([1, 2])
        elif attention_mask.ndim == 2:  # 1 = real token, 0 = padding (as PaddleNLP's ERNIE)
            attention_mask = (1.0 - attention_mask.unsqueeze([1, 2]).astype(paddle.get_default_dtype())) * -1e4
        attention_mask.stop_gradient = True
        x = self.embeddings(input_ids=input_ids, token_type_ids=token_type_ids,
                            position_ids=position_ids, inputs_embeds=inputs_embeds)
        hidden, attentions = [x], []
        for i, layer in enumerate(self.encoder.layers):
            mask_i = None if head_mask is None else head_mask[i, : layer.self_attn.num_heads]
            x, weights = layer(x, attention_mask, mask_i)
            hidden.append(x)
            attentions.append(weights)
        return x, hidden, attentions


def span_outputs(logits, hidden, attentions, start_positions=None, end_positions=None,
                 output_hidden_states=None, output_attentions=None, return_dict=None):
    """Start/end logits from ``[batch, seq, 2]`` head output, the gold-span loss when labels are
    given, packed as ``ErnieForQuestionAnswering`` does (tuple, or a model-output object)."""
    start_logits, end_logits = paddle.unstack(logits.transpose([2, 0, 1]), axis=0)
    loss = None
    if start_positions is not None and end_positions is not None:
        loss = (F.cross_entropy(start_logits, start_positions.reshape([-1, 1]))
                + F.cross_entropy(end_logits, end_positions.reshape([-1, 1]))) / 2
    if not return_dict:
        out = (start_logits, end_logits)
        return ((loss,) + out) if loss is not None else out
    return QuestionAnsweringModelOutput(
        loss=loss, start_logits=start_logits, end_logits=end_logits,
        hidden_states=tuple(hidden) if output_hidden_states else None,
        attentions=tuple(attentions) if output_attentions else None)


class CompactErnieForQuestionAnswering(ErniePretrainedModel):
    """Span head over :class:`CompactErnieModel`; outputs as ``ErnieForQuestionAnswering``."""

    config_class = CompactErnieConfig
    base_model_prefix = "ernie"

    def __init__(self, config: CompactErnieConfig):
        super().__init__(config)
        self.ernie = CompactErnieModel(config)
        self.classifier = nn.Linear(config.hidden_size, 2)

    def forward(self, input_ids=None, token_type_ids=None, position_ids=None, attention_mask=None,
                inputs_embeds=None, head_mask=None, start_positions=None, end_positions=None,
                output_hidden_states: Optional[bool] = None, output_attentions: Optional[bool] = None,
                return_dict: Optional[bool] = None):
        seq, hidden, attentions = self.ernie(input_ids, token_type_ids, position_ids, attention_mask,
                                             inputs_embeds, head_mask)
        return span_outputs(self.classifier(seq), hidden, attentions, start_positions, end_positions,
                            output_hidden_states, output_attentions, return_dict)


def from_ernie(model) -> CompactErnieForQuestionAnswering:
    """The same network as an ``ErnieForQuestionAnswering`` (or a compact one), as this class."""
    if isinstance(model, CompactErnieForQuestionAnswering):
        return model
    cfg = model.config.to_dict()
    for key in ("architectures", "model_type"):
        cfg.pop(key, None)
    compact = CompactErnieForQuestionAnswering(CompactErnieConfig(**cfg))
    state = {k: v for k, v in model.state_dict().items() if ".pooler." not in k}  # QA ignores it
    missing = set(compact.state_dict()) - set(state)
    if missing:
        raise ValueError(f"cannot convert {type(model).__name__}: no weights for {sorted(missing)[:3]}")
    compact.set_state_dict(state)
    return compact


def select(model: CompactErnieForQuestionAnswering, layers: Sequence[int],
           heads: Sequence[Sequence[int]], neurons: Sequence[Sequence[int]]) -> CompactErnieForQuestionAnswering:
    """A smaller dense copy keeping ``layers`` (0-based), and in each the given heads and FFN neurons.

    ``heads[i]`` / ``neurons[i]`` index into kept layer ``layers[i]``; their order is kept, so
    passing indices sorted by importance puts the most important first (as DynaBERT's reorder).
    """
    cfg = model.config.to_dict()
    for key in ("architectures", "model_type"):
        cfg.pop(key, None)
    cfg.update(layer_heads=[len(h) for h in heads], layer_ffn=[len(n) for n in neurons],
               num_hidden_layers=len(layers), head_dim=model.config.head_dim)
    small = CompactErnieForQuestionAnswering(CompactErnieConfig(**cfg))
    src = model.state_dict()
    d = model.config.head_dim
    state = {k: v for k, v in src.items() if ".encoder." not in k}
    for new_i, (old_i, keep_h, keep_n) in enumerate(zip(layers, heads, neurons)):
        cols = np.concatenate([np.arange(h * d, (h + 1) * d) for h in keep_h]).astype("int64")
        cols_t, neu_t = paddle.to_tensor(cols), paddle.to_tensor(np.asarray(keep_n, dtype="int64"))
        p_old, p_new = f"ernie.encoder.layers.{old_i}.", f"ernie.encoder.layers.{new_i}."
        for name in ("q_proj", "k_proj", "v_proj"):
            state[f"{p_new}self_attn.{name}.weight"] = paddle.index_select(src[f"{p_old}self_attn.{name}.weight"], cols_t, axis=1)
            state[f"{p_new}self_attn.{name}.bias"] = paddle.index_select(src[f"{p_old}self_attn.{name}.bias"], cols_t)
        state[f"{p_new}self_attn.out_proj.weight"] = paddle.index_select(src[f"{p_old}self_attn.out_proj.weight"], cols_t, axis=0)
        state[f"{p_new}self_attn.out_proj.bias"] = src[f"{p_old}self_attn.out_proj.bias"]
        state[f"{p_new}linear1.weight"] = paddle.index_select(src[f"{p_old}linear1.weight"], neu_t, axis=1)
        state[f"{p_new}linear1.bias"] = paddle.index_select(src[f"{p_old}linear1.bias"], neu_t)
        state[f"{p_new}linear2.weight"] = paddle.index_select(src[f"{p_old}linear2.weight"], neu_t, axis=0)
        state[f"{p_new}linear2.bias"] = src[f"{p_old}linear2.bias"]
        for norm in ("norm1", "norm2"):
            for part in ("weight", "bias"):
                state[f"{p_new}{norm}.{part}"] = src[f"{p_old}{norm}.{part}"]
    small.set_state_dict(state)
    return small


