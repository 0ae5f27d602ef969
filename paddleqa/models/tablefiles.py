"""Embedding-table files read without running code or importing paddle: a tensor in Paddle's
LoDTensor format, word2vec text, ``.npy``, vocabularies (``token`` or ``id\ttoken`` lines) and
LAC's ``q2b.dic`` normalisation map.

The trained tables that ship inside ``jieba`` and ``LAC`` (``word_emb``) are single tensors
written by Paddle 1.x ``save_vars``. Read by hand: ``paddle.load`` cannot open them alone (it
needs the ``__model__`` program, or expects a pickle), and importing paddle would load the whole
framework to read six header fields. The layout::

    u32 version (0) | u64 lod_level | per level: u64 byte size + that many bytes (offsets)
    u32 tensor version (0) | i32 size of a TensorDesc protobuf | the protobuf | raw data

``TensorDesc`` (framework.proto): field 1 varint ``data_type`` (5 = FP32), field 2 repeated
int64 ``dims`` (packed or not). The data is little-endian, C order.
"""
from __future__ import annotations

import math
import struct
from pathlib import Path

import numpy as np

from ..core.errors import DataError

FP32 = 5  # framework.proto VarType.Type; the others (FP16 = 4, FP64 = 6, ...) are refused
_DTYPE_NAMES = {0: "BOOL", 1: "INT16", 2: "INT32", 3: "INT64", 4: "FP16", 5: "FP32", 6: "FP64",
                20: "UINT8", 21: "INT8", 22: "BF16"}
_MAX_LOD_LEVELS = 8
_FIX = "re-install the package that ships it, or re-save the table (numpy .npy + a vocab file)"


def _varint(buf: bytes, pos: int, path: Path) -> tuple[int, int]:
    """One base-128 varint at ``pos``: (value, next position). A protobuf library is not used
    for two fields (and ``framework_pb2`` comes only with paddle)."""
    value = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise DataError(path, "the tensor description (protobuf) is cut short or malformed",
                            _FIX)
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def _signed64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def parse_tensor_desc(buf: bytes, path: Path) -> tuple[int, list[int]]:
    """(data_type, dims) of a serialised ``TensorDesc``; unknown fields are skipped."""
    data_type, dims, pos = None, [], 0
    while pos < len(buf):
        key, pos = _varint(buf, pos, path)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos, path)
            if field == 1:
                data_type = value
            elif field == 2:
                dims.append(_signed64(value))
        elif wire == 2:
            size, pos = _varint(buf, pos, path)
            end = pos + size
            if end > len(buf):
                raise DataError(path, "the tensor description (protobuf) is cut short", _FIX)
            if field == 2:  # packed dims
                while pos < end:
                    value, pos = _varint(buf, pos, path)
                    dims.append(_signed64(value))
            pos = end
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
        else:
            raise DataError(path, f"the tensor description has an unknown protobuf wire type {wire}",
                            _FIX)
    if data_type is None:
        raise DataError(path, "the tensor description names no data type", _FIX)
    return data_type, dims


def _read(fmt: str, data: bytes, pos: int, path: Path, what: str) -> tuple[int, int]:
    size = struct.calcsize(fmt)
    if pos + size > len(data):
        raise DataError(path, f"file ends inside the header ({what}) after {len(data)} bytes: "
                        "not a complete Paddle tensor file", _FIX)
    return struct.unpack_from(fmt, data, pos)[0], pos + size


