"""Getting CMRC 2018 (CC BY-SA 4.0) for real runs: download with sha256 checks, or use a path.

The files are never shipped with paddleqa. ``paddleqa data fetch-cmrc --out DIR`` downloads the
SQuAD-style train and dev files from the dataset's own repository (or any ``--base-url``, including
``file://`` for a local mirror), checks each against the sha256 this project was tested with, and
writes them atomically. Configs read them from ``${CMRC2018_DIR}``.
"""
from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from ..core.errors import PaddleQAError

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://raw.githubusercontent.com/ymcui/cmrc2018/master/squad-style-data"
FILES = {
    "cmrc2018_train.json": "5497aa2f81908e31d6b0e27d99b1f90ab63a8f58fa92fffe5d17cf62eba0c212",
    "cmrc2018_dev.json": "e9ff74231f05c230c6fa88b84441ee334d97234cbb610991cd94b82db00c7f1f",
}


def fetch(out_dir: str | os.PathLike, base_url: str = DEFAULT_BASE_URL, timeout: float = 60.0) -> dict:
    """Download (or verify, when already there) every CMRC 2018 file into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    done = {}
    for name, expected in FILES.items():
        target = out / name
        if target.exists() and _sha256(target.read_bytes()) == expected:
            log.info("%s already present and verified", target)
            done[name] = str(target)
            continue
        url = f"{base_url.rstrip('/')}/{name}"
        log.info("downloading %s", url)
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:
                data = resp.read()
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise PaddleQAError(
                f"cannot download {url} ({exc}). Without network, copy the files by hand into {out} "
                "or point CMRC2018_DIR at a folder that holds them"
            ) from None
        got = _sha256(data)
        if got != expected:
            raise PaddleQAError(
                f"{url}: sha256 {got} does not match the expected {expected}; the file is damaged or "
                "a different release. Nothing was written"
            )
        fd, tmp = tempfile.mkstemp(dir=out, prefix=f".{name}.")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, target)
        done[name] = str(target)
    return done


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
