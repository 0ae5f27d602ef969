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

    cache_dir: str = opt("", help="feature cache folder; '' = ~/.cache/paddleqa (PADDLEQA_CACHE)",
                         result=False)
    progress: bool = opt(True, help="show progress bars", result=False)


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


@dataclasses.dataclass
class ScheduleSettings:
    """The Trainer schedule of every training stage (``stages.trainer.training_arguments`` turns it
    into PaddleNLP's TrainingArguments): pretrain, finetune, distill, prune."""

    epochs: float = opt(2.0, help="training epochs (ignored when max_steps > 0)")
    max_steps: int = opt(-1, help="stop after this many optimizer steps (-1 = use epochs)")
    batch_size: int = opt(16, help="windows per optimizer step (per process)")
    learning_rate: float = opt(5e-5, help="peak learning rate (linear warm-up and decay)")
    warmup_ratio: float = opt(0.1, help="fraction of steps spent warming up")
    weight_decay: float = opt(0.01, help="AdamW weight decay")
    seed: int = opt(42, help="seed for paddle, numpy and random")
    logging_steps: int = opt(20, help="log the training loss every N steps", result=False)
    save_steps: int = opt(200, help="checkpoint every N steps (resume point)")
    save_total_limit: int = opt(2, help="checkpoints kept")
    device: str = opt("cpu", help="cpu or gpu (a CUDA build of paddlepaddle is needed for gpu)",
                      result=False)

    def __post_init__(self) -> None:
        if self.device not in ("cpu", "gpu"):
            raise ValueError(f"device must be 'cpu' or 'gpu', got {self.device!r}")
        if self.max_steps == 0 or self.max_steps < -1:
            raise ValueError(f"max_steps must be -1 (use epochs) or > 0, got {self.max_steps}")
        if self.max_steps == -1 and self.epochs <= 0:
            raise ValueError(f"epochs must be > 0, got {self.epochs}")
        for name in ("batch_size", "logging_steps", "save_steps", "save_total_limit"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 < self.learning_rate < 1:
            raise ValueError(f"learning_rate must be in (0, 1), got {self.learning_rate}")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")


# Bases listed last-first: dataclass fields follow the reversed MRO, so the fields come out as
# context, answer, feature, threads, int8.
@dataclasses.dataclass
class InferenceSettings(Int8Settings, ThreadSettings, FeatureSettings, AnswerSettings):
    """Every shared inference knob: what ``paddleqa evaluate`` takes."""


SHARED_FIELDS = frozenset(f.name for f in dataclasses.fields(InferenceSettings))
