"""Settings several stage configs share, each declared once with its default and help.

These are the knobs of windowing, post-processing and the inference runtime: how long a context
may be, how many candidate spans are kept and how long an answer may be, where features are
cached and whether progress bars show, how many CPU threads a predictor uses and which ops run in
int8. :class:`InferenceSettings` holds all of them; the smaller groups it is made of exist because
not every stage takes every knob.

A stage config takes the groups it uses by dataclass *inheritance*, not as a nested
``inference:`` section. The fields stay flat, so every existing pipeline YAML, ``manifest.json``
and ``resolved_config.yaml`` keeps its keys, and every finished run folder stays up to date (a
nested dataclass would move the keys under a new one and make every recorded config differ). A
config inherits only the groups whose fields it already had, so none gains a key; where a class
needs another default it redeclares the field, with a comment, and keeps the help from here.
Inherited fields come first in a config's field order (and so in ``resolved_config.yaml``).
"""
from __future__ import annotations

import dataclasses

from .config import opt


@dataclasses.dataclass
class ContextLimit:
    """The longest context a stage reads."""

    max_context_chars: int = opt(5000, help="longest context in characters; longer ones are dropped "
                                 "with a message (serve: refused)")


@dataclasses.dataclass
class AnswerSettings(ContextLimit):
    """Post-processing: from window logits to one answer span per question."""

    n_best: int = opt(20, help="candidate starts/ends per window and spans kept per question")
    max_answer_length: int = opt(64, help="longest answer in tokens at prediction time "
                                 "(CMRC dev: 99.6% <= 64 chars)")


@dataclasses.dataclass
class FeatureSettings:
    """How windows are built for a run: the on-disk feature cache and progress display."""

    cache_dir: str = opt("", help="feature cache folder; '' = ~/.cache/paddleqa (PADDLEQA_CACHE)")
    progress: bool = opt(True, help="show progress bars")


@dataclasses.dataclass
class ThreadSettings:
    """CPU threads of one Paddle Inference predictor."""

    threads: int = opt(0, help="CPU threads per predictor (Paddle Inference; 0 = OMP_NUM_THREADS)")


@dataclasses.dataclass
class Int8Settings:
    """Which ops of a quantized graph Paddle Inference executes in int8."""

    int8_ops: list[str] = opt(factory=lambda: ["fc"], help="ops Paddle Inference runs in int8 "
                              "(MKLDNN) for a quantized model; the rest runs fp32; \"all\" = every "
                              "op MKLDNN supports")


# Bases listed last-first: dataclass fields follow the reversed MRO, so the fields come out as
# context, answer, feature, threads, int8.
@dataclasses.dataclass
class InferenceSettings(Int8Settings, ThreadSettings, FeatureSettings, AnswerSettings):
    """Every shared inference knob: what ``paddleqa evaluate`` takes."""


SHARED_FIELDS = frozenset(f.name for f in dataclasses.fields(InferenceSettings))
