"""Data-parallel training under Paddle's launcher: replicas stay identical, rank 0 alone talks,
and a kill -9 of the whole job resumes to the same weights."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

from conftest import REPO, tiny_pipeline_doc

FINETUNE = {"epochs": 3, "batch_size": 1, "save_steps": 2, "eval_each_epoch": False}


def _setup(base: Path, tiny_json: Path, **over) -> Path:
    base.mkdir()
    doc = tiny_pipeline_doc(base, tiny_json, tiny_json, **{**FINETUNE, **over})
    cfg = base / "run.yaml"
    cfg.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    subprocess.run([sys.executable, "-m", "paddleqa.cli", "-q", "run", str(cfg), "--only", "vocab"],
                   check=True, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"})
    return cfg


def _finetune(cfg: Path, *extra: str, **popen):
    cmd = [sys.executable, "-m", "paddleqa.cli", "finetune", "--config", str(cfg), "--nproc", "2", *extra]
    return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "2"}, **popen)


def _weights(base: Path) -> dict:
    import paddle

    state = paddle.load(str(base / "run" / "teacher" / "model" / "model_state.pdparams"))
    return {k: v.numpy() for k, v in state.items()}


def test_two_process_training_keeps_replicas_identical(tmp_path, tiny_json):
    cfg = _setup(tmp_path / "dp", tiny_json)
    proc = _finetune(cfg)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-2000:]
    metrics = json.loads(out)
    assert metrics["replicas_identical"] is True and len(metrics["replica_weight_sha256"]) == 2
    logs = tmp_path / "dp" / "run" / "teacher" / "launch_logs"
    rank1 = (logs / "workerlog.1").read_text(encoding="utf-8", errors="replace")
    assert "INFO paddleqa" not in rank1 and "features:" not in rank1  # rank 0 alone talks
    assert "INFO paddleqa" in (logs / "workerlog.0").read_text(encoding="utf-8", errors="replace")


def test_kill_9_of_a_data_parallel_run_resumes_to_the_same_weights(tmp_path, tiny_json):
    longer = {"epochs": 40, "save_steps": 4}  # ~60 steps: time to kill it mid-run
    straight = _setup(tmp_path / "straight", tiny_json, **longer)
    killed = _setup(tmp_path / "killed", tiny_json, **longer)
    proc = _finetune(straight)
    assert proc.wait(timeout=600) == 0
    proc = _finetune(killed, start_new_session=True)
    ckpt = tmp_path / "killed" / "run" / "teacher" / "checkpoints" / "checkpoint-4"
    deadline = time.time() + 600
    while not (ckpt / "trainer_state.json").exists() and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the launcher and both ranks at once
    proc.wait()
    assert not (tmp_path / "killed" / "run" / "teacher" / "model").exists()
    proc = _finetune(killed, "--resume")
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-2000:]
    assert json.loads(out)["resumed_from"].startswith("checkpoint-")
    a, b = _weights(tmp_path / "straight"), _weights(tmp_path / "killed")
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=0, atol=1e-6, err_msg=k)


LOCKER = r"""
import sys, time
from pathlib import Path
from paddleqa.core.distributed import file_lock
lock, marker, me = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
with file_lock(lock, "test"):
    if marker.exists():
        print(me, "found")
    else:
        time.sleep(1.0)  # "building"
        marker.write_text(me)
        print(me, "built")
"""


def test_one_process_builds_the_others_wait_and_reuse(tmp_path):
    procs = [subprocess.Popen([sys.executable, "-c", LOCKER, str(tmp_path / "x.lock"),
                               str(tmp_path / "built"), str(i)], cwd=REPO, stdout=subprocess.PIPE, text=True)
             for i in range(3)]
    outs = sorted(p.communicate(timeout=60)[0].split()[1] for p in procs)
    assert outs == ["built", "found", "found"]
