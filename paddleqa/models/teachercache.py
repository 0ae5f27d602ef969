"""The teacher's outputs per training window, kept on disk after their first use.

A distillation step spends most of its time in the teacher's forward pass (measured on the
headline student: 3.8 s per KD step against 1.1 s for the same student on labels alone), yet
the teacher is frozen, in eval mode, and sees the same clean windows every epoch, every
autocompress trial and the prune stage's recovery. So each window's teacher start/end logits
(float32) and the hidden states the objective compares (float16) are written to memory-mapped
files the first time a batch computes them, and read back on every later visit: TextBrewer's
``is_caching_logits``, made lazy so that a run never pays more teacher time than without the
cache (its first epoch is the live teacher) and shared by data-parallel ranks (one file per
array, opened by every rank; a window's ``done`` flag is set only after its rows are written).

Written by hand: neither PaddleNLP's Trainer nor PaddleSlim's distillers cache teacher outputs.
The files are plain ``.npy`` arrays opened with numpy's memory map (no pickle, no code), in a
folder named by a key over the teacher's files, the windows' token ids and what is cached, so
another teacher or other windows never read them. Attention maps are not cached (a
``[heads, seq, seq]`` map per window is too large); an objective with an attention term runs
the teacher live.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Sequence

import numpy as np

from ..core.distributed import file_lock
from ..core.manifest import sha256_path

log = logging.getLogger(__name__)

CACHE_VERSION = 1
META = "meta.json"
# Held shared by every process that has the cache open (``paddleqa cache clean`` skips a
# folder whose lock it cannot take exclusively); separate from ``.lock``, which is taken
# exclusively while the files are created.
IN_USE = "in-use.lock"


def cache_key(teacher_dir: str | Path, feats: dict[str, np.ndarray], hidden_layers: Sequence[int]) -> str:
    """Names what the cached outputs depend on: the teacher's files, every window's ids, types and
    length, and which hidden states are kept."""
    h = hashlib.sha256(json.dumps({"version": CACHE_VERSION, "hidden": sorted(hidden_layers),
                                   "teacher": sha256_path(teacher_dir)}).encode())
    for name in ("input_ids", "token_type_ids", "length"):
        h.update(np.ascontiguousarray(feats[name]).tobytes())
    return h.hexdigest()[:24]


class TeacherCache:
    """Teacher start/end logits and hidden states (``hidden_layers``, index 0 = the embeddings'
    output) for ``n`` windows of at most ``max_len`` tokens, in ``folder``.

    :meth:`get` returns a batch's outputs when every one of its windows is cached (else None:
    the caller runs the teacher and hands the outputs to :meth:`put`). ``stats`` counts this
    process's batches read from the cache (``hits``) and computed (``misses``).
    """

    def __init__(self, folder: str | Path, n: int, max_len: int, hidden_layers: Sequence[int],
                 hidden_size: int):
        self.folder = Path(folder)
        self.hidden_layers = tuple(sorted(set(hidden_layers)))
        shapes = array_shapes(n, max_len, self.hidden_layers, hidden_size)
        self.folder.mkdir(parents=True, exist_ok=True)
        with file_lock(self.folder / ".lock", f"creating the teacher cache {self.folder}"):
            if not (self.folder / META).exists():
                for name, (shape, dtype) in shapes.items():  # sparse files: zeros until written
                    np.lib.format.open_memmap(self.folder / f"{name}.npy", mode="w+", dtype=dtype,
                                              shape=shape).flush()
                meta = {"version": CACHE_VERSION, "arrays": {k: [list(s), d] for k, (s, d) in shapes.items()}}
                tmp = self.folder / f"{META}.{os.getpid()}.tmp"
                tmp.write_text(json.dumps(meta), encoding="utf-8")
                os.replace(tmp, self.folder / META)
                log.info("teacher cache %s: %d windows, up to %.2f GiB when full", self.folder, n,
                         nbytes(shapes) / 2**30)
        self.arrays = {}
        for name, (shape, dtype) in shapes.items():
            arr = np.load(self.folder / f"{name}.npy", mmap_mode="r+", allow_pickle=False)
            if arr.shape != shape or arr.dtype != np.dtype(dtype):
                raise ValueError(f"teacher cache {self.folder / name}.npy holds {arr.dtype} "
                                 f"{arr.shape}, expected {dtype} {shape}; delete the folder")
            self.arrays[name] = arr
        self._in_use = open(self.folder / IN_USE, "a+")
        fcntl.flock(self._in_use, fcntl.LOCK_SH)
        os.utime(self.folder / META)  # its mtime is the cache's last use
        self.stats = {"path": str(self.folder), "hits": 0, "misses": 0}

    def close(self) -> None:
        """Flush the arrays and release the in-use lock (also done when the process ends)."""
        for arr in self.arrays.values():
            arr.flush()
        self.arrays = {}
        if not self._in_use.closed:
            self._in_use.close()  # closing the file releases its flock

    def get(self, windows: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray, dict[int, np.ndarray]] | None:
        """(start [b, width], end [b, width], {layer: hidden [b, width, H] float32}) of the
        windows, zeros past each window's length (padding, which every loss masks); or None
        when any of them is not cached yet."""
        if not self.arrays["done"][windows].all():
            self.stats["misses"] += 1
            return None
        self.stats["hits"] += 1
        logits = np.asarray(self.arrays["logits"][windows, :, :width])
        hidden = {i: np.asarray(self.arrays[f"hidden_{i}"][windows, :width], dtype=np.float32)
                  for i in self.hidden_layers}
        return logits[:, 0], logits[:, 1], hidden

    def put(self, windows: np.ndarray, lengths: np.ndarray, start: np.ndarray, end: np.ndarray,
            hidden: dict[int, np.ndarray]) -> None:
        """Keep the teacher's outputs for ``windows`` (each row up to its true length)."""
        for k, (w, n) in enumerate(zip(windows.tolist(), lengths.tolist())):
            self.arrays["logits"][w, 0, :n] = start[k, :n]
            self.arrays["logits"][w, 1, :n] = end[k, :n]
            for i in self.hidden_layers:
                self.arrays[f"hidden_{i}"][w, :n] = hidden[i][k, :n]
            self.arrays["done"][w] = 1  # last: a window is read only once its rows are complete


