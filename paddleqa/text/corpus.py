"""Unlabelled Chinese text for pre-training: read it, clean it, cut it into jieba words, pack it.

* :func:`read_corpus` takes text files (``.txt``/``.md``), folders of them, and JSON files whose
  contexts are text: SQuAD/CMRC 2018 (``paragraphs[].context``) and CMRC 2019 cloze passages
  (``context`` with ``[BLANKn]`` filled by the gold ``choices``; left out where a file has no
  answers). Every file that cannot be used
  raises :class:`~paddleqa.core.errors.DataError` naming it, what is wrong and the fix; so does a
  corpus file that is, or holds a context of, a file the run reports scores on (``exclude``).
* :func:`pack_sequences` tokenizes each document word by word (jieba) and packs the words, in
  corpus order, into ``[CLS] ... [SEP]`` sequences of at most ``max_seq_len`` tokens (documents
  sharing a sequence are separated by ``[SEP]``; a word is split only when longer than a whole
  sequence). For every token it records whether it continues a multi-character Chinese word:
  the ``chinese_ref`` that PaddleNLP's ``DataCollatorForWholeWordMask`` needs to mask a word's
  characters together. The result depends only on the texts, the tokenizer and ``max_seq_len``.

Pure Python and numpy: the tokenizer is passed in, jieba is imported when words are cut.
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import re
import unicodedata
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from ..core.errors import DataError
from ..core.io import read_json

log = logging.getLogger(__name__)

TEXT_SUFFIXES = (".txt", ".md")
PACKING_VERSION = 1  # bump when pack_sequences changes what it produces (cache key)
_BLANK = re.compile(r"\[BLANK(\d+)\]")
_ZERO_WIDTH = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff"))
_FIX = "give UTF-8 .txt/.md files, folders of them, or SQuAD/CMRC .json files"


@dataclasses.dataclass
class Document:
    """One cleaned text (a paragraph of a text file, or one context) and the file it came from."""

    source: str
    text: str


@dataclasses.dataclass
class Corpus:
    documents: list[Document]
    files: list[str]  # every file read, folders expanded, in reading order
    duplicates: int = 0  # documents dropped because an earlier one had the same text

    def summary(self) -> dict[str, Any]:
        return {"files": len(self.files), "documents": len(self.documents),
                "characters": sum(len(d.text) for d in self.documents),
                "duplicates_dropped": self.duplicates}


# ---------------------------------------------------------------- reading
def clean_text(text: str) -> str:
    """Control and zero-width characters out, every run of whitespace one space, ends stripped."""
    text = text.translate(_ZERO_WIDTH)
    text = "".join(ch if unicodedata.category(ch) != "Cc" or ch in "\t\n\r" else " " for ch in text)
    return " ".join(text.split())


_MD_RULES = [
    (re.compile(r"^```.*?^```[^\n]*$", re.M | re.S), ""),  # fenced code: not prose
    (re.compile(r"!\[([^\]]*)\]\([^)]*\)"), r"\1"),  # images -> alt text
    (re.compile(r"\[([^\]]*)\]\([^)]*\)"), r"\1"),  # links -> their text
    (re.compile(r"<[^>\n]+>"), ""),  # inline HTML tags
    (re.compile(r"^[ \t]{0,3}(#{1,6}|>+|[-*+]|\d+[.)])([ \t]+|$)", re.M), ""),  # headings, quotes, list marks
    (re.compile(r"^[ \t]*([-*_][ \t]*){3,}$", re.M), ""),  # horizontal rules
    (re.compile(r"(\*\*|__|\*|`)"), ""),  # emphasis and code marks
    (re.compile(r"^[ \t]*\|?[ \t:|-]+\|[ \t:|-]*$", re.M), ""),  # table separator rows
    (re.compile(r"\|"), " "),  # table cells
]


def strip_markdown(text: str) -> str:
    """The prose of a Markdown page (a knowledge-base article): markup removed, text kept."""
    for rule, repl in _MD_RULES:
        text = rule.sub(repl, text)
    return text


def _read_text(path: Path) -> str:
    raw = path.read_bytes()
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    if b"\x00" in raw[:65536]:
        raise DataError(path, "is a binary file (it holds NUL bytes), not text", _FIX)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(path, f"not UTF-8: byte 0x{raw[exc.start]:02x} at byte offset {exc.start} "
                        f"(line {line})", "re-encode it as UTF-8, e.g. `iconv -f GB18030 -t UTF-8 "
                        "IN.txt > OUT.txt`") from None


def _text_documents(path: Path) -> list[str]:
    """Paragraphs (blocks between blank lines) of a .txt or .md file."""
    text = _read_text(path).replace("\r\n", "\n").replace("\r", "\n")
    if path.suffix.lower() == ".md":
        text = strip_markdown(text)
    return [block for block in re.split(r"\n\s*\n", text)]


def _cloze_context(path: Path, i: int, rec: dict[str, Any]) -> str:
    """A CMRC 2019 passage with every ``[BLANKn]`` replaced by its gold sentence; a passage
    released without answers (the qualifying set) keeps its text with the blanks left out."""
    choices, answers = rec.get("choices"), rec.get("answers")
    if answers == []:
        return _BLANK.sub("", str(rec.get("context", "")))
    if not isinstance(choices, list) or not isinstance(answers, list):
        raise DataError(path, "a cloze passage needs 'choices' and 'answers' lists to fill its blanks",
                        "use the CMRC 2019 files as released (with answers)",
                        record=str(rec.get("context_id", i)))

    def fill(m: re.Match) -> str:
        k = int(m.group(1)) - 1
        if not 0 <= k < len(answers) or not isinstance(answers[k], int) \
                or not 0 <= answers[k] < len(choices):
            raise DataError(path, f"[BLANK{k + 1}] has no valid answer index into 'choices'",
                            "use the CMRC 2019 files as released (with answers)",
                            record=str(rec.get("context_id", i)))
        return str(choices[answers[k]])

    return _BLANK.sub(fill, str(rec.get("context", "")))


def _json_documents(path: Path) -> list[str]:
    """Contexts of a SQuAD/CMRC 2018 file, or filled passages of a CMRC 2019 cloze file."""
    doc, _ = read_json(path, fix=_FIX)
    data = doc.get("data") if isinstance(doc, dict) else None
    if not isinstance(data, list):
        got = f"keys {sorted(doc)[:8]}" if isinstance(doc, dict) else type(doc).__name__
        raise DataError(path, f"wrong schema: expected an object with a 'data' list, got {got}",
                        'pre-training reads SQuAD/CMRC 2018 ({"data": [{"paragraphs": [{"context": '
                        '...}]}]}) or CMRC 2019 ({"data": [{"context", "choices", "answers"}]}) JSON')
    texts = []
    for i, rec in enumerate(data):
        if isinstance(rec, dict) and isinstance(rec.get("paragraphs"), list):
            texts += [str(p.get("context") or "") for p in rec["paragraphs"] if isinstance(p, dict)]
        elif isinstance(rec, dict) and isinstance(rec.get("context"), str):
            texts.append(_cloze_context(path, i, rec) if _BLANK.search(rec["context"]) else rec["context"])
        else:
            raise DataError(path, "record has neither 'paragraphs' (SQuAD/CMRC 2018) nor 'context' "
                            "(CMRC 2019)", _FIX, record=str(i))
    return texts


def corpus_files(paths: Sequence[str]) -> list[Path]:
    """The files ``paths`` name: files as given, folders expanded to their .txt/.md files
    (recursively, sorted by path), so the corpus order never depends on the file system."""
    files: list[Path] = []
    for name in paths:
        p = Path(name)
        if not p.exists():
            raise DataError(p, "no such file or folder", "fix the path in pretrain.corpus")
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in TEXT_SUFFIXES)
            if not found:
                raise DataError(p, "folder holds no .txt or .md files",
                                "put the text there as UTF-8 .txt/.md files, or name the files")
            files += found
        elif p.suffix.lower() in TEXT_SUFFIXES + (".json",):
            files.append(p)
        else:
            raise DataError(p, f"unsupported file type {p.suffix or '(none)'!r}", _FIX)
    return files


def file_texts(path: Path) -> list[str]:
    """The cleaned, non-empty texts of one corpus file; a file with none is an error."""
    raw = _json_documents(path) if path.suffix.lower() == ".json" else _text_documents(path)
    texts = [t for t in (clean_text(r) for r in raw) if t]
    if not texts:
        raise DataError(path, "holds no text", "remove it from pretrain.corpus, or fill it")
    return texts


def read_corpus(paths: Sequence[str], exclude: Sequence[str] = ()) -> Corpus:
    """Documents of every corpus file, in order, exact duplicates dropped; refuses (DataError) a
    file that is one of ``exclude`` (by path or content) or holds one of their contexts."""
    files = corpus_files(paths)
    guard = _ExcludeGuard([Path(e) for e in exclude if e])
    corpus = Corpus([], [str(f) for f in files])
    seen: set[str] = set()
    for f in files:
        guard.check_file(f)
        texts = file_texts(f)
        guard.check_texts(f, texts)
        for t in texts:
            if t in seen:
                corpus.duplicates += 1
                continue
            seen.add(t)
            corpus.documents.append(Document(str(f), t))
    return corpus


class _ExcludeGuard:
    """Never pre-train on the contexts of a set whose scores are reported."""

    def __init__(self, exclude: list[Path]):
        self.exclude = [e for e in exclude if e.is_file()]
        self._digests: dict[str, Path] | None = None
        self._texts: dict[str, Path] | None = None

    def _why(self, target: Path) -> str:
        return (f"it would pre-train on the contexts of {target}, a file this run reports scores "
                "on (pretrain.exclude_files: the run's dev file), which inflates those scores")

    def check_file(self, f: Path) -> None:
        if not self.exclude:
            return
        for e in self.exclude:
            if f.resolve() == e.resolve():
                raise DataError(f, f"refused: {self._why(e)}", "remove it from pretrain.corpus")
        if self._digests is None:
            self._digests = {_sha256(e): e for e in self.exclude}
        same = self._digests.get(_sha256(f))
        if same is not None:
            raise DataError(f, f"refused: it is a copy of {same}; {self._why(same)}",
                            "remove it from pretrain.corpus")

    def check_texts(self, f: Path, texts: Iterable[str]) -> None:
        if not self.exclude:
            return
        if self._texts is None:
            self._texts = {}
            for e in self.exclude:
                try:
                    self._texts.update(dict.fromkeys(file_texts(e), e))
                except DataError:
                    continue  # not readable as text: only the path and content checks apply
        hits = [t for t in texts if t in self._texts]
        if hits:
            target = self._texts[hits[0]]
            raise DataError(f, f"refused: {len(hits)} of its texts are contexts of {target} "
                            f"(first: {hits[0][:30]!r}...); {self._why(target)}",
                            "remove those texts from the file, or the file from pretrain.corpus")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ---------------------------------------------------------------- words and sequences
def _is_cjk(ch: str) -> bool:
    cp = ord(ch)
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF
            or 0xF900 <= cp <= 0xFAFF or 0x2F800 <= cp <= 0x2FA1F)


class WordEncoder:
    """A jieba word -> (token ids, continuation flags), memoised (words repeat a lot).

    A multi-character word written wholly in Chinese characters gets flag 1 on every token after
    its first: those are its ``chinese_ref`` positions. Other words keep flag 0: the tokenizer
    already marks their WordPiece continuations with ``##``, which the collator groups itself.
    """

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.memo: dict[str, tuple[list[int], list[int]]] = {}

    def __call__(self, word: str) -> tuple[list[int], list[int]]:
        hit = self.memo.get(word)
        if hit is None:
            ids = self.tokenizer.convert_tokens_to_ids(self.tokenizer.tokenize(word))
            chinese = len(ids) > 1 and all(_is_cjk(ch) for ch in word)
            hit = (ids, [0] + [int(chinese)] * (len(ids) - 1) if ids else [])
            self.memo[word] = hit
        return hit


@dataclasses.dataclass
class Sequences:
    """Packed sequences, flat: row ``i`` is ``ids[offsets[i]:offsets[i+1]]`` (with its [CLS] and
    [SEP]) and ``refs`` marks the tokens that continue a Chinese word (``chinese_ref``)."""

    ids: np.ndarray  # int32
    refs: np.ndarray  # bool, aligned with ids
    offsets: np.ndarray  # int64, len = rows + 1

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def row(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        a, b = int(self.offsets[i]), int(self.offsets[i + 1])
        return self.ids[a:b], np.flatnonzero(self.refs[a:b])

    def save(self, path: Path) -> None:
        np.savez(path, ids=self.ids, refs=self.refs, offsets=self.offsets)

    @classmethod
    def load(cls, path: Path) -> "Sequences":
        with np.load(path) as z:
            return cls(z["ids"], z["refs"], z["offsets"])


class _Packer:
    """Greedy packing of words into rows of at most ``capacity`` tokens between [CLS] and [SEP]."""

    def __init__(self, cls_id: int, sep_id: int, capacity: int):
        self.cls_id, self.sep_id, self.capacity = cls_id, sep_id, capacity
        self.ids: list[int] = []
        self.refs: list[int] = []
        self.offsets = [0]
        self.cur_ids: list[int] = []
        self.cur_refs: list[int] = []
        self.pending_sep = False

    def flush(self) -> None:
        if self.cur_ids:
            self.ids += [self.cls_id, *self.cur_ids, self.sep_id]
            self.refs += [0, *self.cur_refs, 0]
            self.offsets.append(len(self.ids))
        self.cur_ids, self.cur_refs, self.pending_sep = [], [], False

    def start_document(self) -> None:
        self.pending_sep = bool(self.cur_ids)

    def add(self, ids: list[int], refs: list[int]) -> None:
        for k in range(0, len(ids), self.capacity):  # only a word longer than a row is split
            piece, flags = ids[k: k + self.capacity], [0, *refs[k + 1: k + self.capacity]]
            need = len(piece) + int(self.pending_sep)
            if len(self.cur_ids) + need > self.capacity:
                self.flush()
            if self.pending_sep:
                self.cur_ids.append(self.sep_id)
                self.cur_refs.append(0)
                self.pending_sep = False
            self.cur_ids += piece
            self.cur_refs += flags  # a split piece starts a new word


def pack_sequences(documents: Iterable[Document], tokenizer, max_seq_len: int, *,
                   progress: bool = False, total: int | None = None) -> tuple[Sequences, dict[str, Any]]:
    """Rows of ``max_seq_len`` tokens at most, from the documents in order; returns them and
    counts (tokens, [UNK] rate, jieba words, whole-word continuation tokens)."""
    import jieba  # deferred: it loads its dictionary at first use
    from tqdm.auto import tqdm

    jieba.setLogLevel(logging.WARNING)
    if max_seq_len < 8:
        raise ValueError(f"max_seq_len must be >= 8, got {max_seq_len}")
    encode = WordEncoder(tokenizer)
    packer = _Packer(tokenizer.cls_token_id, tokenizer.sep_token_id, max_seq_len - 2)
    words = 0
    for doc in tqdm(documents, total=total, desc="words", unit="doc", disable=not progress):
        packer.start_document()
        for word in jieba.lcut(doc.text):
            ids, refs = encode(word)
            if ids:
                words += 1
                packer.add(ids, refs)
    packer.flush()
    seqs = Sequences(np.asarray(packer.ids, dtype=np.int32), np.asarray(packer.refs, dtype=bool),
                     np.asarray(packer.offsets, dtype=np.int64))
    unk = tokenizer.unk_token_id
    n_special = 2 * len(seqs)
    stats = {"sequences": len(seqs), "tokens": int(len(seqs.ids)),
             "unk_rate": round(float((seqs.ids == unk).sum()) / max(1, len(seqs.ids) - n_special), 6),
             "jieba_words": words, "whole_word_continuations": int(seqs.refs.sum())}
    return seqs, stats
