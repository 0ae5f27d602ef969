"""The one answerer behind ``POST /answer`` and ``paddleqa ask``.

A question comes with its context, or is searched in the knowledge base (BM25, ``top_k``
passages); the engine reads every passage, and the best-scoring span across them is the answer.
With an FAQ, a question without context that matches a known question at ``faq_threshold`` or
more gets that entry's answer directly, without reading anything.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import Any

from ..core.errors import PaddleQAError
from ..text.dataset import QAExample
from .engine import Engine
from .faq import Faq, FaqMatch
from .kb import KnowledgeBase, Passage

log = logging.getLogger(__name__)


class NoKnowledgeBase(PaddleQAError):
    """A question came without a context and there is no knowledge base to search."""


@dataclasses.dataclass
class Reading:
    """What one question is read against: one example per context."""

    examples: list[QAExample]
    passages: list[tuple[Passage, float]] | None  # retrieved (passage, BM25); None: context given


@dataclasses.dataclass
class Answer:
    """The best span of a question, and where it was found."""

    span: Any | None  # the top span (text, score, start, end in its context), None: no answer
    passage: Passage | None  # the knowledge-base passage holding it (None with a given context)
    passages: list[tuple[Passage, float]] | None  # passages read (None with a given context)
    faq: FaqMatch | None = None  # the FAQ entry that answered (then nothing was read)

    def to_json(self) -> dict:
        """The ``/answer`` response body (without its latency)."""
        if self.faq is not None:
            e = self.faq.entry
            return {"answer": e.answer, "score": self.faq.score, "start": None, "end": None,
                    "faq": {"id": e.fid, "question": e.question}}
        s = self.span
        out = {"answer": s.text if s else "", "score": round(float(s.score), 4) if s else None,
               "start": s.start if s else None, "end": s.end if s else None}
        if self.passages is not None:
            p = self.passage
            out.update(passage_id=p.pid if p else None, title=p.title if p else None,
                       passages=[{"id": q.pid, "title": q.title, "bm25": round(b, 3)}
                                 for q, b in self.passages])
        return out


def best_answer(spans: list) -> tuple | None:
    """(index of the context, its top span) with the highest score across contexts, or None."""
    return max(((i, c[0]) for i, c in enumerate(spans) if c), key=lambda x: x[1].score, default=None)


class Answerer:
    """Retrieve the passages of a question, have ``engine`` read them, pick the best answer."""

    def __init__(self, engine: Engine, kb: KnowledgeBase | None = None, *, top_k: int = 3,
                 faq: Faq | None = None, faq_threshold: float = 0.8):
        self.engine, self.kb, self.top_k = engine, kb, top_k
        self.faq, self.faq_threshold = faq, faq_threshold

    def warm(self) -> int:
        """Tokenize every knowledge-base passage now rather than on its first question (steadier
        latency and memory once serving); returns the passages tokenized."""
        windows = getattr(self.engine, "windows", None)
        if self.kb is None or windows is None:
            return 0
        for p in self.kb.passages:
            windows.encode_cached(p.text)
        return len(self.kb.passages)

    def from_faq(self, question: str, context: str | None) -> Answer | None:
        """The FAQ's answer when a question without context matches an entry well enough."""
        if context is not None or self.faq is None:
            return None
        match = self.faq.match(question)
        if match is None or match.score < self.faq_threshold:
            return None
        return Answer(None, None, None, faq=match)

    def refresh_kb(self) -> None:
        """Rebuild the knowledge base if its files changed; a failed rebuild keeps the old index."""
        if self.kb is None:
            return
        try:
            self.kb.maybe_reload()
        except PaddleQAError as exc:
            log.warning("knowledge base reload failed, keeping the old index: %s", exc)

    def retrieve(self, question: str, context: str | None) -> Reading:
        """The given context, else the ``top_k`` knowledge-base passages (maybe none)."""
        if context is not None:
            return Reading([QAExample("q", question, context, [], [])], None)
        if self.kb is None:
            raise NoKnowledgeBase("no context given and no knowledge base to search")
        passages = self.kb.search(question, self.top_k)
        examples = [QAExample(f"q{i}", question, p.text, [], [], title=p.title, context_id=p.pid)
                    for i, (p, _) in enumerate(passages)]
        return Reading(examples, passages)

    @staticmethod
    def pick(reading: Reading, spans: list) -> Answer:
        """The best span across the contexts read, with its passage."""
        best = best_answer(spans)
        if best is None:
            return Answer(None, None, reading.passages)
        i, span = best
        passage = reading.passages[i][0] if reading.passages is not None else None
        return Answer(span, passage, reading.passages)

    def answer(self, question: str, context: str | None, timeout: float | None = None) -> Answer:
        """Answer in this thread (``paddleqa ask``)."""
        known = self.from_faq(question, context)
        if known is not None:
            return known
        reading = self.retrieve(question, context)
        if not reading.examples:
            return Answer(None, None, reading.passages)
        return self.pick(reading, self.engine.answer(reading.examples, timeout=timeout))

    async def answer_async(self, question: str, context: str | None, timeout: float) -> Answer:
        """Answer without blocking the event loop (``POST /answer``).

        Raises :class:`NoKnowledgeBase`, ``asyncio.TimeoutError`` after ``timeout`` seconds (the
        request is then cancelled) or the engine's :class:`PaddleQAError`.
        """
        known = self.from_faq(question, context)
        if known is not None:
            return known
        if context is None and self.kb is not None and self.kb.reload_due():  # file checks off the loop
            await asyncio.to_thread(self.refresh_kb)
        reading = self.retrieve(question, context)
        if not reading.examples:
            return Answer(None, None, reading.passages)
        fut = self.engine.submit(reading.examples)
        try:
            spans = await asyncio.wait_for(asyncio.wrap_future(fut), timeout=timeout)
        except asyncio.TimeoutError:
            fut.cancel()
            raise
        return self.pick(reading, spans)
