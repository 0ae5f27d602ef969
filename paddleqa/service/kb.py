"""Knowledge base for the QA service: passages from text files or CMRC JSON, BM25 over jieba tokens.

A knowledge base is a folder of ``.txt`` / ``.md`` files (each split into passages at blank lines
and sentence ends, at most ``passage_chars`` characters) or a SQuAD/CMRC-format JSON (each
paragraph's context, split the same way). Questions and passages are segmented with jieba's
search mode and ranked with ``rank_bm25.BM25Plus`` (Okapi BM25's idf is 0 for a term in half the
passages, so a two-file knowledge base would rank nothing; BM25+ keeps idf positive). Passages
sharing no token with the question are never returned. The index is rebuilt when the files change
(checked at most every ``check_seconds``) or on :meth:`KnowledgeBase.reload`.
"""
from __future__ import annotations

import collections
import dataclasses
import json
import logging
import re
import threading
import time
from pathlib import Path

import numpy as np

from ..core.errors import PaddleQAError

log = logging.getLogger(__name__)

TEXT_SUFFIXES = (".txt", ".md")
_SENTENCE_END = re.compile(r"(?<=[。！？!?；;])")
_TOKEN_OK = re.compile(r"\w", re.UNICODE)


@dataclasses.dataclass(frozen=True)
class Passage:
    pid: str
    title: str
    text: str
    source: str


def split_passages(text: str, max_chars: int) -> list[str]:
    """Paragraphs (blank-line separated) merged up to ``max_chars``; longer ones cut at sentence
    ends, and a sentence longer than ``max_chars`` cut hard."""
    pieces: list[str] = []
    for para in re.split(r"\n\s*\n", text):
        para = " ".join(line.strip() for line in para.splitlines() if line.strip())
        if not para:
            continue
        if len(para) <= max_chars:
            pieces.append(para)
            continue
        for sent in _SENTENCE_END.split(para):
            while len(sent) > max_chars:
                pieces.append(sent[:max_chars])
                sent = sent[max_chars:]
            if sent:
                pieces.append(sent)
    out: list[str] = []
    for p in pieces:  # merge short neighbours
        if out and len(out[-1]) + 1 + len(p) <= max_chars:
            out[-1] = out[-1] + "\n" + p
        else:
            out.append(p)
    return out


def tokens(text: str) -> list[str]:
    import jieba

    return [t for t in jieba.lcut_for_search(text.lower()) if _TOKEN_OK.search(t)]


