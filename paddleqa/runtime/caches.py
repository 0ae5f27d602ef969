"""What the on-disk caches hold, and removing them (``paddleqa cache list`` / ``clean``).

Three writers share one folder (a stage's ``cache_dir``, by default ``$PADDLEQA_CACHE/features``,
i.e. ``~/.cache/paddleqa/features``), and nothing else ever deletes their files:

- ``features``: tokenized windows per data file and settings (``train-KEY.npz`` /
  ``eval-KEY.npz``, :func:`paddleqa.text.features.cached_features`), tens to hundreds of MiB;
- ``corpus``: pre-training text packed into sequences (``corpus-KEY.npz`` + ``.json``, the
  pretrain stage);
- ``teacher-outputs``: a teacher's logits and hidden states per training window
  (``teacher-outputs/KEY/``, :mod:`paddleqa.models.teachercache`), up to GiBs each.

Every entry is rebuilt by the run that needs it, so removing one only costs time. Only files
these writers name are listed or removed; anything else in the folder is left alone. An entry
whose lock another process holds (a cache being built, a teacher cache open in a training run)
is kept and reported as in use. Written by hand: none of the libraries manages these files.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from ..models.teachercache import IN_USE, META, nbytes

log = logging.getLogger(__name__)

KINDS = ("features", "corpus", "teacher-outputs")
_FEATURES = re.compile(r"^(train|eval)-[0-9a-f]{24}\.npz$")
_CORPUS = re.compile(r"^corpus-([0-9a-f]{24})\.npz$")
_TEACHER = re.compile(r"^[0-9a-f]{24}$")


@dataclass(frozen=True)
class CacheEntry:
    kind: str
    path: Path                 # the file or folder a user would recognise
    files: tuple[Path, ...]    # everything removing the entry deletes
    lock: Path                 # held by a process building or using it
    disk_bytes: int            # allocated on disk (teacher caches are sparse until filled)
    last_used: float           # epoch seconds
    detail: dict = field(default_factory=dict)

    def as_json(self, now: float) -> dict:
        return {"kind": self.kind, "path": str(self.path), "disk_bytes": self.disk_bytes,
                "disk_mib": round(self.disk_bytes / 2**20, 1),
                "last_used": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.last_used)),
                "age_days": round((now - self.last_used) / 86400, 2), **self.detail}


def _disk_bytes(path: Path) -> int:
    paths = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]
    return sum(p.stat().st_blocks * 512 for p in paths if p.exists())


def _teacher_entry(folder: Path) -> CacheEntry:
    detail: dict = {}
    try:
        meta = json.loads((folder / META).read_text(encoding="utf-8"))
        done = np.load(folder / "done.npy", mmap_mode="r", allow_pickle=False)
        detail = {"windows": int(done.shape[0]), "cached_windows": int(np.count_nonzero(done)),
                  "full_gib": round(nbytes(meta["arrays"]) / 2**30, 2)}
        last = (folder / META).stat().st_mtime
    except (OSError, ValueError, KeyError, TypeError) as exc:  # half-created or damaged: still ours
        detail = {"unreadable": str(exc)}
        last = folder.stat().st_mtime
    return CacheEntry("teacher-outputs", folder, (folder,), folder / IN_USE, _disk_bytes(folder),
                      last, detail)


def entries(root: str | Path) -> list[CacheEntry]:
    """The caches under ``root`` (a stage's ``cache_dir``), oldest use first."""
    root = Path(root)
    found: list[CacheEntry] = []
    if not root.is_dir():
        return found
    for p in root.iterdir():
        if p.is_file() and _FEATURES.match(p.name):
            found.append(CacheEntry("features", p, (p,), root / ".locks" / f"{p.stem}.lock",
                                    _disk_bytes(p), p.stat().st_mtime))
        elif p.is_file() and _CORPUS.match(p.name):
            record = p.with_suffix(".json")
            files = (p, record) if record.exists() else (p,)
            found.append(CacheEntry("corpus", p, files, p.with_suffix(".lock"),
                                    sum(_disk_bytes(f) for f in files), p.stat().st_mtime))
    teachers = root / "teacher-outputs"
    if teachers.is_dir():
        found += [_teacher_entry(p) for p in teachers.iterdir() if p.is_dir() and _TEACHER.match(p.name)]
    return sorted(found, key=lambda e: e.last_used)


@contextlib.contextmanager
def _unused(entry: CacheEntry) -> Iterator[bool]:
    """Holds the entry's lock exclusively for the body when no other process holds it (yields
    True), else yields False at once. A feature or corpus build that starts meanwhile waits on
    that lock and then rebuilds the file; a teacher cache takes its in-use lock only after
    opening its arrays, so a training run opening it during the removal is not held back."""
    entry.lock.parent.mkdir(parents=True, exist_ok=True)
    with open(entry.lock, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def clean(root: str | Path, *, kinds: tuple[str, ...] = KINDS, older_than_days: float = 0.0,
          dry_run: bool = False, now: float | None = None) -> dict:
    """Remove the caches under ``root`` of ``kinds`` last used more than ``older_than_days``
    ago, except those in use; returns what was removed (or would be, with ``dry_run``), what
    was kept because it is in use, and the bytes freed."""
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        raise ValueError(f"unknown cache kind(s) {unknown}; valid: {list(KINDS)}")
    if older_than_days < 0:
        raise ValueError(f"older_than_days must be >= 0, got {older_than_days}")
    now = time.time() if now is None else now
    removed, in_use, freed = [], [], 0
    for entry in entries(root):
        if entry.kind not in kinds or now - entry.last_used < older_than_days * 86400:
            continue
        with _unused(entry) as free:
            if not free:
                in_use.append(str(entry.path))
                continue
            if not dry_run:
                for f in entry.files:
                    shutil.rmtree(f) if f.is_dir() else f.unlink(missing_ok=True)
                log.info("removed %s cache %s (%.1f MiB)", entry.kind, entry.path, entry.disk_bytes / 2**20)
        removed.append(str(entry.path))
        freed += entry.disk_bytes
    return {"root": str(root), "dry_run": dry_run, "removed": removed, "in_use": in_use,
            "freed_bytes": freed, "freed_mib": round(freed / 2**20, 1)}