def read_tensor(path: str | Path) -> np.ndarray:
    """The float32 array saved in the Paddle tensor file ``path`` (any rank).

    Raises :class:`DataError` naming the file when it is missing, cut short, not version 0, not
    FP32, when the dims do not match the data length, or when a value is not finite.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(path, f"cannot read the tensor file ({exc.strerror or exc})",
                        "check the path") from None
    version, pos = _read("<I", data, 0, path, "version")
    if version != 0:
        raise DataError(path, f"not a Paddle tensor file: version {version}, expected 0", _FIX)
    levels, pos = _read("<Q", data, pos, path, "lod level")
    if levels > _MAX_LOD_LEVELS:
        raise DataError(path, f"not a Paddle tensor file: lod level {levels}", _FIX)
    for _ in range(levels):
        size, pos = _read("<Q", data, pos, path, "lod offsets")
        pos += size
    tensor_version, pos = _read("<I", data, pos, path, "tensor version")
    if tensor_version != 0:
        raise DataError(path, f"not a Paddle tensor file: tensor version {tensor_version}, "
                        "expected 0", _FIX)
    desc_size, pos = _read("<i", data, pos, path, "description size")
    if desc_size < 0 or pos + desc_size > len(data):
        raise DataError(path, f"the tensor description size {desc_size} does not fit the file "
                        f"({len(data)} bytes)", _FIX)
    data_type, dims = parse_tensor_desc(data[pos:pos + desc_size], path)
    pos += desc_size
    if data_type != FP32:
        raise DataError(path, f"the tensor is {_DTYPE_NAMES.get(data_type, data_type)}, only FP32 "
                        "tables are read", "save the table as float32")
    if not dims or any(d <= 0 for d in dims):
        raise DataError(path, f"the tensor has invalid dims {dims}", _FIX)
    expected = math.prod(dims) * 4
    if len(data) - pos != expected:
        raise DataError(path, f"dims {dims} need {expected} bytes of float32 data, the file holds "
                        f"{len(data) - pos}: the file is truncated or corrupt", _FIX)
    array = np.frombuffer(data, dtype="<f4", offset=pos).reshape(dims).astype(np.float32)
    if not np.isfinite(array).all():
        bad = np.argwhere(~np.isfinite(array))[0].tolist()
        raise DataError(path, f"the tensor holds non-finite values (first at index {bad})", _FIX)
    return array


# ------------------------------------------------------------------------------ text formats
_VOCAB_FIX = ("write one token per line in row order, or `id<TAB>token` lines, one per table "
              "row (ids may skip rows no token names)")


def _lines(path: Path) -> list[str]:
    """The file's lines without their line ends (a final newline adds no empty line)."""
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise DataError(path, f"cannot read the file ({exc.strerror or exc})", "check the path") from None
    except UnicodeDecodeError as exc:
        raise DataError(path, f"not UTF-8 text (bad byte at offset {exc.start})",
                        "save the file as UTF-8") from None
    lines = [line.rstrip("\r") for line in text.split("\n")]
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def read_vocab(path: str | Path, rows: int, table: str | Path = "") -> list[str]:
    """The token of each of the ``rows`` table rows ("" for a row no token names).

    Two formats, told apart by the whole file: when every line is ``digits<TAB>token`` (jieba's
    and LAC's ``word.dic``) the number is the row; otherwise each line is one token in row
    order. Only the line end is stripped (LAC's row 0 is a space).
    """
    path = Path(path)
    lines = _lines(path)
    if not lines:
        raise DataError(path, "the vocabulary file is empty", _VOCAB_FIX)
    split = [line.split("\t", 1) for line in lines]
    if all(len(p) == 2 and p[0].isdigit() and p[0].isascii() for p in split):
        tokens = [""] * rows
        seen: dict[int, int] = {}
        for number, (row_text, token) in enumerate(split, 1):
            row = int(row_text)
            if row >= rows:
                raise DataError(path, f"line {number}: id {row} is past the last row of the table "
                                f"{table} ({rows} rows)", _VOCAB_FIX, record=str(number))
            if row in seen:
                raise DataError(path, f"line {number}: id {row} was given on line {seen[row]} too",
                                _VOCAB_FIX, record=str(number))
            seen[row] = number
            tokens[row] = token
        if max(seen) != rows - 1:
            raise DataError(path, f"ids end at {max(seen)}, but the table {table} has {rows} rows",
                            "use the vocabulary saved with this table")
        return tokens
    if len(lines) != rows:
        raise DataError(path, f"{len(lines)} tokens for the {rows} rows of table {table}",
                        "use the vocabulary saved with this table; " + _VOCAB_FIX)
    for number, token in enumerate(lines, 1):
        if not token:
            raise DataError(path, f"line {number} is empty", _VOCAB_FIX, record=str(number))
    return lines


def read_word2vec(path: str | Path) -> tuple[list[str], np.ndarray]:
    """(tokens, float32 vectors) of a word2vec text file: ``token v1 .. vd`` lines (the token
    ends at the first space), with an optional ``count dim`` first line that is then checked."""
    path = Path(path)
    lines = _lines(path)
    header = lines[0].split() if lines else []
    start, count, dim = 0, None, None
    if len(header) == 2 and all(h.isdigit() for h in header):
        start, count, dim = 1, int(header[0]), int(header[1])
    fix = "each line needs the token and the same number of values (word2vec text format)"
    tokens, rows = [], []
    for number in range(start + 1, len(lines) + 1):
        token, _, rest = lines[number - 1].partition(" ")
        values = rest.split()
        if dim is None:
            dim = len(values)
        if not token or len(values) != dim or not dim:
            raise DataError(path, f"line {number}: {len(values)} values after token {token!r}, "
                            f"expected {dim}", fix, record=str(number))
        try:
            row = np.array(values, dtype=np.float32)
        except ValueError:
            raise DataError(path, f"line {number}: a value is not a number", fix,
                            record=str(number)) from None
        if not np.isfinite(row).all():
            raise DataError(path, f"line {number}: non-finite value (nan/inf)",
                            "re-export the table", record=str(number))
        tokens.append(token)
        rows.append(row)
    if not rows:
        raise DataError(path, "no vectors in the file", fix)
    if count is not None and count != len(rows):
        raise DataError(path, f"the header says {count} rows, the file has {len(rows)}",
                        "the file is truncated, or fix its first line")
    return tokens, np.stack(rows)


def read_npy(path: str | Path) -> np.ndarray:
    """A 2-D float table from ``.npy`` (``allow_pickle=False``: loading never runs code)."""
    path = Path(path)
    fix = "save a 2-D float array with numpy.save"
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(path, f"cannot read the .npy file ({exc})", fix) from None
    if array.ndim != 2 or array.dtype.kind != "f" or 0 in array.shape:
        raise DataError(path, f"expected a 2-D float array, found {array.dtype} {array.shape}", fix)
    array = array.astype(np.float32)
    if not np.isfinite(array).all():
        row = int(np.argwhere(~np.isfinite(array))[0][0])
        raise DataError(path, f"non-finite values (first in row {row})", "re-export the table")
    return array


def read_q2b(path: str | Path) -> dict[str, str]:
    """LAC's ``q2b.dic``: ``src<TAB>dst`` lines (full width -> half width, Traditional ->
    Simplified, upper -> lower case), applied to a token's characters before lookup."""
    path = Path(path)
    mapping = {}
    for number, line in enumerate(_lines(path), 1):
        parts = line.split("\t")
        if len(parts) != 2 or not parts[0]:
            raise DataError(path, f"line {number}: expected `src<TAB>dst`", record=str(number),
                            fix="one replacement per line")
        mapping[parts[0]] = parts[1]
    return mapping
