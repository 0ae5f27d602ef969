"""Knowledge distillation: a fine-tuned teacher -> a smaller student, through PaddleNLP's Trainer.

The student learns from the gold spans and from the teacher's start/end distributions,

    L = alpha * CE(student, gold) + (1 - alpha) * prediction_loss(student, teacher; T)
        + hidden_weight * hidden_mse + attention_weight * attention_mse,

the intermediate terms given either by those two weights and ``layer_map`` or as data
(``intermediate``: feature, loss, layer pairs, weight, projection), the losses taken by name
from :mod:`paddleqa.models.losses` and the objective run by
:class:`paddleqa.models.distiller.Distiller`. The teacher runs in eval mode without
gradients on the same (clean) windows; the student may see Gaussian noise on its input word
embeddings (``noise_prob``, ``noise_std``), the answer-side augmentation of the design. Windows,
tokenizer and feature settings are the teacher's, read from its training record, so the student
is scored and exported exactly like the teacher.

Students come from a small registry (:data:`paddleqa.models.students.STUDENTS`): ``ernie``, a
smaller ERNIE initialised from the teacher where shapes allow, or ``mobilenet``, the conv +
attention student.
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Callable

from ..core.config import opt
from ..core.errors import ConfigError
from ..models.build import count_params, load_model
from ..models.flops import flops_per_query
from ..models.students import STUDENTS
from ..models.tables import parse_std, table_file
from ..text.features import feature_params_for
from ..text.tokenizer import load_tokenizer
from .training import Recipe, TrainSettings, provenance, start_embeddings, train

log = logging.getLogger(__name__)


@dataclasses.dataclass
class StudentConfig:
    """The student's shape; 0 means "as the teacher"."""

    kind: str = opt("ernie", help="student family: ernie or mobilenet")
    num_layers: int = opt(0, help="transformer layers (0 = teacher's; mobilenet: 0 = one)")
    hidden_size: int = opt(0, help="hidden width (0 = teacher's)")
    num_heads: int = opt(0, help="attention heads (0 = teacher's)")
    intermediate_size: int = opt(0, help="FFN width (0 = teacher's)")
    dropout: float = opt(0.1, help="dropout on hidden states and attention")
    init: str = opt("teacher", help="teacher (copy every parameter whose shape matches) or random")
    init_layers: tuple[int, ...] = opt((), help="teacher layers (1-based) copied into student layers "
                                       "1..n; () = evenly spaced (every k-th layer)")
    conv_blocks: int = opt(4, help="mobilenet: inverted-residual conv blocks before the transformer")
    expand_ratio: int = opt(4, help="mobilenet: channel expansion inside a conv block")
    kernel_size: int = opt(5, help="mobilenet: depthwise kernel width (odd)")
    embedding_size: int = opt(0, help="mobilenet: factorised embeddings this wide, lifted to the "
                              "hidden width by one linear map (0 = no factorisation); start from "
                              "the teacher's by truncated SVD")
    embeddings_from: str = opt("", help="start the (factorised) word embeddings from a trained "
                               "table instead of the teacher's: jieba-lac, lac-char, lac-word or a "
                               "table file (as finetune.arch.embeddings_from); '' = the teacher's")
    embeddings_std: str = opt("unit", help="scale of the table rows (as finetune.arch.embeddings_std)")

    def __post_init__(self) -> None:
        if self.kind not in STUDENTS:
            raise ValueError(f"unknown student kind {self.kind!r}; valid: {', '.join(STUDENTS)}")
        if self.init not in ("teacher", "random"):
            raise ValueError(f"init must be 'teacher' or 'random', got {self.init!r}")
        for name in ("num_layers", "hidden_size", "num_heads", "intermediate_size"):
            if getattr(self, name) < 0:
                raise ValueError(f"student.{name} must be >= 0 (0 = as the teacher)")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"student.dropout must be in [0, 1), got {self.dropout}")
        if self.conv_blocks < 0 or self.expand_ratio < 1 or self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError("student.conv_blocks must be >= 0, expand_ratio >= 1 and kernel_size odd")
        if self.embedding_size < 0:
            raise ValueError(f"student.embedding_size must be >= 0, got {self.embedding_size}")
        if self.embedding_size and self.kind != "mobilenet":
            raise ValueError("student.embedding_size (factorised embeddings) is for kind: mobilenet")
        parse_std(self.embeddings_std)
        if self.init_layers and self.kind != "ernie":
            raise ValueError("student.init_layers applies to ernie students only")
        if self.init_layers and len(self.init_layers) != self.num_layers:
            raise ValueError(f"student.init_layers names {len(self.init_layers)} teacher layers for "
                             f"{self.num_layers} student layers; give one per student layer")