class Bm25Index:
    """``rank_bm25.BM25Plus(docs).get_scores`` from postings lists, and which documents a query hits.

    Hand-written on top of BM25Plus (its idf and parameters) because its ``get_scores`` walks every
    document in Python for every query term: 9 ms of each question over the 2,000 passages of the
    CMRC dev file, the largest cost of a request after tokenizing. Here a term's contribution
    ``idf * tf * (k1 + 1) / (k1 * (1 - b + b * len / avgdl) + tf)`` is precomputed for the
    documents holding it; a document without the term gets BM25+'s floor ``idf * delta``.
    """

    def __init__(self, docs: list[list[str]]):
        from rank_bm25 import BM25Plus

        bm = BM25Plus(docs)
        self.size, self.idf, self.delta = bm.corpus_size, bm.idf, bm.delta
        norm = bm.k1 * (1 - bm.b + bm.b * np.asarray(bm.doc_len, dtype=np.float64) / bm.avgdl)
        where: dict[str, list] = collections.defaultdict(list)
        for d, freqs in enumerate(bm.doc_freqs):
            for term, tf in freqs.items():
                where[term].append((d, tf))
        self.postings: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for term, pairs in where.items():
            ds = np.fromiter((d for d, _ in pairs), dtype=np.int64, count=len(pairs))
            tf = np.fromiter((f for _, f in pairs), dtype=np.float64, count=len(pairs))
            self.postings[term] = (ds, bm.idf[term] * tf * (bm.k1 + 1) / (norm[ds] + tf))

    def scores(self, query: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(score of every document, mask of the documents holding a query term)."""
        score = np.full(self.size, sum((self.idf.get(q) or 0) * self.delta for q in query))
        hit = np.zeros(self.size, dtype=bool)
        for q in query:
            post = self.postings.get(q)
            if post is not None:
                score[post[0]] += post[1]
                hit[post[0]] = True
        return score, hit


class KnowledgeBase:
    """Passages + a BM25 index; thread-safe reads, rebuilt when the files change."""

    def __init__(self, path: str | Path, *, passage_chars: int = 300, check_seconds: float = 2.0):
        self.path = Path(path)
        self.passage_chars = passage_chars
        self.check_seconds = check_seconds
        self._lock = threading.Lock()
        self._checked = 0.0
        self.skipped: list[str] = []
        self.passages: list[Passage] = []
        self._bm25 = None
        self._signature = None
        self.reload()

    # ------------------------------------------------------------ loading
    def _files(self) -> list[Path]:
        if not self.path.exists():
            raise PaddleQAError(f"knowledge base {self.path} does not exist: pass a folder of "
                                ".txt/.md files or a CMRC-format JSON file")
        if self.path.is_file():
            return [self.path]
        return sorted(p for p in self.path.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES)

    def signature(self) -> tuple:
        return tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in self._files())

    def _read(self, files: list[Path]) -> tuple[list[Passage], list[str]]:
        passages: list[Passage] = []
        skipped: list[str] = []
        for f in files:
            try:
                raw = f.read_bytes().decode("utf-8-sig")
            except UnicodeDecodeError as exc:
                skipped.append(f"{f}: not UTF-8 (byte {exc.start}); re-save it as UTF-8")
                continue
            except OSError as exc:
                skipped.append(f"{f}: cannot read ({exc.strerror})")
                continue
            if f.suffix.lower() == ".json":
                passages += self._from_squad(f, raw, skipped)
                continue
            title = f.stem
            first = raw.lstrip().splitlines()[0] if raw.strip() else ""
            if first.startswith("#"):
                title = first.lstrip("#").strip() or title
                raw = raw.lstrip()[len(first):]
            rel = f.relative_to(self.path) if self.path.is_dir() else f.name
            for i, text in enumerate(split_passages(raw, self.passage_chars)):
                passages.append(Passage(f"{rel}#{i}", title, text, str(f)))
        return passages, skipped

    def _from_squad(self, f: Path, raw: str, skipped: list[str]) -> list[Passage]:
        try:
            doc = json.loads(raw)
            articles = doc["data"]
        except (ValueError, KeyError, TypeError) as exc:
            raise PaddleQAError(f"{f}: not a SQuAD/CMRC JSON with a 'data' list ({type(exc).__name__}); "
                                "pass a folder of .txt/.md files or fix the file") from None
        out = []
        for a, art in enumerate(articles if isinstance(articles, list) else []):
            if not isinstance(art, dict):
                skipped.append(f"{f}: data[{a}] is not an object")
                continue
            for p, para in enumerate(art.get("paragraphs") or []):
                ctx = para.get("context") if isinstance(para, dict) else None
                if not isinstance(ctx, str) or not ctx.strip():
                    skipped.append(f"{f}: data[{a}].paragraphs[{p}] has no context text")
                    continue
                base = para.get("id") or f"{art.get('id', a)}-{p}"
                for i, text in enumerate(split_passages(ctx, self.passage_chars)):
                    out.append(Passage(f"{base}#{i}", str(art.get("title", "")), text, str(f)))
        return out

    def reload(self) -> int:
        """Re-read the files and rebuild the index; returns the passage count."""
        files = self._files()
        passages, skipped = self._read(files)
        if not passages:
            raise PaddleQAError(f"knowledge base {self.path} holds no passages ({len(files)} files"
                                f"{'; ' + '; '.join(skipped[:3]) if skipped else ''})")
        docs = [tokens(p.title + " " + p.text) or ["<empty>"] for p in passages]
        bm25 = Bm25Index(docs)
        sig = self.signature()
        with self._lock:
            self.passages, self._bm25, self.skipped, self._signature = passages, bm25, skipped, sig
            self._checked = time.monotonic()
        for s in skipped:
            log.warning("knowledge base: skipped %s", s)
        log.info("knowledge base %s: %d passages from %d files", self.path, len(passages), len(files))
        return len(passages)

    def reload_due(self) -> bool:
        """Whether :meth:`maybe_reload` would look at the files now (cheap; no file access)."""
        return time.monotonic() - self._checked >= self.check_seconds

    def maybe_reload(self) -> bool:
        """Rebuild when the files changed since the last look (looks at most every check_seconds)."""
        if not self.reload_due():
            return False
        self._checked = time.monotonic()
        try:
            changed = self.signature() != self._signature
        except OSError:
            changed = True
        if changed:
            log.info("knowledge base %s changed; rebuilding", self.path)
            self.reload()
        return changed

    # ------------------------------------------------------------ search
    def search(self, question: str, k: int = 3) -> list[tuple[Passage, float]]:
        with self._lock:
            passages, bm25 = self.passages, self._bm25
        q = tokens(question)
        if not q:
            return []
        scores, hit = bm25.scores(q)
        hits = np.nonzero(hit)[0]
        order = hits[np.argsort(-scores[hits], kind="stable")[:k]]
        return [(passages[i], float(scores[i])) for i in order]
