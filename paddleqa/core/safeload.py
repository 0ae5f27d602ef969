"""Loading weights never runs code: pickles are checked before Paddle unpickles them.

Paddle's ``.pdparams`` files are Python pickles, and ``paddle.load`` (under PaddleNLP's
``from_pretrained``) unpickles them with the standard unpickler, which calls whatever a crafted
file names (``os.system`` ...). The weights paddleqa and PaddleNLP write hold only numpy arrays in
dicts, so before a model folder is handed to Paddle:

* each pickle in it is read by an unpickler that admits only those types (:data:`ALLOWED`) and
  refuses anything else before it is called, and
* when the folder was written by a paddleqa stage, its sha256 must still match the one that
  stage recorded in its ``manifest.json`` (a changed file is refused, not loaded).

``--trust-remote-artifact`` (or ``PADDLEQA_TRUST_ARTIFACTS=1``) skips both checks, for folders
from elsewhere whose pickles hold other types: use it only for files you trust.
"""
from __future__ import annotations

import json
import logging
import os
import pickle
from pathlib import Path

from .errors import PaddleQAError
from .manifest import MANIFEST, sha256_path

log = logging.getLogger(__name__)

TRUST_ENV = "PADDLEQA_TRUST_ARTIFACTS"
PICKLE_SUFFIXES = (".pdparams", ".pdopt")
# What a state dict saved by paddle.save / save_pretrained contains: numpy arrays (rebuilt by
# _reconstruct or _frombuffer, with their dtypes, scalars) inside plain dicts.
ALLOWED = frozenset({
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("collections", "OrderedDict"),
})


class UnsafePickle(PaddleQAError):
    """A pickle that names something other than the array and container types of weights."""


def trusted() -> bool:
    """True when the user asked to skip the checks (``--trust-remote-artifact``)."""
    return os.environ.get(TRUST_ENV, "") not in ("", "0", "false", "no")


class _Restricted(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in ALLOWED:
            raise UnsafePickle(f"{module}.{name}")
        return super().find_class(module, name)


def check_pickle(path: str | os.PathLike) -> None:
    """Read ``path`` with the restricted unpickler; raise :class:`UnsafePickle` naming the file
    and what it would have called. Nothing outside :data:`ALLOWED` is ever imported or run."""
    p = Path(path)
    try:
        with open(p, "rb") as fh:
            _Restricted(fh).load()
    except UnsafePickle as exc:
        raise UnsafePickle(
            f"refusing to load {p}: it is a pickle that would call {exc} when loaded, which model "
            "weights never do (a crafted file can run any code this way). Load only artifacts you "
            "made or trust; if you trust this one, pass --trust-remote-artifact") from None
    except (pickle.UnpicklingError, EOFError, ValueError, MemoryError) as exc:
        raise PaddleQAError(f"{p}: not a readable weights file ({type(exc).__name__}: {exc}); "
                            "it is truncated or damaged: re-create it") from None


def recorded_sha256(folder: Path) -> str | None:
    """The sha256 the stage that wrote ``folder`` recorded for it, or None when no paddleqa stage
    recorded it. The stage's ``manifest.json`` sits beside the folder and names it among its
    outputs; the name decides, so a run folder that was moved or copied keeps its check."""
    manifest = folder.parent / MANIFEST
    try:
        outputs = json.loads(manifest.read_text(encoding="utf-8")).get("outputs", {})
    except (OSError, ValueError, AttributeError):
        return None
    for rec in outputs.values() if isinstance(outputs, dict) else ():
        p = Path(str(rec.get("path", ""))) if isinstance(rec, dict) else Path()
        if p.name == folder.name:
            return rec.get("sha256")
    return None


def verify_model_folder(folder: str | os.PathLike) -> None:
    """The checks above for a model folder, before any of its files is unpickled."""
    if trusted():
        log.warning("%s: loading without checks (--trust-remote-artifact)", folder)
        return
    folder = Path(folder)
    expected = recorded_sha256(folder)
    if expected is not None and sha256_path(folder) != expected:
        raise PaddleQAError(
            f"{folder} changed since the stage that wrote it recorded its sha256 in "
            f"{folder.parent / MANIFEST}: refusing to load it. Re-run that stage, or pass "
            "--trust-remote-artifact if you changed it yourself")
    for f in sorted(folder.iterdir()):
        if f.suffix in PICKLE_SUFFIXES and f.is_file():
            check_pickle(f)
