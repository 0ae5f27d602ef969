"""Data-parallel training under Paddle's launcher: replicas stay identical, rank 0 alone talks,
a job whose ranks are all SIGKILLed at one step resumes to the same weights, and the feature-cache
lock lets one process build while the others wait. Kills happen at a fixed step (a Trainer
callback) and the lock test holds the lock itself: nothing depends on timing."""
import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

from conftest import FINETUNE_KILLER, REPO, tiny_pipeline_doc
from paddleqa.core.distributed import file_lock

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


def _launch_killed(base: Path, cfg: Path, kill_at: int) -> subprocess.CompletedProcess:
    """The first part of a 2-process fine-tune under Paddle's launcher, as `--nproc 2` runs it
    (same threads per rank), except that each rank SIGKILLs itself at the end of step
    ``kill_at``. The all-reduce of that step has completed on both ranks by then, and rank 0 saved
    the earlier checkpoints, so what the kill leaves is the same every time. The launcher sees its
    ranks die and exits."""
    driver = base / "finetune_killer.py"  # the launcher runs a script file
    driver.write_text(FINETUNE_KILLER, encoding="utf-8")
    threads = str(max(1, (os.cpu_count() or 1) // 2))
    cmd = [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", "2",
           "--log_dir", str(base / "kill_logs"), str(driver), str(cfg), str(kill_at)]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads})


def test_kill_9_of_a_data_parallel_run_resumes_to_the_same_weights(tmp_path, tiny_json):
    longer = {"epochs": 6, "save_steps": 4}  # 12 steps: a checkpoint at 4 and 8, killed at 6
    straight = _setup(tmp_path / "straight", tiny_json, **longer)
    killed = _setup(tmp_path / "killed", tiny_json, **longer)
    proc = _finetune(straight)
    assert proc.wait(timeout=600) == 0
    launch = _launch_killed(tmp_path / "killed", killed, kill_at=6)
    assert launch.returncode != 0
    log0 = (tmp_path / "killed" / "kill_logs" / "workerlog.0").read_text(encoding="utf-8", errors="replace")
    assert "rank 0: SIGKILL at step 6" in log0, log0[-2000:]  # killed by the callback, nothing else
    teacher = tmp_path / "killed" / "run" / "teacher"
    assert sorted(p.name for p in (teacher / "checkpoints").iterdir()) == ["checkpoint-4"]
    assert not (teacher / "model").exists()
    proc = _finetune(killed, "--resume")
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-2000:]
    assert json.loads(out)["resumed_from"] == "checkpoint-4"
    a, b = _weights(tmp_path / "straight"), _weights(tmp_path / "killed")
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=0, atol=1e-6, err_msg=k)


LOCKER = r"""
import logging, sys
from pathlib import Path
from paddleqa.core.distributed import file_lock
logging.basicConfig(level=logging.INFO, format="%(message)s")  # file_lock says when it waits
lock, marker, me = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
with file_lock(lock, "test"):
    if marker.exists():
        print(me, "found")
    else:
        marker.write_text(me)  # "building"
        print(me, "built")
"""


def _wait_for_text(stream, text: str, timeout: float = 60) -> None:
    """Read ``stream`` until ``text`` has appeared; the timeout only guards against a hang."""
    fd, got, deadline = stream.fileno(), b"", time.monotonic() + timeout
    while text.encode() not in got:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        chunk = os.read(fd, 65536) if ready else b""
        assert chunk, f"no {text!r} in {got.decode(errors='replace')!r} (the child exited or hung)"
        got += chunk


def test_one_process_builds_the_others_wait_and_reuse(tmp_path):
    lock, marker = tmp_path / "x.lock", tmp_path / "built"
    with file_lock(lock, "test"):  # held here until every child is seen blocked on it
        procs = [subprocess.Popen([sys.executable, "-c", LOCKER, str(lock), str(marker), str(i)],
                                  cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for i in range(3)]
        for p in procs:
            _wait_for_text(p.stderr, "waiting for another process")
        assert not marker.exists() and all(p.poll() is None for p in procs)
    # Released: the three were all waiting at once; one builds, the other two find its work.
    outs = sorted(p.communicate(timeout=60)[0].split()[1] for p in procs)
    assert outs == ["built", "found", "found"]


def test_two_process_distillation_shares_one_teacher_cache(tmp_path, tiny_json):
    base = tmp_path / "kd"
    cfg = _setup(base, tiny_json)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "paddleqa.cli", "-q", "run", str(cfg), "--only", "finetune"],
                   check=True, cwd=REPO, env=env)
    doc = yaml.safe_load(cfg.read_text(encoding="utf-8"))
    doc["distill"] = {"epochs": 3, "batch_size": 1, "save_steps": 100, "eval_each_epoch": False,
                      "hidden_weight": 0.5, "student": {"num_layers": 1}}
    cfg.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "paddleqa.cli", "distill", "--config", str(cfg),
                           "--nproc", "2"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = json.loads(proc.stdout)
    assert metrics["replicas_identical"] is True
    stats = metrics["teacher_cache"]
    # epoch 1 computes every window (each rank its half), later epochs read what either wrote
    assert stats["hits"] > 0 and stats["misses"] > 0
    assert np.load(Path(stats["path"]) / "done.npy", allow_pickle=False).all()