def parse_pairs(items, where: str, lowest: int = 1) -> list[tuple[int, int]]:
    """``['1:2', '2:4']`` -> ``[(1, 2), (2, 4)]``; layers count from ``lowest``."""
    out = []
    for item in items:
        try:
            s, t = (int(x) for x in str(item).split(":"))
        except ValueError:
            raise ValueError(f"{where} entry {item!r} must look like 'student:teacher', "
                             "e.g. '2:4'") from None
        if s < lowest or t < lowest:
            raise ValueError(f"{where} entry {item!r}: layers count from {lowest}")
        out.append((s, t))
    return out


@dataclasses.dataclass
class IntermediateTerm:
    """One intermediate term of the distillation objective, as data (TextBrewer's
    ``intermediate_matches``; see :mod:`paddleqa.models.distiller`)."""

    feature: str = opt("hidden", help="hidden (hidden states; layer 0 = the embeddings' output) or "
                       "attention (attention maps; layers from 1)")
    loss: str = opt("hidden_mse", help="loss by name: hidden_mse or attention_mse")
    layers: tuple[str, ...] = opt((), help="student:teacher layer pairs, e.g. ['0:0', '1:2']")
    weight: float = opt(1.0, help="weight of the term in the objective")
    projection: str = opt("linear", help="linear (learned maps where the student is narrower) or none")

    def __post_init__(self) -> None:
        if not self.layers:
            raise ValueError("an intermediate term needs layers: student:teacher pairs, e.g. ['1:2']")
        self.term()  # validates the names (registries), the weight and the pairs

    def term(self):
        from ..models.distiller import Term  # imports paddle: the registries live with the layer

        lowest = 0 if self.feature == "hidden" else 1
        return Term(self.feature, self.loss, tuple(parse_pairs(self.layers, "layers", lowest)),
                    self.weight, self.projection)


