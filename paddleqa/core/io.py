"""File I/O every layer shares: atomic writes (readers never see half a file) and reading a JSON
file with errors that name the file, the place and the fix."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping

import yaml

from .errors import DataError


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temp file in the same folder and rename, so readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json(path: str | os.PathLike, data: Any) -> None:
    atomic_write_text(Path(path), json.dumps(data, ensure_ascii=False, indent=2) + "\n")


def write_yaml(data: Mapping[str, Any], path: str | os.PathLike) -> None:
    pass

    atomic_write_text(Path(path), yaml.safe_dump(dict(data), allow_unicode=True, sort_keys=False))


def read_json(path: str | os.PathLike, *, fix: str = "pass a JSON file") -> tuple[Any, bool]:
    """Parse a JSON file; returns (value, bom_removed). Every way it can be unreadable -- missing,
    a folder, not UTF-8, empty, malformed, nested too deeply, a number too long to convert --
    raises :class:`DataError` naming the file, where, and ``fix``."""
    p = Path(path)
    if not p.exists():
        raise DataError(p, "file not found", fix)
    if p.is_dir():
        raise DataError(p, "is a folder, not a JSON file", "pass the .json file inside it")
    raw = p.read_bytes()
    bom = raw.startswith(b"\xef\xbb\xbf")
    if bom:
        raw = raw[3:]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(p, f"not UTF-8: byte 0x{raw[exc.start]:02x} at byte offset {exc.start} (line {line})",
                        "re-encode the file as UTF-8, e.g. `iconv -f GB18030 -t UTF-8 IN.json > OUT.json`") from None
    if not text.strip():
        raise DataError(p, "file is empty", fix)
    try:
        return json.loads(text), bom
    except json.JSONDecodeError as exc:
        snippet = text[max(0, exc.pos - 30): exc.pos + 30].replace("\n", " ")
        raise DataError(p, f"malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg} (near {snippet!r})",
                        "fix the JSON syntax there (a validator such as `python -m json.tool FILE` shows it)") from None
    except RecursionError:
        raise DataError(p, "JSON nested too deeply to read", "flatten the structure; "
                        "no SQuAD/CMRC or predictions file nests more than a few levels") from None
    except ValueError as exc:  # e.g. an integer literal with thousands of digits
        raise DataError(p, f"unreadable JSON value: {exc}", "write numbers of ordinary size") from None
