"""``paddleqa data simplify``: a Traditional-Chinese SQuAD file (DRCD) as Simplified training data.

Contexts, questions, titles and answers are converted with OpenCC. ``t2s`` converts character by
character, so every answer keeps its offset; ``tw2sp`` also converts Taiwan phrasing to mainland
words (軟體 -> 软件, 計程車 -> 出租车) and can change lengths, so each answer's offset is
recomputed: the converted prefix before the answer gives its new start, and when a phrase spans
the answer's edge (and the converted answer is not there) the nearest occurrence of the converted
answer in the converted context is taken. An answer that cannot be found is dropped, a question
left without answers too; all of it is counted and reported, and the output passes
``paddleqa data check``. The input is never modified.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any, Callable

from ..core.config import opt, to_dict
from ..core.errors import PaddleQAError
from ..core.io import read_json, write_json
from ..core.manifest import write_manifest

log = logging.getLogger(__name__)

OPENCC_CONFIGS = {"t2s": "character by character: every offset is kept",
                  "tw2sp": "Taiwan phrasing to mainland words: offsets are recomputed",
                  "tw2s": "Taiwan characters to Simplified, character by character",
                  "hk2s": "Hong Kong characters to Simplified, character by character"}


@dataclasses.dataclass
class SimplifyConfig:
    """Convert a Traditional-Chinese SQuAD/CMRC file to Simplified Chinese with OpenCC."""

    input_file: str = opt("", help="Traditional-Chinese SQuAD/CMRC JSON (e.g. DRCD); never modified")
    output_file: str = opt("", help="Simplified JSON to write; OUT.metrics.json and OUT.manifest.json "
                           "go beside it")
    opencc: str = opt("t2s", help="OpenCC conversion: " + "; ".join(f"{k} ({v})" for k, v in
                                                                   OPENCC_CONFIGS.items()))
    max_search_chars: int = opt(64, help="how far from the mapped offset a converted answer is "
                                "looked for when a phrase spans its edge")

    def __post_init__(self) -> None:
        if not self.input_file or not self.output_file:
            raise ValueError("input_file and output_file are required")
        if Path(self.input_file).resolve() == Path(self.output_file).resolve():
            raise ValueError("output_file must differ from input_file: the input is never modified")
        if self.opencc not in OPENCC_CONFIGS:
            raise ValueError(f"unknown opencc {self.opencc!r}; valid: {', '.join(OPENCC_CONFIGS)}")
        if self.max_search_chars < 0:
            raise ValueError(f"max_search_chars must be >= 0, got {self.max_search_chars}")


def converter(name: str) -> Callable[[str], str]:
    try:
        import opencc  # the OpenCC library: loaded only by this stage
    except ImportError:
        raise PaddleQAError("data simplify needs OpenCC: pip install -c constraints.txt opencc") from None
    return opencc.OpenCC(f"{name}.json").convert


def locate(context: str, text: str, start: int, search: int) -> tuple[int | None, bool]:
    """Where the converted answer ``text`` sits in the converted ``context``: at ``start`` (the
    original offset mapped through the converted prefix), else at the nearest occurrence within
    ``search`` characters of it. Returns (offset or None, whether it had to be searched for)."""
    if context[start: start + len(text)] == text:
        return start, False
    hits = [i for i in range(max(0, start - search), min(len(context), start + search + 1))
            if context.startswith(text, i)]
    if hits:
        return min(hits, key=lambda i: abs(i - start)), True
    return None, False


def _convert_qa(qa: dict, ctx_src: str, ctx: str, convert, search: int, counts: dict) -> dict | None:
    answers = []
    for ans in qa.get("answers") or []:
        text, start = ans.get("text"), ans.get("answer_start")
        if not isinstance(text, str) or not isinstance(start, int) or start < 0:
            counts["answers_dropped"] += 1
            continue
        new_text = convert(text)
        mapped = len(convert(ctx_src[:start])) if start else 0
        pos, moved = locate(ctx, new_text, mapped, search)
        if pos is None:
            counts["answers_dropped"] += 1
            log.warning("question %s: answer %r not found in the converted context; dropped", qa.get("id"), new_text)
            continue
        counts["offsets_recomputed"] += pos != start
        counts["answers_moved_by_phrases"] += moved
        answers.append({**ans, "text": new_text, "answer_start": pos})
    if not answers:
        counts["questions_dropped"] += 1
        return None
    counts["answers"] += len(answers)
    return {**qa, "question": convert(qa.get("question") or ""), "answers": answers}


def convert_document(doc: dict[str, Any], convert: Callable[[str], str], *, search: int = 64) -> tuple[dict, dict]:
    """The converted document and the counts of what happened to its answers and questions."""
    counts = dict.fromkeys(("questions", "answers", "offsets_recomputed", "answers_moved_by_phrases",
                            "answers_dropped", "questions_dropped", "paragraphs"), 0)
    articles = []
    for art in doc.get("data") or []:
        paras = []
        for para in (art.get("paragraphs") or []) if isinstance(art, dict) else []:
            ctx_src = para.get("context") if isinstance(para, dict) else None
            if not isinstance(ctx_src, str):
                continue  # left for `data check` to report; nothing to convert
            ctx = convert(ctx_src)
            qas = []
            for qa in para.get("qas") or []:
                counts["questions"] += 1
                out = _convert_qa(qa, ctx_src, ctx, convert, search, counts) if isinstance(qa, dict) else None
                if out is not None:
                    qas.append(out)
            counts["paragraphs"] += 1
            paras.append({**para, "context": ctx, "qas": qas})
        articles.append({**art, "title": convert(art.get("title") or ""), "paragraphs": paras})
    return {**doc, "data": articles}, counts


def run(config: SimplifyConfig) -> dict:
    """Convert the file; writes the output, its metrics and manifest; returns the metrics."""
    started = time.time()
    doc, _ = read_json(config.input_file, fix="pass a SQuAD/CMRC JSON file (DRCD: see ../shared/data/drcd)")
    if not isinstance(doc, dict) or not isinstance(doc.get("data"), list):
        raise PaddleQAError(f"{config.input_file}: expected a SQuAD/CMRC document with a 'data' list")
    out_doc, counts = convert_document(doc, converter(config.opencc), search=config.max_search_chars)
    out = Path(config.output_file)
    write_json(out, out_doc)
    metrics = {"opencc": config.opencc, **counts}
    prefix = out.name[: -len(".json")] + "." if out.name.endswith(".json") else out.name + "."
    write_manifest(out.parent, "simplify", to_dict(config), {"input_file": config.input_file},
                   {"output_file": out}, metrics, started=started, prefix=prefix)
    log.info("%s -> %s (%s): %d questions, %d answers kept, %d offsets recomputed, %d answers and "
             "%d questions dropped", config.input_file, out, config.opencc, counts["questions"],
             counts["answers"], counts["offsets_recomputed"], counts["answers_dropped"],
             counts["questions_dropped"])
    return metrics
