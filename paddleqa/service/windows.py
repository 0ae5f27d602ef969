"""The service's windows: :func:`~paddleqa.text.features.build_features` at request speed.

Profiling ``POST /answer`` (see BENCHMARKS.md, load test) showed PaddleNLP's Python tokenizer
taking 30-55 ms of every request: it re-tokenizes the question once per window and the context
on every request, ~10 ms per 500 characters. Here each text is tokenized once into ids and
character offsets, and the windows are cut from those with numpy, exactly as PaddleNLP's
``stride`` windowing does (the question cut to ``max_query_length`` tokens, ``[CLS] q [SEP] c
[SEP]``, the next window starting ``doc_stride`` context tokens later); the result is the same
arrays as ``build_features(train=False)`` (tested). Knowledge-base passages are tokenized once
and kept (they are read again and again); a context sent with a request is tokenized per request.

Tokenizing itself goes through PaddleNLP's C++ tokenizer (``fast-tokenizer-python``, the
backend of ``AutoTokenizer(use_fast=True)``) when it is installed and the text holds only
characters on which it agrees with the Python tokenizer: CJK ideographs, printable ASCII and
CJK punctuation, and any other caseless letter, digit or punctuation mark that a probe shows the
two tokenize alike; a text with symbols at which the Python tokenizer always cuts is tokenized
piece by piece around them. The two differ on symbols (``～ ° ℃ ─ ×``: the Python tokenizer splits
words at them, the C++ one does not) and on the offsets of characters that normalisation removes
or expands (accents, zero-width marks, ligatures), so any other text takes the Python tokenizer.
"""
from __future__ import annotations

import collections
import logging
import re
import threading
import unicodedata
from typing import Sequence

import numpy as np

# Private helpers of text.features, reused so the overlap marks cannot drift from training's.
from ..text.features import FeatureParams, lexical_marks, mark_overlap, non_matching_ids

log = logging.getLogger(__name__)

# Characters on which the C++ and the Python tokenizer agree, ids and offsets, for any vocabulary:
# CJK ideographs, printable ASCII, common CJK punctuation. Other characters are probed one by one
# against the Python tokenizer (:meth:`Windows.fast_cuts`).
_FAST_SAFE = re.compile(
    "[\u4e00-\u9fff\x20-\x7e\t\n\r"
    "\u3001\u3002\u300a-\u3011\u3014-\u301b\u201c\u201d\u2018\u2019\u2014\u2026\u00b7"
    "\uff01\uff08\uff09\uff0c\uff0e\uff1a\uff1b\uff1f]*")
# Categories worth probing: letters without case, digits and punctuation. Symbols (～ ° ℃ ─ ×),
# cased and accented letters, marks, controls and spaces always take the Python tokenizer.
_PROBED = frozenset({"Lo", "Nd", "Nl", "Pd", "Ps", "Pe", "Pi", "Pf", "Po", "Pc"})
_PROBES = ("ab{0}cd", "中{0}文", "1{0}2", "{0}", "x {0} y", "{0}{0}a", "AB{0}", "{0}中")
BERT_LIKE = ("ErnieTokenizer", "BertTokenizer")


def _fast_tokenizer(tokenizer):
    """PaddleNLP's C++ tokenizer with ``tokenizer``'s vocabulary, or None (not installed, or a
    tokenizer family it does not reproduce)."""
    if type(tokenizer).__name__ not in BERT_LIKE:
        return None
    try:
        from fast_tokenizer import ErnieFastTokenizer
    except ImportError:
        log.info("fast-tokenizer-python is not installed: the service tokenizes with PaddleNLP's "
                 "Python tokenizer (slower; `pip install fast-tokenizer-python`)")
        return None
    fast = ErnieFastTokenizer(vocab=dict(tokenizer.get_vocab()), unk_token=tokenizer.unk_token,
                              lowercase=bool(getattr(tokenizer, "do_lower_case", True)))
    fast.disable_truncation()
    fast.disable_padding()
    return fast