@dataclasses.dataclass
class KDSettings(TrainSettings):
    """Training against a teacher: what ``distill`` and ``prune`` (recovery) share."""

    teacher: str = opt("", help="teacher model folder (a finetune run's model/)")
    # Defaults from a KD sweep on the retired ERNIE teacher (dev F1 19.08; the sweep and its
    # script were removed with that teacher, see git history of benchmarks/compress.py): T 1, 2
    # and 4 at alpha 0.5 scored within 0.6 F1 of each other on 300 dev questions (less than that
    # subset's noise), while alpha 0.2 lost 1.6 F1; so alpha stays 0.5 and T the middle value.
    # Not re-measured on the current teacher.
    alpha: float = opt(0.5, help="weight of the gold-span cross-entropy; 1 - alpha goes to the "
                       "prediction loss (sweep: 0.5 beat 0.2 by 1.6 F1)")
    temperature: float = opt(2.0, help="softmax temperature of the prediction loss (sweep: 1, 2 "
                             "and 4 within 0.6 F1)")
    prediction_loss: str = opt("span_kd", help="span_kd (T^2 KL) or span_mse (logit MSE)")
    hidden_weight: float = opt(0.0, help="weight of hidden-state MSE (0 = off); the embeddings' "
                               "output and every pair of layer_map")
    attention_weight: float = opt(0.0, help="weight of attention-map MSE (0 = off) on the pairs of "
                                  "layer_map")
    layer_map: tuple[str, ...] = opt((), help="student:teacher layer pairs for intermediate losses, "
                                     "e.g. ['1:2', '2:4']; () = each student layer -> the teacher "
                                     "layer it came from")
    intermediate: list[IntermediateTerm] = opt(factory=list, help="intermediate terms as data, "
                                               "each {feature, loss, layers, weight, projection}; "
                                               "instead of hidden_weight/attention_weight/layer_map")
    noise_prob: float = opt(0.0, help="share of training windows whose student word embeddings "
                            "get Gaussian noise (epsilon)")
    noise_std: float = opt(0.0, help="standard deviation of that noise (sigma)")
    teacher_cache: bool = opt(True, help="keep the teacher's logits and compared hidden states "
                              "(float16) per training window on disk after their first use, "
                              "under cache_dir/teacher-outputs/, and read them back on later "
                              "epochs, trials and stages instead of running the teacher again")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.teacher:
            raise ValueError("teacher is required: the folder of a fine-tuned model")
        if not 0 <= self.alpha <= 1:
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        from ..models.losses import PREDICTION_LOSSES, lookup

        lookup(PREDICTION_LOSSES, self.prediction_loss, "prediction_loss")
        if self.hidden_weight < 0 or self.attention_weight < 0:
            raise ValueError("hidden_weight and attention_weight must be >= 0")
        if self.intermediate and (self.hidden_weight or self.attention_weight or self.layer_map):
            raise ValueError("give intermediate terms either as `intermediate` or through "
                             "hidden_weight/attention_weight/layer_map, not both")
        if not 0 <= self.noise_prob <= 1 or self.noise_std < 0:
            raise ValueError("noise_prob must be in [0, 1] and noise_std >= 0")
        self.pairs()  # validates layer_map

    def pairs(self) -> list[tuple[int, int]]:
        return parse_pairs(self.layer_map, "layer_map")

    def objective(self, pairs: list[tuple[int, int]]):
        """The objective (:class:`paddleqa.models.distiller.Objective`); ``pairs``: the layer map
        of hidden_weight/attention_weight (``layer_map``, or the student's default one)."""
        from ..models.distiller import Objective, Term

        terms = [t.term() for t in self.intermediate]
        if self.hidden_weight > 0:
            terms.append(Term("hidden", "hidden_mse", ((0, 0), *pairs), self.hidden_weight))
        if self.attention_weight > 0:
            terms.append(Term("attention", "attention_mse", tuple(pairs), self.attention_weight))
        return Objective(self.alpha, self.temperature, self.prediction_loss, tuple(terms),
                         self.noise_prob, self.noise_std)

    def uses_attention(self) -> bool:
        return self.attention_weight > 0 or any(t.feature == "attention" for t in self.intermediate)


@dataclasses.dataclass
class DistillConfig(KDSettings):
    """``paddleqa distill``: teacher -> student with KD and optional intermediate losses."""

    student: StudentConfig = opt(factory=StudentConfig, help="student shape and initialisation")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.student.kind == "mobilenet" and self.uses_attention():
            raise ValueError("attention terms need attention in every student layer; the "
                             "mobilenet student's conv blocks have none: set attention_weight to 0 "
                             "and leave attention out of intermediate")


# ------------------------------------------------------------------------------ the stage
def run(config: DistillConfig, *, resume: bool = False, callbacks=()) -> dict:
    """Distil ``config.teacher`` into a student; same outputs as ``finetune`` plus size ratios."""

    def make_student(teacher, extra, tokenizer, params, data):
        spec = config.student
        student, layers = STUDENTS[spec.kind](teacher, spec)
        info = {"student_layers_from_teacher": layers}
        report = start_embeddings(student, spec.embeddings_from, spec.embeddings_std, tokenizer,
                                  data.train_feats["input_ids"], config.seed)
        if report:
            extra["student_embeddings_from"] = report
            info["embeddings_from"] = provenance(report)
        return student, layers, info

    return kd_run(config, "distill", make_student, resume=resume, callbacks=callbacks,
                  inputs=table_file(config.student.embeddings_from))


