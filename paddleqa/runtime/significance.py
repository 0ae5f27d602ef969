"""How sure the run report's scores are: intervals per row and each student against its teacher.

Every scored row of the report has a predictions file (the evaluate stage's, a training stage's
``dev_predictions.json``, the quantize stage's or the bench stage's). From those and the dev
file this adds ``dev_em_ci95``, ``dev_f1_ci95`` and ``f1_retention_ci95`` (the retention
resampled together with the teacher on the same questions) to the rows, and writes a
``paddleqa compare`` page for each distinct student against the teacher.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path

from ..core.io import atomic_write_text, write_json
from ..core.stats import DEFAULT_RESAMPLES, DEFAULT_SEED, bootstrap_ci, ratio_ci
from ..text.dataset import gold_questions
from .compare import compare, per_question, read_predictions, to_html, to_markdown

log = logging.getLogger(__name__)


def add_intervals(rows: list[dict], gold_file: str | Path, *, resamples: int = DEFAULT_RESAMPLES,
                  seed: int = DEFAULT_SEED) -> None:
    """``dev_em_ci95``, ``dev_f1_ci95`` and ``f1_retention_ci95`` for every row with a
    ``predictions`` file; the first row is the teacher."""
    gold = gold_questions(gold_file)
    per_row: dict[str, tuple[list[float], list[float]]] = {}
    for r in rows:
        if r.get("predictions"):
            rows_q = per_question(gold, read_predictions(r["predictions"]))
            per_row[r["name"]] = ([q["em"] for q in rows_q], [q["f1"] for q in rows_q])
    teacher = per_row.get(rows[0]["name"]) if rows else None
    for r in rows:
        em, f1 = per_row.get(r["name"], (None, None))
        r["dev_em_ci95"] = bootstrap_ci(em, resamples=resamples, seed=seed) if em else None
        r["dev_f1_ci95"] = bootstrap_ci(f1, resamples=resamples, seed=seed) if f1 else None
        r["f1_retention_ci95"] = (ratio_ci(f1, teacher[1], resamples=resamples, seed=seed)
                                  if f1 and teacher else None)


def _digest(preds: dict[str, str]) -> str:
    """The same answers to the same questions, however the file orders them."""
    return hashlib.sha256(json.dumps(preds, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()


def compare_students(rows: list[dict], gold_file: str | Path, out: Path, *,
                     resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED) -> list[dict]:
    """A comparison page (``out/compare-NAME/``) for each scored row against the teacher (the
    first row); rows whose answers are identical to ones already compared (an export of the same
    graph) are not compared again. Returns one summary per comparison."""
    if not rows or not rows[0].get("predictions"):
        return []
    gold = gold_questions(gold_file)
    teacher = rows[0]
    t_preds = read_predictions(teacher["predictions"])
    seen: set[str] = set()  # a student answering exactly as the teacher still gets its page
    summaries = []
    for r in rows[1:]:
        if not r.get("predictions"):
            continue
        preds = read_predictions(r["predictions"])
        if _digest(preds) in seen:
            continue
        seen.add(_digest(preds))
        result = compare(gold, t_preds, preds, resamples=resamples, seed=seed)
        result["names"] = {"a": teacher["name"], "b": r["name"]}
        folder = out / ("compare-" + re.sub(r"[^\w.-]+", "_", r["name"]).strip("_"))
        md = to_markdown(result, teacher["name"], r["name"])
        write_json(folder / "compare.json", result)
        atomic_write_text(folder / "compare.md", md)
        atomic_write_text(folder / "compare.html", to_html(md, f"{teacher['name']} vs {r['name']}"))
        summaries.append({"name": r["name"], "page": f"{folder.name}/compare.html",
                          "f1_delta": result["f1_delta"], "em_delta": result["em_delta"],
                          "agreement": result["agreement"]})
    log.info("teacher-vs-student comparisons: %d written under %s", len(summaries), out)
    return summaries
