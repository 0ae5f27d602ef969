"""The training sets a run reads: several training files merged, and a validation split by context.

Model selection (sweeps, early stopping, every default chosen) is done on a *validation* split
carved from the training data, never on the dev set that is reported: a recipe tuned to dev
looks better on dev than on held-out data nobody here has.

The split is by **context**: every question about one passage lands on the same side, so the
validation score measures reading unseen passages (questions about one passage share most of
their answers' surroundings). A context goes to validation when a hash of its text (salted with
``seed``) falls below ``share`` of the hash range. That choice depends on the passage alone: the
same passages are held out whatever else is in the file, so adding DRCD to the training files, or
editing other articles, leaves the validation set as it was.

Only the primary training file is split; extra training files (``data.train_files``: another
dataset, possibly in another register) go wholly to training, so validation measures the task the
run is reported on.
"""
from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any

from ..core.errors import DataError
from ..core.io import write_json
from .dataset import QAExample, load_examples, to_squad_json


def held_out(context: str, share: float, seed: int) -> bool:
    """True when this passage belongs to the validation split (a pure function of its text)."""
    digest = hashlib.sha256(f"{seed}\x00{context}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") < share * 2 ** 64


def split_by_context(examples: list[QAExample], share: float, seed: int
                     ) -> tuple[list[QAExample], list[QAExample]]:
    """(training, validation) questions; every question of one context on the same side."""
    train, validation = [], []
    for ex in examples:
        (validation if held_out(ex.context, share, seed) else train).append(ex)
    return train, validation


def _summary(report) -> dict[str, Any]:
    summary = report.summary()
    summary.pop("findings")
    return summary


def _unique_ids(groups: list[tuple[str, list[QAExample]]]) -> tuple[list[QAExample], int]:
    """The examples of all groups in order; a question id an earlier group already used is
    prefixed with its file's name (``drcd_dev:1001-1``). Returns them and the count renamed."""
    merged: list[QAExample] = []
    seen: set[str] = set()
    renamed = 0
    for i, (stem, examples) in enumerate(groups):
        for ex in examples:
            qid = ex.qid
            for candidate in (qid, f"{stem}:{qid}", f"{i}:{stem}:{qid}"):
                if candidate not in seen:
                    break
            renamed += candidate != qid
            seen.add(candidate)
            merged.append(dataclasses.replace(ex, qid=candidate, context_id=f"{i}:{ex.context_id}"))
    return merged, renamed


def build_training_sets(paths: list[str], train_out: str | Path, validation_out: str | Path | None,
                        *, share: float = 0.0, seed: int = 0, max_context_chars: int = 5000
                        ) -> dict[str, Any]:
    """Load every training file, carve ``share`` of the first file's contexts into
    ``validation_out`` (when given) and write the rest, merged with the other files, to
    ``train_out``. Returns the load summaries and the counts on each side."""
    groups, summaries = [], {}
    validation: list[QAExample] = []
    for i, path in enumerate(paths):
        examples, report = load_examples(path, mode="train", max_context_chars=max_context_chars)
        summaries[str(path)] = _summary(report)
        if i == 0 and validation_out is not None:
            examples, validation = split_by_context(examples, share, seed)
        groups.append((Path(path).stem, examples))
    if validation_out is not None and not validation:
        n_contexts = len({ex.context for _, g in groups[:1] for ex in g})
        raise DataError(paths[0], f"data.validation_share {share} held out none of its {n_contexts} "
                        "contexts", fix="raise data.validation_share, or set it to 0 to choose "
                        "settings on the dev file instead (not recommended)")
    merged, renamed = _unique_ids(groups)
    write_json(train_out, to_squad_json(merged))
    result: dict[str, Any] = {"files": summaries, "questions": len(merged), "ids_prefixed": renamed}
    if validation_out is not None:
        write_json(validation_out, to_squad_json(validation))
        result["validation"] = {
            "share": share, "seed": seed, "split_from": str(paths[0]),
            "questions": len(validation), "contexts": len({ex.context for ex in validation}),
            "training_contexts": len({ex.context for _, g in groups for ex in g}),
        }
    return result
