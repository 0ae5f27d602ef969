"""Tokenizers: PaddleNLP tokenizers from a hub name or a local folder, and an offline char vocab.

Without network, ``paddleqa vocab build`` makes a character vocabulary from the data (special
tokens, every character seen, and a ``##x`` continuation piece for every non-CJK character so
WordPiece can spell any word) and saves an ``ErnieTokenizer`` over it, which
``AutoTokenizer.from_pretrained(DIR)`` loads like any other.
"""
from __future__ import annotations

import collections
import dataclasses
import logging
import string
import time
from pathlib import Path
from typing import Iterable

import numpy as np

from ..core.config import opt, to_dict
from ..core.errors import PaddleQAError
from ..core.manifest import write_manifest
from .dataset import load_examples

log = logging.getLogger(__name__)

SPECIAL_TOKENS = ("[PAD]", "[CLS]", "[SEP]", "[MASK]", "[UNK]")


@dataclasses.dataclass
class VocabConfig:
    """Build a character vocabulary + ErnieTokenizer from SQuAD/CMRC files (offline)."""

    data_files: list[str] = opt(factory=list, help="SQuAD/CMRC JSON files whose text makes the vocab")
    out_dir: str = opt("", help="folder to save the tokenizer into")
    min_freq: int = opt(1, help="keep characters seen at least this many times")
    max_size: int = opt(0, help="cap the vocab size (most frequent first); 0 = no cap")

    def __post_init__(self) -> None:
        if not self.data_files:
            raise ValueError("data_files: give at least one SQuAD/CMRC JSON file")
        if not self.out_dir:
            raise ValueError("out_dir: say where to save the tokenizer")
        if self.min_freq < 1:
            raise ValueError(f"min_freq must be >= 1, got {self.min_freq}")
        if self.max_size < 0:
            raise ValueError(f"max_size must be >= 0, got {self.max_size}")


def _is_cjk(ch: str) -> bool:
    cp = ord(ch)
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF
            or 0xF900 <= cp <= 0xFAFF or 0x2F800 <= cp <= 0x2FA1F)


def build_vocab(texts: Iterable[str], *, min_freq: int = 1, max_size: int = 0) -> list[str]:
    """Vocabulary tokens for ``texts`` as the Ernie basic tokenizer splits them (lower-cased)."""
    from paddlenlp.transformers.bert.tokenizer import BasicTokenizer

    basic = BasicTokenizer(do_lower_case=True)
    counts: collections.Counter[str] = collections.Counter()
    for text in texts:
        for word in basic.tokenize(text):
            if len(word) == 1 or _is_cjk(word[0]):
                counts[word] += 1
                continue
            counts[word[0]] += 1
            counts.update("##" + ch for ch in word[1:])
    kept = [tok for tok, n in counts.most_common() if n >= min_freq]
    # Always spell ASCII letters, digits and punctuation, seen or not, so unseen English and
    # numbers never become [UNK].
    base = [c for c in string.ascii_lowercase + string.digits + string.punctuation]
    extra = base + ["##" + c for c in base]
    vocab = list(SPECIAL_TOKENS)
    seen = set(vocab)
    for tok in extra + kept:
        if tok not in seen:
            vocab.append(tok)
            seen.add(tok)
    if max_size and len(vocab) > max_size:
        vocab = vocab[:max_size]
    return vocab


def run(config: VocabConfig) -> dict:
    """Build and save the tokenizer; write manifest + metrics. Returns the metrics."""
    from paddlenlp.transformers import ErnieTokenizer


    started = time.time()
    texts: list[str] = []
    seen_contexts: set[str] = set()
    for path in config.data_files:
        examples, _ = load_examples(path, mode="eval")
        for ex in examples:
            texts.append(ex.question)
            if ex.context not in seen_contexts:
                seen_contexts.add(ex.context)
                texts.append(ex.context)
    vocab = build_vocab(texts, min_freq=config.min_freq, max_size=config.max_size)
    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    vocab_file = out / "vocab.txt"
    vocab_file.write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = ErnieTokenizer(vocab_file=str(vocab_file))
    tokenizer.save_pretrained(str(out))
    unk = tokenizer.convert_tokens_to_ids("[UNK]")
    sample = texts[:2000]
    ids = [i for t in sample for i in tokenizer(t)["input_ids"]]
    metrics = {
        "vocab_size": len(vocab),
        "texts": len(texts),
        "unk_rate_on_sample": round(sum(i == unk for i in ids) / max(1, len(ids)), 6),
    }
    write_manifest(out, "vocab", to_dict(config), {f"data_{i}": p for i, p in
                                                   enumerate(config.data_files)},
                   {"vocab": vocab_file}, metrics, started=started)
    log.info("saved tokenizer with %d tokens to %s", len(vocab), out)
    return metrics


def vocab_tokens(tokenizer) -> list[str]:
    """The tokenizer's vocabulary in id order (row ``i`` of the word embeddings is token ``i``)."""
    return tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))


def token_counts(tokenizer, ids: np.ndarray) -> dict[str, int]:
    """Occurrences of each token in ``ids`` (any shape), special tokens left out but [UNK]
    (it stands for text the vocabulary lacks)."""
    counts = np.bincount(np.asarray(ids, dtype=np.int64).ravel(), minlength=len(tokenizer))
    special = set(tokenizer.all_special_ids) - {tokenizer.unk_token_id}
    tokens = vocab_tokens(tokenizer)
    return {tokens[i]: int(n) for i, n in enumerate(counts[: len(tokens)]) if n and i not in special}


def load_tokenizer(name_or_dir: str):
    """A PaddleNLP tokenizer from a local folder or a hub name, with a clear error offline."""
    from paddlenlp.transformers import AutoTokenizer

    path = Path(name_or_dir)
    if path.exists() and not path.is_dir():
        raise PaddleQAError(f"tokenizer {name_or_dir}: expected a folder, got a file")
    if path.is_dir() and not any(path.glob("*.txt")) and not (path / "tokenizer_config.json").exists():
        raise PaddleQAError(
            f"tokenizer folder {path} holds no tokenizer files (vocab.txt / tokenizer_config.json); "
            "build one with `paddleqa vocab build DATA.json --out DIR`"
        )
    vocab_files = ("vocab.txt", "vocab.json", "sentencepiece.bpe.model", "spm.model", "tokenizer.json")
    if path.is_dir() and not any((path / f).exists() for f in vocab_files) and not any(path.glob("*.model")):
        raise PaddleQAError(
            f"tokenizer folder {path} has no vocabulary file ({path / 'vocab.txt'} is missing); copy the "
            "model's vocab.txt there, or point --tokenizer at the folder that has it")
    try:
        return AutoTokenizer.from_pretrained(str(name_or_dir))
    except Exception as exc:  # PaddleNLP raises OSError/ValueError/requests errors when offline
        if path.is_dir():
            raise PaddleQAError(f"cannot load the tokenizer in {path}: {exc}") from None
        raise PaddleQAError(
            f"cannot load tokenizer {name_or_dir!r} from the model hub ({type(exc).__name__}: {exc}). "
            "Without network, pass a local directory instead: a downloaded model folder, or one made by "
            "`paddleqa vocab build DATA.json --out DIR`"
        ) from None
