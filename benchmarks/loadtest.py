"""Load test of `paddleqa serve` on loopback: concurrent clients, good, malformed and hostile requests.

    python benchmarks/loadtest.py [--run runs/cmrc2018] [--clients 64 200] [--requests 3000]
    python benchmarks/loadtest.py --report-only

Serves the headline student's deployed artifact (``paddleqa serve RUN_DIR``: the fastest form the
run's bench stage measured) with the CMRC dev file as knowledge base, in ``--processes`` server
processes, and for each client count sends the same ``--requests`` requests twice: 80% good (half
with a context, half answered from the knowledge base), 10% malformed (invalid JSON,
missing/empty/oversize question, wrong type) and 10% hostile (JSON nested 20,000 deep, a
5,000-digit integer, a lone surrogate, a zero-width-only context, a chunked body over the size
limit, a declared oversize body). Records throughput, latency p50/p99 of good requests (queueing
included), status codes by kind, lost requests (no response), 503s and the server's RSS (all its
processes) before and after each run, next to a capacity estimate: cores / (windows per good
request x the artifact's measured latency per window). Writes the "Load test" section of
BENCHMARKS.md and ``benchmarks/loadtest.json``. Run it alone (`flock -x`): clients and server share
the machine.
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.loadclient import GOOD, HOSTILE, MALFORMED, drive, workload  # noqa: E402
from benchmarks.report import machine_info, record_main  # noqa: E402

RECORD = "benchmarks/loadtest.json"
# CMRC 2018 dev: $CMRC2018_DIR, else ../shared/data/cmrc2018 beside the checkout (data/README.md)
DEV = str(Path(os.environ.get("CMRC2018_DIR") or ROOT.parent / "shared" / "data" / "cmrc2018")
          / "cmrc2018_dev.json")

# ---------------------------------------------------------------- server
def server_rss_mib(pid: int) -> float:
    """RSS of ``pid`` and all its descendants (MiB)."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return round(total / 1024, 1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(server: subprocess.Popen, port: int, log_path: Path) -> dict:
    import httpx

    t0 = time.monotonic()
    while time.monotonic() - t0 < 300:
        if server.poll() is not None:
            sys.exit(f"server exited with {server.returncode}; see {log_path}")
        try:
            r = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
            if r.status_code == 200:
                return r.json()
        except httpx.HTTPError:
            pass
        time.sleep(1)
    sys.exit(f"server not healthy after 300 s; see {log_path}")


def capacity(run_dir: Path, jobs: list, processes: int) -> dict:
    """Windows per good request (the server's own windowing and retrieval, computed here) and
    the requests/s the model alone would allow at the artifact's measured latency."""
    from paddleqa.runtime.artifacts import tokenizer_dir_of
    from paddleqa.service.answer import Answerer
    from paddleqa.service.kb import KnowledgeBase
    from paddleqa.service.select import fastest_artifact
    from paddleqa.service.windows import Windows
    from paddleqa.text.features import feature_params_for
    from paddleqa.text.tokenizer import load_tokenizer

    from paddleqa.service.serve import ServeConfig

    # the form `paddleqa serve RUN_DIR` picks with its defaults
    drop = ServeConfig.__dataclass_fields__["int8_max_f1_drop"].default
    artifact, facts = fastest_artifact(run_dir, drop)
    folder = str(tokenizer_dir_of(artifact))  # the folder the server's predictor reads
    windows = Windows(load_tokenizer(folder), feature_params_for(folder))
    answerer = Answerer(None, KnowledgeBase(DEV), top_k=3)
    counts = collections.defaultdict(list)
    for kind, body in jobs:
        if kind in GOOD:
            req = json.loads(body)
            reading = answerer.retrieve(req["question"], req.get("context"))
            counts[kind].append(len(windows.features(reading.examples)["input_ids"]))
    per_req = {k: round(sum(v) / len(v), 2) for k, v in counts.items()}
    mean = sum(map(sum, counts.values())) / sum(map(len, counts.values()))
    ms = facts["latency_ms_p50"]
    return {"artifact": artifact, "backend": facts["backend"], "latency_ms_per_window": ms,
            "windows_per_request": round(mean, 2), "windows_per_request_by_kind": per_req,
            "model_capacity_rps": round(1000 * processes / (mean * ms), 1)}