class Windows:
    """Windows of (question, context) examples for one model's tokenizer and window settings.

    Thread-safe: the cache of passage tokens is shared under a lock, tokenizers are only read.
    """

    def __init__(self, tokenizer, params: FeatureParams, *, cache_size: int = 50_000):
        self.tokenizer, self.params = tokenizer, params
        self.fast = _fast_tokenizer(tokenizer)
        self.no_match = non_matching_ids(tokenizer) if params.overlap_types else None
        self.cls, self.sep = tokenizer.cls_token_id, tokenizer.sep_token_id
        self.pad = tokenizer.pad_token_id or 0
        self.cache_size = cache_size
        self._cache: collections.OrderedDict[str, tuple] = collections.OrderedDict()
        self._lock = threading.Lock()
        self._char_kind: dict[str, str] = {}
        self._symbols: dict[str, tuple[list, list]] = {}

    def _python_encode(self, text: str) -> tuple[list, list]:
        enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        return enc["input_ids"], enc["offset_mapping"]

    def _agrees(self, ch: str) -> bool:
        """Whether both tokenizers give the same ids and offsets around ``ch`` (probed)."""
        if (unicodedata.category(ch) not in _PROBED or unicodedata.normalize("NFD", ch) != ch
                or ch.lower() != ch):
            return False
        for probe in _PROBES:
            text = probe.format(ch)
            enc = self.fast.encode(text, add_special_tokens=False)
            ids, offs = self._python_encode(text)
            if list(enc.ids) != list(ids) or [tuple(o) for o in enc.offsets] != [tuple(o) for o in offs]:
                return False
        return True

    def _splits(self, ch: str) -> bool:
        """Whether the Python tokenizer always cuts a text at the symbol ``ch`` (its tokens never
        span it), so that a text may be tokenized piece by piece around it (probed)."""
        if unicodedata.category(ch)[0] != "S":
            return False
        alone = self._python_encode(ch)
        for probe in ("ab{0}cd", "中{0}1", "1{0}x", "{0}{0}", " {0} "):
            text = probe.format(ch)
            ids, offs, start = [], [], 0
            for i in [i for i, c in enumerate(text) if c == ch] + [len(text)]:
                for piece, at in ((text[start:i], start), (ch if i < len(text) else "", i)):
                    if piece:
                        p_ids, p_offs = self._python_encode(piece) if piece != ch else alone
                        ids += p_ids
                        offs += [(a + at, b + at) for a, b in p_offs]
                start = i + 1
            whole = self._python_encode(text)
            if list(whole[0]) != ids or [tuple(o) for o in whole[1]] != offs:
                return False
        return True

    def _kind(self, ch: str) -> str:
        """"fast": the C++ tokenizer agrees on it; "split": a symbol to tokenize on its own;
        "python": only the Python tokenizer gets texts with it right."""
        kind = self._char_kind.get(ch)
        if kind is None:
            kind = ("fast" if _FAST_SAFE.fullmatch(ch) or self._agrees(ch) else
                    "split" if self._splits(ch) else "python")
            self._char_kind[ch] = kind
        return kind

    def fast_cuts(self, text: str) -> list[int] | None:
        """Where ``text`` must be cut for the C++ tokenizer (its "split" symbols; [] = nowhere),
        or None when only the Python tokenizer can take it."""
        if self.fast is None:
            return None
        if _FAST_SAFE.fullmatch(text):
            return []
        kinds = {ch: self._kind(ch) for ch in set(text)}
        if "python" in kinds.values():
            return None
        return [i for i, ch in enumerate(text) if kinds[ch] == "split"] if "split" in kinds.values() else []

    def encode(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """Token ids ``[n]`` and character offsets ``[n, 2]`` of ``text`` (no special tokens)."""
        cuts = self.fast_cuts(text)
        if cuts is None:
            ids, offs = self._python_encode(text)
        elif not cuts:
            enc = self.fast.encode(text, add_special_tokens=False)
            ids, offs = enc.ids, enc.offsets
        else:  # C++ for the pieces between the symbols, each symbol's own tokens (cached) between
            ids, offs, start = [], [], 0
            for i in cuts + [len(text)]:
                if i > start:
                    enc = self.fast.encode(text[start:i], add_special_tokens=False)
                    ids += enc.ids
                    offs += [(a + start, b + start) for a, b in enc.offsets]
                if i < len(text):
                    s_ids, s_offs = self._symbol(text[i])
                    ids += s_ids
                    offs += [(a + i, b + i) for a, b in s_offs]
                start = i + 1
        return np.asarray(ids, dtype=np.int32), np.asarray(offs, dtype=np.int32).reshape(-1, 2)

    def _symbol(self, ch: str) -> tuple[list, list]:
        hit = self._symbols.get(ch)
        if hit is None:
            hit = self._symbols[ch] = self._python_encode(ch)
        return hit

    def encode_cached(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`encode`, kept for the next time (knowledge-base passages)."""
        with self._lock:
            hit = self._cache.get(text)
            if hit is not None:
                self._cache.move_to_end(text)
                return hit
        out = self.encode(text)
        with self._lock:
            self._cache[text] = out
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return out

    def question(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """Question ids, cut to ``max_query_length`` tokens as build_features cuts them (the text
        is cut at that token's end and tokenized again), and what the lexical marks add to their
        types (all 0 without ``word_marks`` and ``entity_marks``)."""
        ids, offs = self.encode(text)
        m = self.params.max_query_length
        if len(ids) > m:
            text = text[: int(offs[m - 1, 1])]
            ids, offs = self.encode(text)
        return ids, self._marks(text, offs)

    def _marks(self, text: str, offs: np.ndarray) -> np.ndarray:
        return lexical_marks(text, offs.astype(np.int64), np.ones(len(offs), dtype=bool), self.params)

    def features(self, examples: Sequence, cached: Sequence[bool] | None = None) -> dict[str, np.ndarray]:
        """``build_features(examples, train=False)``'s arrays; ``cached[i]``: keep example i's
        context tokens (a knowledge-base passage)."""
        L, stride = self.params.max_seq_len, self.params.doc_stride
        rows: list[tuple] = []  # (ids, question length, offsets, example, lexical marks)
        q_cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for i, ex in enumerate(examples):
            hit = q_cache.get(ex.question)
            if hit is None:
                hit = q_cache[ex.question] = self.question(ex.question)
            q, q_marks = hit
            c_ids, c_offs = (self.encode_cached if cached and cached[i] else self.encode)(ex.context)
            c_marks = self._marks(ex.context, c_offs)
            room = L - len(q) - 3
            head = np.concatenate([[self.cls], q, [self.sep]]).astype(np.int32)
            head_marks = np.concatenate([[0], q_marks, [0]])
            offset = 0
            while offset < len(c_ids):  # PaddleNLP's loop (tokenizer_utils._batch_prepare_for_model)
                length = min(len(c_ids) - offset, room)
                ids = np.concatenate([head, c_ids[offset: offset + length], [self.sep]])
                marks = np.concatenate([head_marks, c_marks[offset: offset + length], [0]])
                rows.append((ids, len(head), c_offs[offset: offset + length], i, marks))
                if offset + length == len(c_ids):
                    break
                offset += min(length, stride)
        return self._arrays(rows, L)

    def _arrays(self, rows: list, L: int) -> dict[str, np.ndarray]:
        n = len(rows)
        input_ids = np.full((n, L), self.pad, dtype=np.int32)
        types = np.zeros((n, L), dtype=np.int32)
        offsets = np.full((n, L, 2), -1, dtype=np.int32)
        lengths = np.zeros(n, dtype=np.int32)
        example_index = np.zeros(n, dtype=np.int32)
        for r, (ids, h, c_offs, ex_i, marks) in enumerate(rows):
            k = len(ids)
            input_ids[r, :k] = ids
            types[r, h:k] = 1
            real = c_offs[:, 1] > c_offs[:, 0]  # as build_features: only tokens that cover text
            offsets[r, h: h + len(c_offs)][real] = c_offs[real]
            if self.no_match is not None:
                mark_overlap(input_ids[r, :k], types[r, :k], self.no_match)
            types[r, :k] += marks.astype(np.int32)  # all 0 without lexical marks
            lengths[r], example_index[r] = k, ex_i
        return {"input_ids": input_ids, "token_type_ids": types, "length": lengths,
                "example_index": example_index, "offsets": offsets}
