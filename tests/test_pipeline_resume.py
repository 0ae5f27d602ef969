"""`paddleqa run` after a kill -9 resumes without redoing finished stages; a corrupted artifact
is caught by its manifest hash and only its stage runs again.

The run is killed at a fixed training step by a Trainer callback (``conftest.KILL_AT_STEP``), so
what is on disk at the kill is the same every time: no polling for a checkpoint, no timing.
"""
import os
import json
import re
import subprocess
import sys

import yaml

from conftest import KILL_AT_STEP, REPO, tiny_pipeline_doc

# `paddleqa run CONFIG`, except that the fine-tune SIGKILLs its own process at the end of step N.
KILLER = KILL_AT_STEP + r"""
from paddleqa import pipeline
from paddleqa.core import config

cfg, kill_at = sys.argv[1], int(sys.argv[2])
pipeline.run(config.read_yaml(cfg), callbacks={"finetune": [KillAtStep(kill_at)]})
"""

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _run(cfg):
    return subprocess.run([sys.executable, "-m", "paddleqa.cli", "run", str(cfg)], cwd=REPO, env=ENV,
                          capture_output=True, text=True, timeout=600)


def test_killed_run_resumes_and_a_corrupted_artifact_is_redone(tmp_path, tiny_json):
    # 3 windows x 4 epochs, batch 1: 12 steps, a checkpoint every 4; killed at the end of step 6.
    doc = tiny_pipeline_doc(tmp_path, tiny_json, tiny_json, epochs=4, batch_size=1, save_steps=4,
                            eval_each_epoch=False)
    doc["export"] = {"targets": ["x86"]}
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    run_dir = tmp_path / "run"
    killed = subprocess.run([sys.executable, "-c", KILLER, str(cfg), "6"], cwd=REPO, env=ENV,
                            capture_output=True, text=True, timeout=600)
    assert killed.returncode == -9, killed.stderr[-2000:]  # really SIGKILLed mid-training
    teacher = run_dir / "teacher"
    assert sorted(p.name for p in (teacher / "checkpoints").iterdir()) == ["checkpoint-4"]
    # The record says the run started and did not finish (core/freshness.py).
    record = json.loads((teacher / "manifest.json").read_text(encoding="utf-8"))
    assert not (teacher / "model").exists() and record["status"] == "running" and not record["outputs"]

    err = _run(cfg).stderr
    assert "stage data: up to date, skipped" in err and "stage vocab: up to date, skipped" in err
    assert "stage finetune: running (its last run did not finish)" in err
    # The fine-tune resumed from the killed run's last checkpoint, not from the start.
    resumed = re.search(r"resuming from \S*checkpoint-(\d+)", err)
    assert resumed and resumed.group(1) == "4", err[-2000:]
    assert "training from the start" not in err
    assert (run_dir / "export" / "x86-fp32" / "model.nb").exists()

    # Damage the exported file: the next run notices and redoes export alone.
    nb = run_dir / "export" / "x86-fp32" / "model.nb"
    nb.write_bytes(nb.read_bytes()[:1000])
    err = _run(cfg).stderr
    assert "changed since it was written; redoing the stage" in err
    assert "stage finetune: up to date, skipped" in err and "stage export: running" in err
    assert nb.stat().st_size > 1000
