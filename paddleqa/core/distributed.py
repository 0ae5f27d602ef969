"""Data-parallel helpers: which rank this process is, and a file lock for "one builds, others wait".

Ranks come from the variables ``python -m paddle.distributed.launch`` sets for each process
(``PADDLE_TRAINER_ID``, ``PADDLE_TRAINERS_NUM``); outside the launcher this is rank 0 of 1.
"""
from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path

log = logging.getLogger(__name__)


def rank() -> int:
    return int(os.environ.get("PADDLE_TRAINER_ID", "0") or 0)


def world_size() -> int:
    return int(os.environ.get("PADDLE_TRAINERS_NUM", "1") or 1)


def is_main() -> bool:
    return rank() == 0


def under_launcher() -> bool:
    return "PADDLE_TRAINER_ID" in os.environ


@contextlib.contextmanager
def file_lock(path: str | Path, what: str = ""):
    """An exclusive advisory lock on ``path`` (created if missing), held for the ``with`` body.

    Used around feature caching: the first process to arrive builds the cache file, the others
    block here and then find the file built.
    """
    import fcntl

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for another process to finish %s (lock %s)", what or "its work", path)
            t = time.time()
            fcntl.flock(fh, fcntl.LOCK_EX)
            log.info("lock %s acquired after %.1f s", path, time.time() - t)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
