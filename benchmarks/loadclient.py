"""The load test's client side: the request mix (good, malformed, hostile) and the clients.

``workload`` draws the requests from a CMRC file's questions and passages; ``drive`` sends them
over ``clients`` keep-alive connections and records each one's status and latency. Used by
``benchmarks/loadtest.py``.
"""
from __future__ import annotations

import asyncio
import json
import random
import time
from pathlib import Path

MALFORMED = {
    "invalid_json": lambda q: b'{"question": "' + q.encode("utf-8"),
    "missing_question": lambda q: json.dumps({"context": "没有问题"}).encode("utf-8"),
    "empty_question": lambda q: json.dumps({"question": "   "}).encode("utf-8"),
    "oversize_question": lambda q: json.dumps({"question": "问" * 1000}).encode("utf-8"),
    "wrong_type": lambda q: json.dumps({"question": ["不是", "字符串"]}).encode("utf-8"),
}
HOSTILE = {
    "deep_nesting": lambda q: b"[" * 20_000 + b"]" * 20_000,
    "huge_int": lambda q: b'{"question": ' + b"9" * 5000 + b"}",
    "lone_surrogate": lambda q: b'{"question": "\\ud800' + q.encode("utf-8") + b'"}',
    "zero_width_context": lambda q: json.dumps({"question": q, "context": "\u200b\u200d\u0301\x07"}).encode("utf-8"),
    "chunked_oversize": lambda q: b"x" * 200_000,  # sent chunked, without a length
    "declared_oversize": lambda q: b"x" * 100_000,
}
GOOD = ("context", "kb")


def workload(dev: str, n: int, seed: int, bad: float = 0.1, hostile: float = 0.1) -> list[tuple[str, bytes]]:
    """``n`` requests ``(kind, body)`` over the questions and passages of the CMRC file ``dev``."""
    doc = json.loads(Path(dev).read_text(encoding="utf-8"))
    pairs = [(qa["question"], p["context"]) for a in doc["data"] for p in a["paragraphs"] for qa in p["qas"]]
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        q, ctx = rng.choice(pairs)
        r = rng.random()
        if r < bad:
            kind = rng.choice(sorted(MALFORMED))
            out.append((kind, MALFORMED[kind](q)))
        elif r < bad + hostile:
            kind = rng.choice(sorted(HOSTILE))
            out.append((kind, HOSTILE[kind](q)))
        elif r < bad + hostile + (1 - bad - hostile) / 2:
            out.append(("context", json.dumps({"question": q, "context": ctx[:5000]}, ensure_ascii=False).encode()))
        else:
            out.append(("kb", json.dumps({"question": q}, ensure_ascii=False).encode("utf-8")))
    return out


# ---------------------------------------------------------------- client
# A minimal HTTP/1.1 keep-alive client on asyncio streams instead of httpx: clients and server
# share the 2 cores, and httpx's per-request CPU (~1 ms) would be taken from the server; raw
# requests also let the test send what a library refuses or fixes (a chunked oversize body).
async def _request(conn: list, port: int, kind: str, body: bytes, timeout: float) -> tuple[int, bytes]:
    if conn[0] is None:
        conn[0] = await asyncio.open_connection("127.0.0.1", port)
    reader, writer = conn[0]
    head = b"POST /answer HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    if kind == "chunked_oversize":
        chunks = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 8192]), body[i:i + 8192]) for i in range(0, len(body), 8192))
        writer.write(head + b"Transfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n")
    else:
        writer.write(head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
    status_line = await asyncio.wait_for(reader.readline(), timeout)
    if not status_line:
        raise ConnectionError("closed")
    status = int(status_line.split()[1])
    length, close = 0, False
    while (line := await asyncio.wait_for(reader.readline(), timeout)) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        if name.lower() == "content-length":
            length = int(value)
        elif name.lower() == "connection" and "close" in value.lower():
            close = True
    payload = await asyncio.wait_for(reader.readexactly(length), timeout)
    if close:  # the server closes after refusing a body it did not read: reconnect next time
        writer.close()
        conn[0] = None
    return status, payload


async def drive(port: int, jobs: list, clients: int, timeout: float) -> list[tuple]:
    """(kind, status or error name, ms, JSON body?) for every job; ``clients`` connections."""
    queue: asyncio.Queue = asyncio.Queue()
    for j in jobs:
        queue.put_nowait(j)
    results: list[tuple] = []

    async def client() -> None:
        conn: list = [None]
        while not queue.empty():
            kind, body = queue.get_nowait()
            t = time.perf_counter()
            try:
                status, payload = await _request(conn, port, kind, body, timeout)
                try:
                    json.loads(payload)
                    ok_json = True
                except ValueError:
                    ok_json = False
            except (OSError, asyncio.TimeoutError, ValueError, IndexError, asyncio.IncompleteReadError) as exc:
                status, ok_json = type(exc).__name__, False
                if conn[0] is not None:
                    conn[0][1].close()
                conn[0] = None
            results.append((kind, status, (time.perf_counter() - t) * 1000, ok_json))
        if conn[0] is not None:
            conn[0][1].close()

    await asyncio.gather(*(client() for _ in range(clients)))
    return results
