"""``--nproc N``: run a training command again under Paddle's data-parallel launcher."""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import subprocess
import sys

from ..core.distributed import is_main, under_launcher
from ..core.errors import PaddleQAError
from .output import print_json

log = logging.getLogger(__name__)


def add_nproc(p: argparse.ArgumentParser) -> None:
    p.add_argument("--nproc", type=int, default=1,
                   help="data-parallel processes on this machine: re-launches the command through "
                        "`python -m paddle.distributed.launch --nproc_per_node N` (CPU: threads "
                        "are split between them; GPU: one device each)")


def relaunch(args: argparse.Namespace, output_dir: str) -> int | None:
    """Run this command again under Paddle's launcher when --nproc > 1 (None: run it here)."""
    if args.nproc <= 1 or under_launcher():
        return None
    argv = list(sys.argv[1:])
    for i, a in enumerate(argv):  # drop --nproc N / --nproc=N
        if a == "--nproc":
            del argv[i: i + 2]
            break
        if a.startswith("--nproc="):
            del argv[i]
            break
    threads = max(1, (os.cpu_count() or 1) // args.nproc)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    log_dir = os.path.join(output_dir, "launch_logs")
    os.makedirs(log_dir, exist_ok=True)
    # The launcher runs a script file; this one imports the installed package absolutely.
    entry = os.path.join(log_dir, "paddleqa_entry.py")
    with open(entry, "w", encoding="utf-8") as fh:
        fh.write("import sys\nfrom paddleqa.cli import main\nsys.exit(main())\n")
    cmd = [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", str(args.nproc),
           "--log_dir", log_dir, entry, *argv]
    log.info("data-parallel: %d processes x %d thread(s); per-rank logs in %s", args.nproc, threads, log_dir)
    # The launcher echoes rank 0 to stdout: keep stdout for the final metrics JSON.
    rc = subprocess.run(cmd, env=env, stdout=sys.stderr).returncode
    if rc != 0:
        raise PaddleQAError(f"data-parallel run failed (exit {rc}); see the rank logs in {log_dir}")
    metrics = os.path.join(output_dir, "metrics.json")
    if os.path.exists(metrics):
        with open(metrics, encoding="utf-8") as fh:
            print_json(json.load(fh))
    return 0


def quiet_rank(cfg):
    """Progress bars and info logs on rank 0 only."""
    return cfg if is_main() else dataclasses.replace(cfg, progress=False)
