"""The data stage: check the run's files, merge the training files, carve the validation split.

Its config is the pipeline YAML's ``data`` section. ``run`` loads (and so validates) every file,
records their summaries as its metrics, and -- with ``train_files`` or a validation split --
writes the training file every training stage reads (``RUN_DIR/data/train.json``) and the
split (``RUN_DIR/data/validation.json``, see :mod:`paddleqa.text.splits`).
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from ..core.config import opt, to_dict
from ..core.manifest import write_manifest
from ..core.settings import ContextLimit
from ..runtime.layout import DEFAULT_FOLDERS, MERGED_TRAIN, VALIDATION
from ..text import simplify
from ..text.dataset import load_examples
from ..text.splits import build_training_sets

log = logging.getLogger(__name__)


@dataclasses.dataclass
class DataConfig(ContextLimit):
    """Where the data comes from (paths may use ${VAR:-default})."""

    train_file: str = opt("", help="SQuAD/CMRC training JSON")
    dev_file: str = opt("", help="SQuAD/CMRC dev JSON")
    train_files: list[str] = opt(factory=list, help="more training files (e.g. DRCD after `paddleqa "
                                 "data simplify`): the data stage merges them with train_file into "
                                 "RUN_DIR/data/train.json, which every training stage then reads")
    traditional_files: list[str] = opt(factory=list, help="Traditional-Chinese training files (e.g. "
                                       "DRCD's JSON as shipped): converted with OpenCC (data.opencc, as "
                                       "`paddleqa data simplify` does) into RUN_DIR/data/simplified/, "
                                       "then merged like train_files")
    opencc: str = opt("t2s", help="OpenCC conversion of traditional_files: "
                      + ", ".join(simplify.OPENCC_CONFIGS))
    validation_share: float = opt(0.05, help="share of train_file's contexts held out as the "
                                  "validation split (RUN_DIR/data/validation.json): learning curves "
                                  "and every setting are chosen on it, never on dev (0 = no split)")
    validation_seed: int = opt(0, help="salt of the split (a context's side depends only on its "
                               "text and this)")
    validation_file: str = opt("", help="a validation file of your own instead of the split")
    # max_context_chars: inherited from ContextLimit (core/settings.py)

    def __post_init__(self) -> None:
        if not self.train_file or not self.dev_file:
            raise ValueError("data.train_file and data.dev_file are required")
        if not 0 <= self.validation_share < 0.5:
            raise ValueError(f"data.validation_share must be in [0, 0.5), got {self.validation_share}")
        if self.opencc not in simplify.OPENCC_CONFIGS:
            raise ValueError(f"unknown data.opencc {self.opencc!r}; valid: "
                             f"{', '.join(simplify.OPENCC_CONFIGS)}")
        names = [Path(f).name for f in self.traditional_files]
        if len(set(names)) != len(names):
            raise ValueError(f"data.traditional_files: two files share a name ({', '.join(names)}); each is "
                             "converted to RUN_DIR/data/simplified/NAME, so rename one")

    @property
    def carves_validation(self) -> bool:
        return self.validation_share > 0 and not self.validation_file

    @property
    def writes_training_file(self) -> bool:
        """True when the data stage writes the training file (a split or extra files)."""
        return bool(self.train_files or self.traditional_files) or self.carves_validation

    def training_file(self, root: Path) -> str:
        """The file the training stages read: train_file, or what the data stage wrote from it
        (train_file less the validation split, merged with train_files and the converted
        traditional_files)."""
        if not self.writes_training_file:
            return self.train_file
        return str(root / DEFAULT_FOLDERS["data"] / MERGED_TRAIN)

    def validation_path(self, root: Path) -> str:
        """The validation file the training stages choose settings on ('' = none)."""
        if self.carves_validation:
            return str(root / DEFAULT_FOLDERS["data"] / VALIDATION)
        return self.validation_file


def run(data: DataConfig, root: Path, out_dir: Path, inputs: dict[str, str]) -> dict:
    """The data stage: load (and so validate) the files; their summaries are its metrics. With
    ``data.train_files`` or a validation split, it writes the training file the training stages
    read (``out_dir/train.json``) and the split (``out_dir/validation.json``)."""
    metrics, outputs = {}, {}
    every = [data.train_file, *data.train_files, *data.traditional_files]
    if any(Path(f).resolve() == Path(data.dev_file).resolve() for f in every):
        log.warning("the dev file %s is also a training file: its scores say nothing about unseen "
                    "questions", data.dev_file)
    checks = [("dev", data.dev_file, "eval")]
    if not data.writes_training_file:  # else building the training sets loads (checks) it
        checks.insert(0, ("train", data.train_file, "train"))
    if data.validation_file:
        checks.append(("validation", data.validation_file, "eval"))
    for name, path, mode in checks:
        _, report = load_examples(path, mode=mode, max_context_chars=data.max_context_chars)
        summary = report.summary()
        summary.pop("findings")
        metrics[name] = summary
    if data.writes_training_file:
        training = Path(data.training_file(root))
        validation = Path(data.validation_path(root)) if data.carves_validation else None
        converted = _simplified(data, out_dir, metrics)
        built = build_training_sets([data.train_file, *data.train_files, *converted], training, validation,
                                    share=data.validation_share, seed=data.validation_seed,
                                    max_context_chars=data.max_context_chars)
        metrics = {"train": built["files"][str(data.train_file)], **metrics}
        if converted:
            outputs.update({f"simplified_{i}": Path(f) for i, f in enumerate(converted)})
        metrics["merged_train"] = {k: v for k, v in built.items() if k != "validation"}
        outputs["merged_train"] = training
        if validation is not None:
            metrics["validation"] = built["validation"]
            outputs["validation"] = validation
            log.info("validation split: %d questions on %d contexts held out of %s",
                     built["validation"]["questions"], built["validation"]["contexts"], data.train_file)
    write_manifest(out_dir, "data", to_dict(data), inputs, outputs, metrics)
    return metrics


def _simplified(data: DataConfig, out_dir: Path, metrics: dict) -> list[str]:
    """``data.traditional_files`` converted to Simplified Chinese (``paddleqa data simplify``'s
    conversion) under ``out_dir/simplified/``; each file's counts (answers kept, offsets
    recomputed, dropped) go into ``metrics["simplified"]``."""
    if not data.traditional_files:
        return []
    out, counts = [], {}
    for src in data.traditional_files:
        target = out_dir / "simplified" / Path(src).name
        counts[str(src)] = simplify.run(simplify.SimplifyConfig(input_file=src, output_file=str(target),
                                                                opencc=data.opencc))
        out.append(str(target))
    metrics["simplified"] = counts
    return out
