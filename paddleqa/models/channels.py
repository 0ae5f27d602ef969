"""A Conv2D view of the mobile student's conv blocks: the form PaddleSlim's filter pruners read.

PaddleSlim 2.6's dygraph filter pruners (``L1NormFilterPruner``, ``FPGMFilterPruner``) trace the
model and group only 4-D (``Conv2D``) weights. The student's inverted-residual blocks hold
``Conv1D`` weights (3-D) and run their 1x1 convolutions as matmuls (see
:class:`paddleqa.models.mobile.InvertedResidual1D`), so on the student itself the pruners find no
prunable group at all (``docs/paddleslim.md`` has the snippet and what it printed). The view
holds copies of the blocks' weights as ``Conv2D`` layers over ``[batch, channels, 1, seq]`` --
1x1 expansion, 1 x k depthwise, 1x1 projection, residual add: the same coupling of channels as
the student -- so PaddleSlim's graph analysis, its L1/FPGM criteria, its sensitivity loop and its
pruning plans (which also fix the depthwise ``groups``) work on it unchanged. Only this adapter
is written here; :func:`from_view` turns the (pruned) view back into an ordinary, narrower
student with its per-block widths in ``config.block_channels``.
"""
from __future__ import annotations

import copy

import paddle.nn as nn
import paddle.nn.functional as F

from .mobile import MobileQAForQuestionAnswering

PARTS = ("expand", "depthwise", "project")


class _BlockView(nn.Layer):
    """One inverted-residual block as Conv2D layers (no mask, norm or dropout: the view carries
    weights and channel coupling; scores always come from the real student, see ``from_view``)."""

    def __init__(self, block, act):
        super().__init__()
        inner, hidden, _ = block.expand.weight.shape
        k = block.depthwise.weight.shape[-1]
        self.expand = nn.Conv2D(hidden, inner, 1)
        self.depthwise = nn.Conv2D(inner, inner, (1, k), padding=(0, k // 2), groups=inner)
        self.project = nn.Conv2D(inner, hidden, 1)
        self.act = act
        for name in PARTS:
            src, dst = getattr(block, name), getattr(self, name)
            dst.weight.set_value(src.weight.numpy().reshape(dst.weight.shape))
            dst.bias.set_value(src.bias.numpy())

    def forward(self, x):
        h = self.act(self.depthwise(self.act(self.expand(x))))
        return x + self.project(h)


class ConvView(nn.Layer):
    """The student's conv stack as Conv2D blocks; input ``[batch, hidden, 1, seq]``."""

    def __init__(self, model: MobileQAForQuestionAnswering):
        super().__init__()
        act = getattr(F, model.config.hidden_act)
        self.blocks = nn.LayerList([_BlockView(b, act) for b in model.mobile.blocks])

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return x

    def input_shape(self, seq_len: int) -> list[int]:
        """The dummy input PaddleSlim traces the view with."""
        return [1, self.blocks[0].expand.weight.shape[1], 1, seq_len]

    def master_names(self) -> list[str]:
        """Each block's expansion weight: pruning its filters (axis 0) narrows the block."""
        return [b.expand.weight.name for b in self.blocks]


def from_view(model: MobileQAForQuestionAnswering, view: ConvView) -> MobileQAForQuestionAnswering:
    """A new student: ``model``'s weights, with each conv block as wide as (and holding the
    weights of) the view's. ``model`` itself is not changed."""
    config = copy.deepcopy(model.config)
    config.block_channels = [int(b.expand.weight.shape[0]) for b in view.blocks]
    student = MobileQAForQuestionAnswering(config)
    state = dict(model.state_dict())
    for i, block in enumerate(view.blocks):
        for name in PARTS:
            conv, dst = getattr(block, name), getattr(student.mobile.blocks[i], name)
            state[f"mobile.blocks.{i}.{name}.weight"] = conv.weight.numpy().reshape(dst.weight.shape)
            state[f"mobile.blocks.{i}.{name}.bias"] = conv.bias.numpy()
    student.set_state_dict(state)
    if not model.training:
        student.eval()
    return student
