"""FAQ mode for bots: a question that matches a known one gets the known answer directly.

An FAQ file is a JSON list of ``{"question", "answer"}`` objects (optionally ``"id"``), a JSON
object with such a list under ``"faqs"``, or a CSV with ``question`` and ``answer`` columns
(optionally ``id``). Candidates are shortlisted with BM25+ over jieba tokens (the knowledge base's
tokens), then scored by the cosine similarity of character unigram+bigram counts, a 0..1 number a
threshold can be set on: 1.0 is the same question up to punctuation and case. Below the
threshold the extractive reader answers from the knowledge base as usual.
"""
from __future__ import annotations

import collections
import csv
import dataclasses
import math
import unicodedata
from pathlib import Path

from ..core.errors import DataError
from ..core.io import read_json
from .kb import tokens

SHORTLIST = 8  # BM25 candidates whose similarity is computed


@dataclasses.dataclass(frozen=True)
class FaqEntry:
    fid: str
    question: str
    answer: str


@dataclasses.dataclass(frozen=True)
class FaqMatch:
    entry: FaqEntry
    score: float  # cosine similarity of the two questions, 0..1


def _grams(text: str) -> collections.Counter:
    """Character unigrams and bigrams of the letters, digits and CJK characters of ``text``."""
    chars = [c for c in unicodedata.normalize("NFKC", text.lower())
             if unicodedata.category(c)[0] in "LN"]
    return collections.Counter(chars + [a + b for a, b in zip(chars, chars[1:])])


def similarity(a: str, b: str) -> float:
    """Cosine similarity of the character unigram+bigram counts of two questions (0..1)."""
    ga, gb = _grams(a), _grams(b)
    dot = sum(n * gb[g] for g, n in ga.items())
    norm = math.sqrt(sum(n * n for n in ga.values())) * math.sqrt(sum(n * n for n in gb.values()))
    return dot / norm if norm else 0.0


def _rows(path: Path) -> list[dict]:
    if path.suffix.lower() == ".csv":
        try:
            with open(path, encoding="utf-8-sig", newline="") as fh:
                return list(csv.DictReader(fh))
        except UnicodeDecodeError as exc:
            raise DataError(path, f"not UTF-8 (byte offset {exc.start})", "re-encode it as UTF-8") from None
        except csv.Error as exc:
            raise DataError(path, f"malformed CSV: {exc}", "write question,answer rows") from None
    data, _ = read_json(path, fix="pass a JSON list of {question, answer} objects or a CSV")
    rows = data.get("faqs") if isinstance(data, dict) else data
    if not isinstance(rows, list):
        raise DataError(path, 'expected a list of {"question", "answer"} objects (or {"faqs": [...]})',
                        "see `paddleqa serve --help` for the FAQ format")
    return rows


def load_faq(path: str | Path) -> list[FaqEntry]:
    """The entries of an FAQ file; a record without a question or an answer is an error naming it."""
    path = Path(path)
    entries = []
    for i, row in enumerate(_rows(path)):
        q = row.get("question") if isinstance(row, dict) else None
        a = row.get("answer") if isinstance(row, dict) else None
        if not isinstance(q, str) or not q.strip() or not isinstance(a, str) or not a.strip():
            raise DataError(path, "needs a non-empty 'question' and 'answer'", "fill in or remove the record",
                            record=f"#{i}")
        entries.append(FaqEntry(str(row.get("id") or i), q.strip(), a.strip()))
    if not entries:
        raise DataError(path, "holds no FAQ entries", 'add {"question": ..., "answer": ...} records')
    return entries


class Faq:
    """Known question-answer pairs and the best match of a new question."""

    def __init__(self, path: str | Path):
        from rank_bm25 import BM25Plus  # as the knowledge base: loaded with the service

        self.path = Path(path)
        self.entries = load_faq(self.path)
        self._index = BM25Plus([tokens(e.question) or ["\0"] for e in self.entries])

    def match(self, question: str) -> FaqMatch | None:
        """The most similar entry (None when no entry shares a word with the question)."""
        query = tokens(question)
        if not query:
            return None
        scores = self._index.get_scores(query)
        ranked = sorted(range(len(self.entries)), key=lambda i: -scores[i])[:SHORTLIST]
        best = max(((similarity(question, self.entries[i].question), i) for i in ranked), default=None)
        return FaqMatch(self.entries[best[1]], round(best[0], 4)) if best and best[0] > 0 else None