# Where a server's busy time goes, from py-spy's raw stacks: the first matching part wins.
PARTS = (("model (ONNX Runtime run)", ("onnxruntime",)),
         ("windows (tokenizing, cutting)", ("service/windows.py",)),
         ("post-processing (best spans)", ("core/postprocess.py",)),
         ("retrieval (jieba + BM25)", ("service/kb.py", "jieba")),
         ("HTTP, JSON, input checks, queueing, other", ("",)))
# Leaf frames of waiting: the supervising parent's sleep, idle predictor/pool threads, the event loop's select.
IDLE = ("thread.py:81", "service/processes.py", "select", "queue.py", "threading.py:3", "time.sleep")


def start_profile(py_spy: str, pid: int, out: Path) -> subprocess.Popen:
    return subprocess.Popen([py_spy, "record", "--pid", str(pid), "--subprocesses", "--rate", "50",
                             "--format", "raw", "--output", str(out), "--nonblocking"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def profile_shares(raw: Path) -> dict:
    """Share of the server processes' busy samples per part of a request (PARTS)."""
    counts, total = collections.Counter(), 0
    for line in raw.read_text(encoding="utf-8").splitlines():
        stack, _, n = line.rpartition(" ")
        frames = stack.split(";")
        if not frames[0].startswith("process") or any(k in frames[-1] for k in IDLE) or len(frames) < 4:
            continue  # the supervising parent and threads waiting for work
        total += int(n)
        counts[next(name for name, keys in PARTS if any(k in stack for k in keys))] += int(n)
    return {"busy_samples": total, **{name: round(100 * counts[name] / max(total, 1), 1) for name, _ in PARTS}}


# ---------------------------------------------------------------- measure and report
def summarize(results: list, planned: int, clients: int, repeat: int, wall: float, rss: tuple) -> dict:
    by_kind: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for kind, status, _, _ in results:
        by_kind[kind][str(status)] += 1
    answered = sorted(ms for kind, status, ms, _ in results if kind in GOOD and status == 200)
    got = [r for r in results if isinstance(r[1], int)]

    def pct(p):
        return round(answered[min(len(answered) - 1, int(p / 100 * len(answered)))], 1) if answered else None

    return {
        "clients": clients, "repeat": repeat, "requests": planned, "responses": len(got),
        "lost": planned - len(got), "wall_seconds": round(wall, 2),
        "answered_rps": round(len(answered) / wall, 1), "responses_rps": round(len(got) / wall, 1),
        "latency_ms_p50": pct(50), "latency_ms_p99": pct(99),
        "status_503": sum(1 for _, s, _, _ in got if s == 503),
        "unexpected_errors": sum(1 for k, s, _, _ in got if k in GOOD and s not in (200, 503)),
        "bad_not_4xx": sum(1 for k, s, _, ok in got if k not in GOOD and s != 503 and not (400 <= s < 500 and ok)),
        "rss_mib_before": rss[0], "rss_mib_after": rss[1],
        "status_by_kind": {k: dict(v) for k, v in sorted(by_kind.items())},
    }


def served_teacher(run_dir: Path) -> dict | None:
    """The run's teacher (its model folder and dev scores, as the run's report reads them): the
    model the served student was compressed from."""
    from paddleqa.runtime.report import collect_rows

    row = next((r for r in collect_rows(run_dir) if r["name"] == "teacher"), None)
    return {k: row.get(k) for k in ("path", "dev_em", "dev_f1")} if row else None


def measure(args) -> dict:
    run_dir = ROOT / args.run
    jobs = workload(DEV, args.requests, args.seed)
    cap = capacity(run_dir, jobs, args.processes)
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "MKL_DEBUG_CPU_TYPE": os.environ.get("MKL_DEBUG_CPU_TYPE", "5")}
    cmd = [sys.executable, "-m", "paddleqa.cli", "serve", args.run, "--kb", DEV, "--port", str(port),
           "--processes", str(args.processes), "--workers", "1", "--max-batch", str(args.max_batch)]
    log_path = ROOT / "runs" / "loadtest_server.log"
    print("+", " ".join(cmd), flush=True)
    with open(log_path, "w", encoding="utf-8") as log:
        server = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    runs, profiles = [], {}
    try:
        health = wait_healthy(server, port, log_path)
        asyncio.run(drive(port, workload(DEV, 40, args.seed + 1), 4, args.client_timeout))  # warm-up
        for clients in args.clients:
            for repeat in (1, 2):  # the same requests twice: memory growing on the second is a leak
                before = server_rss_mib(server.pid)
                raw = ROOT / "runs" / f"loadtest_profile_{clients}.txt"  # py-spy's raw stacks
                spy = start_profile(args.py_spy, server.pid, raw) if args.py_spy and repeat == 2 else None
                t0 = time.perf_counter()
                results = asyncio.run(drive(port, jobs, clients, args.client_timeout))
                wall = time.perf_counter() - t0
                if spy is not None:  # the second run of each client count, sampled at 50 Hz
                    spy.send_signal(signal.SIGINT)
                    spy.wait(60)
                    profiles[str(clients)] = profile_shares(raw)
                runs.append(summarize(results, len(jobs), clients, repeat, wall, (before, server_rss_mib(server.pid))))
                print(json.dumps({k: v for k, v in runs[-1].items() if k != "status_by_kind"}), flush=True)
        alive = wait_healthy(server, port, log_path)["status"] == "ok"
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
    return {
        "command": "python benchmarks/loadtest.py " + " ".join(sys.argv[1:]), "machine": machine_info(),
        "server_command": " ".join(["paddleqa"] + cmd[3:]), "served": health["serving"],
        "backend": health["backend"], "kb_passages": health["kb_passages"], "processes": args.processes,
        "max_batch": args.max_batch, "capacity": cap, "runs": runs, "server_alive_after": alive,
        "teacher": served_teacher(run_dir),
        "profile_percent_of_busy_time": profiles,
        "mix": "80% good (half with context, half from the knowledge base), 10% malformed "
               f"({', '.join(sorted(MALFORMED))}), 10% hostile ({', '.join(sorted(HOSTILE))})",
    }


def verdict(r: dict, clients: int = 64) -> tuple[bool, list[str]]:
    first, second = [x for x in r["runs"] if x["clients"] == clients][:2]
    growth = (second["rss_mib_after"] - first["rss_mib_after"]) / first["rss_mib_after"]
    checks = [
        (all(x["answered_rps"] >= 150 for x in (first, second)), ">= 150 answered requests/s"),
        (all(x["latency_ms_p99"] is not None and x["latency_ms_p99"] <= 1000 for x in (first, second)), "p99 <= 1 s"),
        (all(x["lost"] == 0 for x in r["runs"]), "0 lost"),
        (all(x["unexpected_errors"] == 0 for x in r["runs"]), "0 unexpected errors"),
        (all(x["bad_not_4xx"] == 0 for x in r["runs"]), "every malformed/hostile request a 4xx (or 503)"),
        (growth < 0.05, f"RSS growth < 5% on the second run ({100 * growth:+.1f}%)"),
    ]
    return all(ok for ok, _ in checks), [f"{name}: {'met' if ok else 'NOT met'}" for ok, name in checks]


def _teacher_line(t: dict | None) -> str:
    if not t:
        return ("The run's teacher was not recorded by this call (records written before "
                "loadtest.py recorded it); rerun the command to record it.")
    f1 = f"dev F1 {t['dev_f1']:.2f}" if t.get("dev_f1") is not None else "dev F1 not scored"
    return f"The served student was compressed from the run's teacher `{t['path']}` ({f1})."


def render(r: dict) -> str:
    m, cap = r["machine"], r["capacity"]
    lines = [
        "## Load test: `paddleqa serve` under concurrent clients",
        "",
        f"Produced by `{r['command'].strip()}` (raw record: `{RECORD}`). Machine: {m['cpu']} ({m['cores']} cores, "
        f"{m['memory_gib']} GiB), server and clients on the same cores, loopback. Server: `{r['server_command']}` "
        f"serving `{r['served']}` ({r['backend']}, the run's fastest measured form; 1 predictor thread per "
        f"process, micro-batches of up to {r['max_batch']}), knowledge base = the CMRC dev file "
        f"({r['kb_passages']:,} passages, top 3 read per question). Each client count sends the same "
        f"{r['runs'][0]['requests']:,} requests twice: {r['mix']}. Latency: good requests answered 200, "
        "queueing included. " + _teacher_line(r.get("teacher")),
        "",
        "| clients | run | answered/s | responses/s | p50 ms | p99 ms | lost | 503 | unexpected errors | "
        "bad not 4xx | server RSS before / after MiB |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for x in r["runs"]:
        lines.append(f"| {x['clients']} | {x['repeat']} | {x['answered_rps']} | {x['responses_rps']} | "
                     f"{x['latency_ms_p50']} | {x['latency_ms_p99']} | {x['lost']} | {x['status_503']} | "
                     f"{x['unexpected_errors']} | {x['bad_not_4xx']} | {x['rss_mib_before']} / {x['rss_mib_after']} |")
    ok, checks = verdict(r)
    prof = r.get("profile_percent_of_busy_time") or {}
    rest = (" / ".join(f"{100 - p['model (ONNX Runtime run)']:.0f}% ({c} clients)" for c, p in prof.items())
            if prof else "an unprofiled share")
    lines += [
        "",
        f"Capacity estimate: {cap['windows_per_request']} windows per good request "
        f"({', '.join(f'{k}: {v}' for k, v in cap['windows_per_request_by_kind'].items())}) x "
        f"{cap['latency_ms_per_window']} ms per window (the bench stage's p50, batch 1, 384 tokens, 1 thread) "
        f"/ {r['processes']} cores = **{cap['model_capacity_rps']} requests/s** if the model were the only cost; "
        f"measured at {r['runs'][0]['clients']} clients: {r['runs'][0]['answered_rps']} answered/s "
        f"({100 * r['runs'][0]['answered_rps'] / cap['model_capacity_rps']:.0f}% of it). In serving, windows run in "
        "micro-batches padded to their longest member (knowledge-base passages up to ~330 tokens, given contexts up "
        "to 512) rather than alone at 384, the rest of each request takes "
        f"{rest} of the server's busy time (below), and the clients run on the same cores.",
        "",
        f"Status codes by kind ({r['runs'][0]['clients']} clients, first run): " + "; ".join(
            f"{k}: " + ", ".join(f"{s} x{c}" for s, c in sorted(v.items()))
            for k, v in r["runs"][0]["status_by_kind"].items()) + ".",
        "",
        *(["Where the server processes' busy time went (py-spy, 50 Hz, second run; % of samples): " + "; ".join(
            f"{c} clients: " + ", ".join(f"{k} {v}%" for k, v in p.items() if k != "busy_samples")
            for c, p in r["profile_percent_of_busy_time"].items()) + ".", ""] if r.get("profile_percent_of_busy_time") else []),
        f"Targets at 64 clients: {'all met' if ok else 'not all met'} ({'; '.join(checks)}). "
        f"Server healthy afterwards: {'yes' if r['server_alive_after'] else 'NO'}.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default="runs/cmrc2018", help="the run folder whose deployed model is served")
    ap.add_argument("--clients", type=int, nargs="+", default=[64, 200])
    ap.add_argument("--requests", type=int, default=3000, help="requests per run")
    ap.add_argument("--processes", type=int, default=os.cpu_count() or 1, help="server processes")
    ap.add_argument("--max-batch", type=int, default=8)
    ap.add_argument("--client-timeout", type=float, default=60.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--py-spy", default="", help="py-spy executable: profile the server during each "
                    "second run and record where its busy time goes")
    ap.add_argument("--out", default="BENCHMARKS.md")
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args(argv)
    record_main(args.report_only, ROOT / RECORD, "loadtest", lambda: measure(args), render,
                ROOT / args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
