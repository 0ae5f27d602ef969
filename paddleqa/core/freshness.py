"""Does a stage folder's record still stand for this run? One record and one decision, every stage.

The record is the folder's ``manifest.json`` (:mod:`.manifest`). :func:`begin` writes it when a
stage starts: status ``running``, the config, the sha256 of the inputs. ``write_manifest``
completes it when the stage ends: status ``done``, the outputs with their sha256, the metrics.
Two questions are answered from it, here and nowhere else:

- :func:`finished_reason`: ``None`` when the folder holds a finished run of this config on these
  inputs whose outputs are unchanged (the pipeline skips the stage), else why not;
- :func:`resume_reason`: ``None`` when the checkpoints in a training folder were made with this
  config and these inputs (training may continue them), else why not.

Both compare only the fields that change a stage's result: a field declared with
``opt(..., result=False)`` (progress bars, logging, the cache folder, the device) is ignored,
and a field the record lacks counts as its default (:func:`paddleqa.core.config.result_view`).

Folders from before this record: a manifest without a status is a finished run. A training
folder an older paddleqa left unfinished has no manifest but ``resolved_config.yaml`` and
``run_inputs.json``; those two are read in its place (once, with a log line), so its
checkpoints can still be continued.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Mapping

from .config import read_yaml, result_view, to_dict
from .manifest import MANIFEST, RESOLVED_CONFIG, sha256_path, write_manifest

log = logging.getLogger(__name__)

RUNNING, DONE = "running", "done"
LEGACY_INPUTS = "run_inputs.json"  # an older paddleqa's input hashes of an unfinished training run


def input_hashes(inputs: Mapping[str, Any]) -> dict[str, str]:
    """sha256 of each named input that is a local file or folder (others are not recorded)."""
    return {k: sha256_path(p) for k, p in inputs.items() if p and Path(p).exists()}


def begin(out_dir: str | os.PathLike, stage: str, config: Any, inputs: Mapping[str, Any],
          prefix: str = "") -> None:
    """Record that ``stage`` starts in ``out_dir`` with ``config`` on ``inputs``."""
    write_manifest(out_dir, stage, to_dict(config), {k: p for k, p in inputs.items() if p}, {}, {},
                   prefix=prefix, status=RUNNING)


def config_diff(config: Any, recorded: Any) -> list[str]:
    """The result-deciding fields (dotted for nested ones) in which ``config`` differs from a
    recorded ``to_dict`` of a config of its class."""
    cls = type(config)
    new = result_view(cls, to_dict(config))
    old = result_view(cls, recorded) if isinstance(recorded, Mapping) else {}
    return _differing(old, new)


def _differing(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out += _differing(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(prefix + key)
    return out


def read_record(out_dir: str | os.PathLike, prefix: str = "") -> dict[str, Any] | None:
    """The folder's record: its manifest, or an older paddleqa's pair of files; None if neither."""
    out = Path(out_dir)
    try:
        record = json.loads((out / f"{prefix}{MANIFEST}").read_text(encoding="utf-8"))
        return record if isinstance(record, dict) else None
    except FileNotFoundError:
        pass
    except (OSError, ValueError):
        return None
    legacy_config, legacy_inputs = out / f"{prefix}{RESOLVED_CONFIG}", out / LEGACY_INPUTS
    if not legacy_config.exists() or not legacy_inputs.exists():
        return None
    try:
        hashes = json.loads(legacy_inputs.read_text(encoding="utf-8"))
        record = {"status": RUNNING, "config": read_yaml(legacy_config),
                  "inputs": {k: {"sha256": v} for k, v in hashes.items()}}
    except (OSError, ValueError):
        return None
    log.info("%s: no manifest.json; read the run record an earlier paddleqa wrote (%s, %s)",
             out, RESOLVED_CONFIG, LEGACY_INPUTS)
    return record


def recorded_sha(record: Mapping[str, Any], name: str) -> str | None:
    """The sha256 a stage's record (:func:`read_record`) holds for its input ``name``, if any."""
    entry = (record.get("inputs") or {}).get(name)
    return entry.get("sha256") if isinstance(entry, Mapping) else None


def finished_reason(out_dir: str | os.PathLike, config: Any, inputs: Mapping[str, Any],
                    prefix: str = "") -> str | None:
    """Why the stage must run again in ``out_dir``, or None when its finished run stands."""
    record = read_record(out_dir, prefix)
    if record is None:
        return "no finished run recorded"
    if record.get("status", DONE) != DONE:
        return "its last run did not finish"
    diff = config_diff(config, record.get("config"))
    if diff:
        return f"its config differs in: {', '.join(diff)}"
    for name, p in inputs.items():
        if not p:
            continue
        if not Path(p).exists() or recorded_sha(record, name) != sha256_path(p):
            return f"input {name} changed"
    for name, rec in (record.get("outputs") or {}).items():
        path = rec.get("path") if isinstance(rec, Mapping) else None
        if not path or not Path(path).exists() or rec.get("sha256") != sha256_path(path):
            log.warning("%s: output %s changed since it was written; redoing the stage", out_dir, name)
            return f"output {name} changed since it was written"
    return None


def resume_reason(out_dir: str | os.PathLike, config: Any, inputs: Mapping[str, Any]) -> str | None:
    """Why the checkpoints in ``out_dir`` cannot be continued with ``config`` and ``inputs``
    (name -> path of what decides the result besides the config), or None."""
    record = read_record(out_dir)
    if record is None:
        return None
    diff = config_diff(config, record.get("config"))
    if diff:
        return f"its checkpoints were made with a different config (differs in: {', '.join(diff)})"
    changed = sorted(k for k, sha in input_hashes(inputs).items() if recorded_sha(record, k) != sha)
    if changed:
        return f"{', '.join(changed)} changed since its checkpoints were made"
    return None
