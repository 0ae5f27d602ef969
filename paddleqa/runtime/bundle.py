"""The export format: what `paddleqa export` writes and every runtime reads.

File names of the inference model, the ONNX file and a Lite bundle's ``bundle.json``, the
op counts of a serialized program, and the tokenizer files that travel with every artifact.
"""
from __future__ import annotations

import collections
import contextlib
import json
import os
import shutil
import sys
from pathlib import Path

from ..core.errors import PaddleQAError
from ..text.features import TRAINING_INFO

INFERENCE_PREFIX = "inference/model"  # -> inference/model.pdmodel + inference/model.pdiparams


TOKENIZER_FILES = ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json")


BUNDLE = "bundle.json"


ONNX_FILE = "onnx/model.onnx"


ONNX_INT8_FILE = "onnx/model.int8.onnx"  # export --onnx-int8: quantize_dynamic of ONNX_FILE


def program_op_counts(pdmodel: str | Path) -> dict[str, int]:
    """Op type -> count over every block of a serialized ProgramDesc (feed/fetch excluded)."""
    from paddle.base.proto import framework_pb2

    data = Path(pdmodel).read_bytes()
    try:
        prog = framework_pb2.ProgramDesc.FromString(data)
    except Exception as exc:  # protobuf's DecodeError
        raise PaddleQAError(f"{pdmodel}: not a Paddle program ({type(exc).__name__}: {exc}); "
                            "re-export the model") from None
    counts: collections.Counter = collections.Counter()
    for block in prog.blocks:
        for op in block.ops:
            if op.type not in ("feed", "fetch"):
                counts[op.type] += 1
    return dict(sorted(counts.items()))


@contextlib.contextmanager
def stdout_to_stderr():
    """Send C++ writes to file descriptor 1 (opt's progress lines) to stderr meanwhile, so that a
    command's stdout stays the JSON it prints."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def resolve_model_dir(path: str) -> Path:
    """A model folder, or the ``model/`` inside a training stage's output folder."""
    p = Path(path)
    if not p.exists():
        raise PaddleQAError(f"model folder {p} does not exist")
    if p.is_dir() and not (p / "config.json").exists() and (p / "model" / "config.json").exists():
        return p / "model"
    return p


def copy_tokenizer(model_dir: Path, dest: Path) -> None:
    """Tokenizer files and the training record (window settings) of ``model_dir`` into ``dest``."""

    dest.mkdir(parents=True, exist_ok=True)
    for f in (*TOKENIZER_FILES, TRAINING_INFO):
        if (model_dir / f).exists():
            shutil.copy2(model_dir / f, dest / f)


def load_bundle(path: str | Path) -> dict:
    p = Path(path)
    folder = p if p.is_dir() else p.parent
    f = folder / BUNDLE
    if not f.exists():
        return {}
    try:
        return json.loads(f.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise PaddleQAError(f"{f}: not valid JSON ({exc}); re-run `paddleqa export`") from None
