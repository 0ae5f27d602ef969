"""Run records: sha256 of inputs/outputs, package versions, git commit, atomic file writes."""
from __future__ import annotations

import datetime as _dt
import hashlib
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any, Mapping

from .io import write_json, write_yaml


MANIFEST = "manifest.json"
RESOLVED_CONFIG = "resolved_config.yaml"
METRICS = "metrics.json"


def sha256_path(path: str | os.PathLike) -> str:
    """sha256 of a file, or of a folder (relative names and contents of its files, sorted)."""
    p = Path(path)
    h = hashlib.sha256()
    if p.is_dir():
        for f in sorted(x for x in p.rglob("*") if x.is_file()):
            h.update(str(f.relative_to(p)).encode("utf-8") + b"\0")
            h.update(sha256_path(f).encode("ascii"))
        return h.hexdigest()
    with open(p, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def git_commit() -> str:
    """The commit of the paddleqa checkout this code runs from ("+dirty" if changed), or "unknown"."""
    root = Path(__file__).resolve().parent.parent
    try:
        rev = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        )
        if rev.returncode != 0:
            return "unknown"
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10,
        )
        return rev.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def cpu_model(default: str = "unknown CPU") -> str:
    """The CPU's model name (``/proc/cpuinfo``), else ``platform.processor()``, else ``default``."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or default


# The vector extensions that decide int8 speed: oneDNN's int8 kernels (Paddle Inference's "all
# ops" PTQ) depend on them (AVX-512 VNNI in particular), and two hosts that both call themselves "AMD EPYC" may
# differ here, so the benchmarks' machine lines and the latency table's key carry them.
ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")


def cpu_isa() -> list[str]:
    """Which of ``ISA_FLAGS`` this CPU reports (``/proc/cpuinfo``); empty when unreadable."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                have = set(line.split(":", 1)[1].split())
                return [f for f in ISA_FLAGS if f in have]
    except OSError:
        pass
    return []


def versions() -> dict[str, str]:
    """Versions of Python and the stack packages (imports nothing heavy that is not loaded)."""
    from importlib import metadata

    out = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in ("paddleqa", "paddlepaddle", "paddlenlp", "paddleslim", "paddlelite", "numpy"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    if "paddle" in sys.modules:
        out["paddle_commit"] = getattr(sys.modules["paddle"].version, "commit", "unknown")
    return out


def write_manifest(
    out_dir: str | os.PathLike,
    stage: str,
    config: Mapping[str, Any],
    inputs: Mapping[str, str | os.PathLike | None],
    outputs: Mapping[str, str | os.PathLike | None],
    metrics: Mapping[str, Any],
    *,
    started: float | None = None,
    prefix: str = "",
    status: str = "done",
) -> dict[str, Any]:
    """Write ``manifest.json``, ``resolved_config.yaml`` and ``metrics.json`` into ``out_dir``.

    ``status``: ``done`` when the stage finished (the default), ``running`` for the record a
    stage writes as it starts (:func:`paddleqa.core.freshness.begin`).

    ``prefix`` names them ``{prefix}manifest.json`` etc., for a stage whose output is one file
    in a folder it shares with others (``augment`` writes ``OUT.json`` and ``OUT.manifest.json``).
    """

    out = Path(out_dir)

    def describe(paths: Mapping[str, Any]) -> dict[str, Any]:
        rec = {}
        for name, p in paths.items():
            if p is None:
                continue
            q = Path(p)
            rec[name] = {"path": str(p), "sha256": sha256_path(q) if q.exists() else None}
        return rec

    now = _dt.datetime.now(_dt.timezone.utc)
    manifest = {
        "stage": stage,
        "status": status,
        "created": now.isoformat(timespec="seconds"),
        "wall_seconds": None if started is None else round(now.timestamp() - started, 2),
        "command": sys.argv,
        "git_commit": git_commit(),
        "versions": versions(),
        "config": dict(config),
        "inputs": describe(inputs),
        "outputs": describe(outputs),
        "metrics": dict(metrics),
    }
    write_yaml(config, out / f"{prefix}{RESOLVED_CONFIG}")
    write_json(out / f"{prefix}{METRICS}", dict(metrics))
    write_json(out / f"{prefix}{MANIFEST}", manifest)
    return manifest
