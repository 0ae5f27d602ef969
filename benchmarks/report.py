"""Shared pieces of the benchmark commands: machine facts and BENCHMARKS.md sections."""
from __future__ import annotations

import json
import os
import platform
import re
import shlex
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent  # the repository: where every benchmark step runs

HEADER = (
    "# Benchmarks\n\n"
    "Every section below is written by the benchmark command it names; none is typed by hand.\n"
    "Re-running a command replaces its own section only.\n"
)


def machine_info() -> dict:
    from paddleqa.core.manifest import cpu_isa, cpu_model

    isa = cpu_isa()
    cpu = f"{cpu_model()} ({', '.join(isa) if isa else 'no AVX2 or AVX-512 reported'})"
    mem = 0.0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = int(line.split()[1]) / 2**20
                break
    except OSError:
        pass

    def version(pkg: str) -> str:
        try:
            return metadata.version(pkg)
        except metadata.PackageNotFoundError:
            return "not installed"

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "paddlepaddle": version("paddlepaddle"),
        "paddlenlp": version("paddlenlp"),
        "paddleslim": version("paddleslim"),
        "paddlelite": version("paddlelite"),
    }


def replace_section(path: Path, name: str, body: str) -> None:
    """Put ``body`` between this section's markers in ``path`` (appended if new)."""
    begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
    text = path.read_text(encoding="utf-8") if path.exists() else HEADER
    block = f"{begin}\n{body.rstrip()}\n{end}"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def record_main(report_only: bool, record: Path, section: str, measure: Callable[[], dict],
                render: Callable[[dict], str], out: Path) -> dict:
    """The end of every benchmark command: measure and keep the raw JSON ``record`` (with
    ``--report-only``, read the kept one back instead), then write the command's ``section`` of
    ``out`` (BENCHMARKS.md) from it. Returns the record."""
    if report_only:
        result = json.loads(record.read_text(encoding="utf-8"))
    else:
        result = measure()
        record.write_text(json.dumps(result, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    replace_section(out, section, render(result))
    return result


def run_logged(cmd: list[str], env: dict[str, str], log_path: Path, cwd: Path = ROOT) -> float:
    """Run one benchmark step as a child process, its output appended to ``log_path``; exit with a
    message naming the step and the log when it fails. Returns its wall time in seconds."""
    print("+", shlex.join(cmd), flush=True)
    t = time.time()
    with open(log_path, "a", encoding="utf-8") as log:
        log.write(f"\n+ {shlex.join(cmd)}\n")
        log.flush()
        rc = subprocess.run(cmd, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT).returncode
    if rc != 0:
        sys.exit(f"benchmark step failed (exit {rc}): {shlex.join(cmd)}; see {log_path}")
    return time.time() - t
