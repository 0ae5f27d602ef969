"""Load test of `paddleqa serve` on loopback: concurrent clients, mixed good and malformed requests.

    python benchmarks/loadtest.py [--artifact DIR] [--clients 200] [--requests 2000] [--bad 0.1]
    python benchmarks/loadtest.py --report-only

Starts `paddleqa serve ARTIFACT --kb DEV.json` as a child process on a free loopback port, waits
for /healthz, then ``--clients`` concurrent clients (httpx, asyncio) send ``--requests`` requests
in total: half with a context, half answered from the knowledge base (CMRC dev questions), and a
share ``--bad`` malformed in five ways (invalid JSON, missing question, empty question, oversize
question, wrong type). It records latency p50/p99 of good requests, throughput, status counts by
request kind, lost requests (no response), and the server's RSS before and after. Writes the
"Load test" section of BENCHMARKS.md and ``benchmarks/loadtest.json``. Bounded: every request has
a client timeout and the whole run a wall-clock limit.
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.report import machine_info, replace_section  # noqa: E402

RECORD = "benchmarks/loadtest.json"
BAD_KINDS = {
    "invalid_json": lambda q: b'{"question": "' + q.encode("utf-8"),
    "missing_question": lambda q: json.dumps({"context": "没有问题"}).encode("utf-8"),
    "empty_question": lambda q: json.dumps({"question": "   "}).encode("utf-8"),
    "oversize_question": lambda q: json.dumps({"question": "问" * 1000}).encode("utf-8"),
    "wrong_type": lambda q: json.dumps({"question": ["不是", "字符串"]}).encode("utf-8"),
}


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def workload(dev_file: str, n: int, bad: float, seed: int) -> list[tuple[str, bytes]]:
    doc = json.loads(Path(dev_file).read_text(encoding="utf-8"))
    pairs = [(qa["question"], p["context"]) for a in doc["data"] for p in a["paragraphs"] for qa in p["qas"]]
    rng = random.Random(seed)
    out = []
    for i in range(n):
        q, ctx = rng.choice(pairs)
        r = rng.random()
        if r < bad:
            kind = rng.choice(sorted(BAD_KINDS))
            out.append((kind, BAD_KINDS[kind](q)))
        elif r < bad + (1 - bad) / 2:
            out.append(("context", json.dumps({"question": q, "context": ctx[:5000]}, ensure_ascii=False).encode("utf-8")))
        else:
            out.append(("kb", json.dumps({"question": q}, ensure_ascii=False).encode("utf-8")))
    return out


async def drive(url: str, jobs: list[tuple[str, bytes]], clients: int, timeout: float, deadline: float):
    import httpx

    queue: asyncio.Queue = asyncio.Queue()
    for j in jobs:
        queue.put_nowait(j)
    results = []
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=timeout, limits=limits) as client:
        async def worker():
            while time.monotonic() < deadline:
                try:
                    kind, body = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                t = time.perf_counter()
                try:
                    r = await client.post("/answer", content=body, headers={"content-type": "application/json"})
                    status = r.status_code
                    ok_json = True
                    try:
                        r.json()
                    except ValueError:
                        ok_json = False
                except httpx.HTTPError as exc:
                    status, ok_json = f"client error: {type(exc).__name__}", False
                results.append((kind, status, (time.perf_counter() - t) * 1000, ok_json))

        await asyncio.gather(*(worker() for _ in range(clients)))
    return results


def measure(args) -> dict:
    from paddleqa import pipeline
    from paddleqa.core.config import read_yaml

    doc = read_yaml(ROOT / args.config)
    run_dir = ROOT / doc["run_dir"]
    dev = pipeline.stage_configs(doc)["distill_config"].dev_file
    if args.artifact:
        artifact = args.artifact
    else:  # the student the artifacts benchmark ships: best dev F1 in compress.json
        from benchmarks.artifacts import best_student

        artifact = str(best_student(run_dir) / "model")
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "MKL_DEBUG_CPU_TYPE": os.environ.get("MKL_DEBUG_CPU_TYPE", "5")}
    log_path = run_dir / "loadtest_server.log"
    cmd = [sys.executable, "-m", "paddleqa.cli", "serve", artifact, "--kb", dev, "--port", str(port),
           "--workers", str(args.workers), "--max-batch", "8", "--timeout", str(args.server_timeout)]
    print("+", " ".join(cmd), flush=True)
    with open(log_path, "w", encoding="utf-8") as log:
        server = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        import httpx

        t0 = time.monotonic()
        while True:
            if server.poll() is not None:
                sys.exit(f"server exited with {server.returncode}; see {log_path}")
            try:
                if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() - t0 > 300:
                sys.exit(f"server not healthy after 300 s; see {log_path}")
            time.sleep(1)
        warm = workload(dev, 20, 0.0, args.seed + 1)
        asyncio.run(drive(url, warm, 4, args.client_timeout, time.monotonic() + 120))
        rss_before = rss_mib(server.pid)
        jobs = workload(dev, args.requests, args.bad, args.seed)
        start = time.perf_counter()
        results = asyncio.run(drive(url, jobs, args.clients, args.client_timeout,
                                    time.monotonic() + args.max_seconds))
        wall = time.perf_counter() - start
        rss_after = rss_mib(server.pid)
        # The same load again: memory that keeps growing under repeated equal load is a leak;
        # growth during the first run is the allocator reaching its working set.
        again = asyncio.run(drive(url, jobs, args.clients, args.client_timeout,
                                  time.monotonic() + args.max_seconds))
        rss_again = rss_mib(server.pid)
        alive = httpx.get(url + "/healthz", timeout=10).status_code == 200
        again_errors = sum(1 for kind, status, _, _ in again if kind in ("context", "kb") and status != 200)
        server_metrics = httpx.get(url + "/metrics", timeout=10).json()
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
    by_kind: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for kind, status, _, _ in results:
        by_kind[kind][str(status)] += 1
    good = sorted(ms for kind, status, ms, _ in results if kind in ("context", "kb") and status == 200)
    unexpected = sum(1 for kind, status, _, _ in results if kind in ("context", "kb") and status != 200)
    bad_not_4xx = sum(1 for kind, status, _, ok in results if kind in BAD_KINDS
                      and not (isinstance(status, int) and 400 <= status < 500 and ok))

    def pct(p):
        return round(good[min(len(good) - 1, int(p / 100 * len(good)))], 1) if good else None

    return {
        "command": "python benchmarks/loadtest.py " + " ".join(sys.argv[1:]),
        "machine": machine_info(), "artifact": artifact, "kb": dev, "clients": args.clients,
        "requests_planned": args.requests, "responses": len(results),
        "lost": args.requests - len(results), "bad_share": args.bad, "workers": args.workers,
        "wall_seconds": round(wall, 1), "throughput_rps": round(len(results) / wall, 1),
        "latency_ms_p50": pct(50), "latency_ms_p99": pct(99), "status_by_kind": {k: dict(v) for k, v in by_kind.items()},
        "unexpected_errors": unexpected, "malformed_not_4xx": bad_not_4xx,
        "server_rss_mib_before": rss_before, "server_rss_mib_after": rss_after,
        "server_rss_mib_after_second_run": rss_again, "second_run_responses": len(again),
        "second_run_unexpected_errors": again_errors,
        "server_alive_after": alive, "server_metrics": server_metrics,
    }


def render(r: dict) -> str:
    m = r["machine"]
    lines = [
        "## Load test: `paddleqa serve` under concurrent clients",
        "",
        f"Produced by `{r['command'].strip()}` (raw record: `{r.get('record', RECORD)}`). Machine: {m['cpu']} "
        f"({m['cores']} cores); server and clients on the same machine, loopback. Server: "
        f"`{Path(r['artifact']).relative_to(ROOT) if Path(r['artifact']).is_relative_to(ROOT) else r['artifact']}`, "
        f"{r['workers']} predictor thread(s), micro-batches of up to 8, knowledge base = the CMRC dev file. "
        f"{r['clients']} concurrent clients sent {r['requests_planned']:,} requests: half with a "
        f"context, half read from the knowledge base, {100 * r['bad_share']:.0f}% malformed.",
        "",
        "| metric | value |",
        "| --- | ---: |",
        f"| responses / lost | {r['responses']:,} / {r['lost']} |",
        f"| wall time | {r['wall_seconds']} s |",
        f"| throughput | {r['throughput_rps']} requests/s |",
        f"| latency p50 / p99 (good requests, queueing included) | {r['latency_ms_p50']} / {r['latency_ms_p99']} ms |",
        f"| unexpected errors (good requests not 200) | {r['unexpected_errors']} |",
        f"| malformed requests not answered with a JSON 4xx | {r['malformed_not_4xx']} |",
        f"| server RSS before / after the run / after the same load again | {r['server_rss_mib_before']} / "
        f"{r['server_rss_mib_after']} / {r['server_rss_mib_after_second_run']} MiB |",
        f"| second run: responses, unexpected errors | {r['second_run_responses']:,}, {r['second_run_unexpected_errors']} |",
        f"| server healthy afterwards | {'yes' if r['server_alive_after'] else 'NO'} |",
        f"| micro-batches (mean size) | {r['server_metrics'].get('batches')} ({r['server_metrics'].get('mean_batch_size')}) |",
        "",
        "Status codes by request kind: " + "; ".join(
            f"{k}: " + ", ".join(f"{s} x{c}" for s, c in sorted(v.items())) for k, v in sorted(r["status_by_kind"].items())) + ".",
    ]
    growth = r["server_rss_mib_after_second_run"] - r["server_rss_mib_after"]
    ok = (r["unexpected_errors"] == 0 and r["lost"] == 0 and r["malformed_not_4xx"] == 0
          and r["server_alive_after"] and r["second_run_unexpected_errors"] == 0
          and growth < 0.05 * r["server_rss_mib_after"])
    lines += ["", f"Target (0 unexpected errors, 0 lost, every malformed request a 4xx, RSS stable: "
              f"< 5% growth while the same load runs a second time): {'met' if ok else 'not met'} "
              f"(second run {growth:+.1f} MiB; the first run grew it "
              f"{r['server_rss_mib_after'] - r['server_rss_mib_before']:+.1f} MiB from the warm-up state)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/cmrc2018.yaml")
    ap.add_argument("--artifact", default="", help="what to serve (default: the best student of "
                    "benchmarks/compress.json)")
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--bad", type=float, default=0.1, help="share of malformed requests")
    ap.add_argument("--workers", type=int, default=2, help="server predictor threads")
    ap.add_argument("--server-timeout", type=float, default=120.0, help="server per-request limit (s)")
    ap.add_argument("--client-timeout", type=float, default=180.0)
    ap.add_argument("--max-seconds", type=float, default=1800.0, help="wall-clock bound of the run")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="BENCHMARKS.md")
    ap.add_argument("--record", default=RECORD)
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args(argv)
    if args.report_only:
        record = json.loads((ROOT / args.record).read_text(encoding="utf-8"))
    else:
        record = measure(args)
        record["record"] = args.record
        (ROOT / args.record).write_text(json.dumps(record, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    replace_section(ROOT / args.out, "loadtest", render(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
