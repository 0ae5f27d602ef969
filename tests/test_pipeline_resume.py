"""`paddleqa run` after a kill -9 resumes without redoing finished stages; a corrupted artifact
is caught by its manifest hash and only its stage runs again."""
import os
import re
import signal
import subprocess
import sys
import time

import yaml

from conftest import REPO, tiny_pipeline_doc


def _run(cfg, **kw):
    return subprocess.Popen([sys.executable, "-m", "paddleqa.cli", "run", str(cfg)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, **kw)


def test_killed_run_resumes_and_a_corrupted_artifact_is_redone(tmp_path, tiny_json):
    doc = tiny_pipeline_doc(tmp_path, tiny_json, tiny_json, epochs=40, batch_size=1, save_steps=4,
                            eval_each_epoch=False)
    doc["export"] = {"targets": ["x86"]}
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    run_dir = tmp_path / "run"
    proc = _run(cfg, start_new_session=True)
    ckpt = run_dir / "teacher" / "checkpoints" / "checkpoint-4" / "trainer_state.json"
    deadline = time.time() + 300
    while not ckpt.exists() and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (run_dir / "teacher" / "model").exists()  # killed mid-training

    out, err = _run(cfg).communicate(timeout=600)
    assert "stage data: up to date, skipped" in err and "stage vocab: up to date, skipped" in err
    # The fine-tune resumed from a checkpoint of the killed run (checkpoint-4, or a later one
    # when the kill landed after the next save), not from the start.
    resumed = re.search(r"resuming from \S*checkpoint-(\d+)", err)
    assert resumed and int(resumed.group(1)) >= 4, err[-2000:]
    assert "training from the start" not in err
    assert (run_dir / "export" / "x86-fp32" / "model.nb").exists()

    # Damage the exported file: the next run notices and redoes export alone.
    nb = run_dir / "export" / "x86-fp32" / "model.nb"
    nb.write_bytes(nb.read_bytes()[:1000])
    out, err = _run(cfg).communicate(timeout=600)
    assert "changed since it was written; redoing the stage" in err
    assert "stage finetune: up to date, skipped" in err and "stage export: running" in err
    assert nb.stat().st_size > 1000