def array_shapes(n: int, max_len: int, hidden_layers: Sequence[int], hidden_size: int
                 ) -> dict[str, tuple[tuple[int, ...], str]]:
    """name -> (shape, dtype) of every array a cache of ``n`` windows keeps."""
    shapes = {"logits": ((n, 2, max_len), "float32"), "done": ((n,), "uint8")}
    shapes.update({f"hidden_{i}": ((n, max_len, hidden_size), "float16") for i in sorted(set(hidden_layers))})
    return shapes


def nbytes(shapes: dict[str, tuple[tuple[int, ...], str]]) -> int:
    return sum(int(np.prod(s)) * np.dtype(d).itemsize for s, d in shapes.values())


def open_cache(root: str | Path, teacher_dir: str | Path, feats: dict[str, np.ndarray],
               hidden_layers: Sequence[int], hidden_size: int) -> TeacherCache | None:
    """The cache for these windows and this teacher under ``root``; None (the teacher then runs
    live, with a warning) when the disk cannot hold it full, since a memory-mapped write that
    runs out of space kills the process."""
    n, max_len = feats["input_ids"].shape
    layers = tuple(sorted(set(hidden_layers)))
    folder = Path(root) / cache_key(teacher_dir, feats, layers)
    need = nbytes(array_shapes(n, max_len, layers, hidden_size))
    Path(root).mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(root).free
    if not (folder / META).exists() and free < 1.2 * need:
        log.warning("teacher cache off: it needs up to %.2f GiB in %s and %.2f GiB are free; the "
                    "teacher runs live on every step", need / 2**30, root, free / 2**30)
        return None
    return TeacherCache(folder, n, max_len, layers, hidden_size)