def kd_run(config: KDSettings, stage: str, make_student: Callable, *, resume: bool = False,
           callbacks=(), inputs: dict[str, str] | None = None) -> dict:
    """Train a student against ``config.teacher`` through the shared Trainer loop.

    ``make_student(teacher, metrics, tokenizer, feature_params, data)`` (data: the run's
    :class:`~.training.TrainingData`) returns ``(student, layers,
    info)``: the student, the teacher layer (1-based) behind each student layer (the default
    layer map) and fields for the training record; it may add entries to ``metrics``
    (before/after measurements). ``inputs``: more model folders the result depends on (hashed
    into the manifest, e.g. the student that prune narrows).
    """

    if not Path(config.teacher).is_dir():
        raise ConfigError(f"teacher folder {config.teacher} does not exist: fine-tune one first "
                          f"(`paddleqa finetune`) or point {stage}.teacher at a model folder")
    tokenizer = load_tokenizer(config.teacher)
    params = feature_params_for(config.teacher)
    info: dict[str, Any] = {"teacher": config.teacher}
    extra: dict[str, Any] = {}

    def build(data):
        teacher = load_model(config.teacher)
        teacher.eval()
        student, layers, student_info = make_student(teacher, extra, tokenizer, params, data)
        pairs = config.pairs() or [(i + 1, t) for i, t in enumerate(layers)]
        objective = config.objective(pairs)
        n_s, n_t = student.config.num_hidden_layers, teacher.config.num_hidden_layers
        bad = [p for p in pairs + [p for t in objective.terms for p in t.pairs]
               if p[0] > n_s or p[1] > n_t]
        if bad:
            raise ConfigError(f"layer_map {bad}: the student has layers 1..{n_s}, the teacher 1..{n_t}")
        t_sizes, s_sizes = count_params(teacher), count_params(student)
        info.update(student_info, layer_map=[f"{s}:{t}" for s, t in pairs])
        extra.update(teacher_params=t_sizes["params"],
                     teacher_non_embedding_params=t_sizes["non_embedding_params"],
                     teacher_flops_per_query=flops_per_query(teacher.config, params.max_seq_len),
                     non_embedding_ratio=round(s_sizes["non_embedding_params"]
                                               / max(t_sizes["non_embedding_params"], 1), 4),
                     **_teacher_dev_scores(config))
        log.info("student: %s params (%s non-embedding, %.1f%% of the teacher's)",
                 f"{s_sizes['params']:,}", f"{s_sizes['non_embedding_params']:,}",
                 100 * extra["non_embedding_ratio"])
        from ..models.distiller import Distiller  # imports paddle: deferred to training time

        cache = _teacher_cache(config, objective, data.train_feats, teacher.config.hidden_size)
        if cache is not None:
            extra["teacher_cache"] = cache.stats  # counted during training (rank 0's batches)
        return Distiller(student, teacher, objective, cache), student

    recipe = Recipe(stage, tokenizer, params, build,
                    inputs={"teacher": config.teacher, **(inputs or {})},
                    info=info, metrics=extra)
    return train(config, recipe, resume=resume, callbacks=callbacks)


def _teacher_cache(config: KDSettings, objective, feats, hidden_size: int):
    """The teacher cache for this run (:mod:`paddleqa.models.teachercache`), or None: off in the
    config, nothing of the teacher is read (labels only), or an attention term (not cached)."""
    if not (config.teacher_cache and objective.reads_teacher):
        return None
    if any(t.feature != "hidden" and t.weight > 0 for t in objective.terms):
        log.info("teacher cache off: attention maps are not cached; the teacher runs live")
        return None
    from ..models.teachercache import open_cache
    from ..text.features import default_cache_dir

    layers = {t for term in objective.terms if term.weight > 0 for _, t in term.pairs}
    root = (Path(config.cache_dir) if config.cache_dir else default_cache_dir()) / "teacher-outputs"
    return open_cache(root, config.teacher, feats, layers, hidden_size)


def _teacher_dev_scores(config: KDSettings) -> dict[str, float]:
    """The teacher's EM/F1 from its finetune run on the files this run scores too (dev and the
    validation split): ``teacher_dev_f1``, ``teacher_validation_f1``..."""
    import json

    run_metrics = Path(config.teacher).parent / "metrics.json"
    run_config = Path(config.teacher).parent / "manifest.json"
    try:
        m = json.loads(run_metrics.read_text(encoding="utf-8"))
        teacher_config = json.loads(run_config.read_text(encoding="utf-8"))["config"]
    except (OSError, ValueError, KeyError):
        return {}
    scores = {}
    for name in ("dev", "validation"):
        mine = getattr(config, f"{name}_file")
        if mine and teacher_config.get(f"{name}_file") == mine and f"{name}_f1" in m:
            scores.update({f"teacher_{name}_em": m[f"{name}_em"], f"teacher_{name}_f1": m[f"{name}_f1"]})
    return scores
