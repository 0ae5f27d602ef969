"""``paddleqa serve``: an HTTP QA service (FastAPI) over any artifact, with BM25 retrieval.

Questions are answered by :class:`~paddleqa.service.answer.Answerer` (retrieval + reading +
best span) over the micro-batching :class:`~paddleqa.service.engine.Engine`. The HTTP layer here
validates and bounds every input, applies a per-request timeout and never lets an exception
escape: bad input gets a 4xx with a message that says what to fix. ``paddleqa ask`` is the same
answerer in a terminal loop.
"""

import asyncio
import collections
import dataclasses
import ipaddress
import logging
import os
import threading
import time
from contextlib import asynccontextmanager

from ..core.config import opt
from ..core.errors import PaddleQAError
from ..core.settings import AnswerSettings, ThreadSettings
from .answer import Answerer, NoKnowledgeBase
from .engine import Engine, Overloaded
from .faq import Faq
from .inputs import BadRequest, parse_answer_request, read_limited
from .kb import KnowledgeBase

log = logging.getLogger(__name__)

LATENCY_BUCKETS_MS = (10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)


@dataclasses.dataclass
class ServeConfig(ThreadSettings, AnswerSettings):
    """Serve an artifact over HTTP: POST /answer, POST /kb/reload, GET /healthz, GET /metrics."""

    artifact: str = opt("", help="model folder, Paddle inference model, Lite x86 .nb or ONNX model; "
                        "or a `paddleqa run` folder: its deployed model's fastest measured form")
    int8_max_f1_drop: float = opt(1.0, help="a run folder: an int8 form may be served when the bench "
                                  "scored it at most this many F1 points below the fp32 form (< 0 = fp32 only)")
    kb: str = opt("", help="knowledge base: folder of .txt/.md files or a CMRC JSON ('' = none; "
                  "then every request must carry a context)")
    faq: str = opt("", help="FAQ file: a JSON list of {question, answer} (or a CSV with those "
                   "columns); a question without context that matches one gets its answer directly")
    faq_threshold: float = opt(0.8, help="similarity (0..1, character n-gram cosine) a question must "
                               "reach to take an FAQ answer; below it the reader answers")
    host: str = opt("127.0.0.1", help="bind address (loopback unless allow_remote)")
    port: int = opt(8000, help="TCP port")
    allow_remote: bool = opt(False, help="allow binding a non-loopback address")
    processes: int = opt(0, help="server processes sharing the port, each with its own model, knowledge "
                         "base and `workers` predictor threads (0 = one per CPU core this process may use)")
    workers: int = opt(1, help="predictor threads per process (each loads its own predictor)")
    max_batch: int = opt(8, help="requests per micro-batch")
    max_wait_ms: float = opt(5.0, help="how long a batch waits for more requests after its first")
    top_k: int = opt(3, help="passages retrieved and read per question without context")
    passage_chars: int = opt(300, help="passage length when chunking the knowledge base")
    kb_check_seconds: float = opt(2.0, help="look for changed knowledge-base files this often")
    max_body_bytes: int = opt(65536, help="largest request body accepted (413 above)")
    max_question_chars: int = opt(200, help="longest question accepted")
    timeout_seconds: float = opt(10.0, help="per-request time limit (504 above)")
    body_timeout_seconds: float = opt(5.0, help="time a client has to send its request body (408 above)")
    max_queue: int = opt(256, help="questions waiting for a predictor before new ones get 503 with "
                         "Retry-After (0 = no bound)")
    max_connections: int = opt(512, help="open connections at once before new ones get 503")
    keep_alive_seconds: float = opt(5.0, help="idle time before a kept-alive connection is closed")
    header_timeout_seconds: float = opt(10.0, help="time a client has to send a request's line and "
                                        "headers before its connection is closed (slow or half-sent requests)")
    docs: bool = opt(False, help="serve the OpenAPI page at /docs (off: a public service need not "
                     "describe itself)")
    # max_context_chars, n_best, max_answer_length: inherited (core/settings.py).
    # threads overrides ThreadSettings' default 0 (= OMP_NUM_THREADS): every worker holds its own
    # predictor, so each gets one thread unless told otherwise (0 is refused here).
    threads: int = opt(1, help="CPU threads per predictor (Paddle Inference)")

    def __post_init__(self) -> None:
        if not self.artifact:
            raise ValueError("artifact is required")
        if not 0 < self.port < 65536:
            raise ValueError(f"port must be 1-65535, got {self.port}")
        for name in ("workers", "max_batch", "top_k", "passage_chars", "max_body_bytes",
                     "max_question_chars", "max_context_chars", "n_best", "max_answer_length", "threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_wait_ms < 0 or self.timeout_seconds <= 0 or self.body_timeout_seconds <= 0:
            raise ValueError("max_wait_ms must be >= 0, timeout_seconds and body_timeout_seconds > 0")
        if not 0 < self.faq_threshold <= 1:
            raise ValueError(f"faq_threshold must be in (0, 1], got {self.faq_threshold}")
        if self.max_queue < 0 or self.max_connections < 1 or self.keep_alive_seconds <= 0:
            raise ValueError("max_queue must be >= 0, max_connections >= 1, keep_alive_seconds > 0")
        if self.processes < 0 or self.header_timeout_seconds <= 0:
            raise ValueError(f"processes must be >= 0 (0 = one per core), got {self.processes}; "
                             f"header_timeout_seconds > 0, got {self.header_timeout_seconds}")
        if not self.allow_remote and not is_loopback(self.host):
            raise ValueError(f"host {self.host} is not a loopback address: binding it exposes the "
                             "service to the network; pass --allow-remote to do so deliberately")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# ---------------------------------------------------------------- HTTP
class Metrics:
    def __init__(self):
        self.lock = threading.Lock()
        self.requests = collections.Counter()  # (path, status) -> count
        self.latency = collections.Counter()  # bucket -> count
        self.latency_sum = 0.0
        self.latency_count = 0

    def record(self, path: str, status: int, ms: float | None) -> None:
        """Count a request under its route's path (``path``: the route template, or
        "(no route)" for a request no route matched, so unknown paths add no entries)."""
        with self.lock:
            self.requests[(path, status)] += 1
            if ms is not None:
                bucket = next((b for b in LATENCY_BUCKETS_MS if ms <= b), "inf")
                self.latency[bucket] += 1
                self.latency_sum += ms
                self.latency_count += 1

    def snapshot(self, engine: Engine | None) -> dict:
        with self.lock:
            cum, hist = 0, {}
            for b in (*LATENCY_BUCKETS_MS, "inf"):
                cum += self.latency[b]
                hist[f"le_{b}"] = cum
            return {
                "requests": [{"path": p, "status": s, "count": c} for (p, s), c in sorted(self.requests.items())],
                "answer_latency_ms_histogram": hist,
                "answer_latency_ms_mean": round(self.latency_sum / self.latency_count, 2) if self.latency_count else None,
                "batches": engine.batches if engine else 0,
                "mean_batch_size": round(engine.batched_requests / engine.batches, 2) if engine and engine.batches else None,
            }


def create_app(config: ServeConfig, engine: Engine | None = None, kb=None):
    """The FastAPI app. ``engine``/``kb`` default to ones built from ``config``."""
    from fastapi import FastAPI  # loaded only when a server is built: deferred on purpose

    if kb is None and config.kb:
        kb = KnowledgeBase(config.kb, passage_chars=config.passage_chars,
                           check_seconds=config.kb_check_seconds)
    owns_engine = engine is None
    if engine is None:
        engine = Engine(config.artifact, workers=config.workers, max_batch=config.max_batch,
                        max_wait_ms=config.max_wait_ms, n_best=config.n_best,
                        max_answer_length=config.max_answer_length, threads=config.threads,
                        max_queue=config.max_queue, int8_max_f1_drop=config.int8_max_f1_drop)

    @asynccontextmanager
    async def lifespan(_app):
        yield
        if owns_engine:  # an engine handed in belongs to the caller
            engine.close()

    docs = {} if config.docs else {"docs_url": None, "redoc_url": None, "openapi_url": None}
    app = FastAPI(title="paddleqa", description="Chinese extractive QA over a compressed model",
                  lifespan=lifespan, **docs)
    app.state.engine, app.state.kb, app.state.metrics = engine, kb, Metrics()
    app.add_middleware(_Guard, config=config, metrics=app.state.metrics)
    faq = Faq(config.faq) if config.faq else None
    answerer = Answerer(engine, kb, top_k=config.top_k, faq=faq, faq_threshold=config.faq_threshold)
    answerer.warm()
    _add_routes(app, config, answerer, app.state.metrics)
    return app


_CLOSE = {"Connection": "close"}


def _error(status: int, message: str, headers: dict | None = None):
    """A JSON error response: ``{"error": message}`` with ``status``."""
    from fastapi.responses import JSONResponse  # fastapi: deferred on purpose (see create_app)

    return JSONResponse({"error": message}, status_code=status, headers=headers)


class _Guard:
    """ASGI middleware: refuse a body declared over the limit before reading it (413), turn any
    exception that escapes a handler into a 500, and count every request (with the latency of
    each answer). Plain ASGI rather than Starlette's ``@app.middleware("http")``, which runs
    every request through an extra task and memory streams (~3% of a request's CPU in the load
    test's profile)."""

    def __init__(self, app, config: ServeConfig, metrics: Metrics):
        self.app, self.config, self.metrics = app, config, metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0, status = time.perf_counter(), []

        async def send_and_note(message) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
            await send(message)

        limit = self.config.max_body_bytes
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            await _error(413, f"request body of {length.decode('latin-1')[:40]} bytes exceeds the limit of "
                              f"{limit}", headers=_CLOSE)(scope, receive, send_and_note)  # left unread
        else:
            try:
                await self.app(scope, receive, send_and_note)
            except Exception as exc:  # noqa: BLE001 -- the server must not die on anything
                log.exception("unhandled error on %s", scope.get("path"))
                if not status:
                    await _error(500, f"internal error: {type(exc).__name__}")(scope, receive, send_and_note)
        code = status[0] if status else 500
        path = getattr(scope.get("route"), "path", None) or "(no route)"
        ms = (time.perf_counter() - t0) * 1000
        self.metrics.record(path, code, ms if path == "/answer" and code == 200 else None)


def _add_routes(app, config: ServeConfig, answerer: Answerer, metrics: Metrics) -> None:
    """POST /answer, POST /kb/reload, GET /healthz, GET /metrics."""
    from fastapi import Request  # fastapi: deferred on purpose (see create_app)

    engine, kb = answerer.engine, answerer.kb

    @app.post("/answer")
    async def answer(request: Request):
        t0 = time.perf_counter()
        try:
            body = await read_limited(request.stream(), config.max_body_bytes, config.body_timeout_seconds)
            question, context = parse_answer_request(
                body, max_body_bytes=config.max_body_bytes, max_question_chars=config.max_question_chars,
                max_context_chars=config.max_context_chars)
            reply = await answerer.answer_async(question, context, config.timeout_seconds)
        except BadRequest as exc:  # a body refused while it streams is left unread: close the connection
            return _error(exc.status, exc.message, headers=_CLOSE if exc.status in (408, 413) else None)
        except Overloaded as exc:
            return _error(503, str(exc), headers={"Retry-After": "1"})
        except NoKnowledgeBase:
            return _error(400, "no 'context' given and the server has no knowledge base "
                               "(start it with --kb DIR_OR_FILE, or send a context)")
        except asyncio.TimeoutError:
            return _error(504, f"no answer within {config.timeout_seconds} s; try again or shorten the context")
        except PaddleQAError as exc:
            return _error(500, str(exc))
        return {**reply.to_json(), "latency_ms": round((time.perf_counter() - t0) * 1000, 2)}

    @app.post("/kb/reload")
    async def reload():
        if kb is None:
            return _error(400, "the server has no knowledge base (start it with --kb)")
        try:
            n = await asyncio.to_thread(kb.reload)
        except PaddleQAError as exc:
            return _error(422, f"reload failed, the old index stays in use: {exc}")
        return {"passages": n, "skipped": kb.skipped}

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok", "pid": os.getpid(), "artifact": config.artifact, "serving": engine.artifact, "backend": engine.backend,
                "kb_passages": len(kb.passages) if kb else 0,
                "faq_entries": len(answerer.faq.entries) if answerer.faq else 0}

    @app.get("/metrics")
    async def get_metrics():
        return metrics.snapshot(engine)


def limit_malloc_arenas(n: int = 2) -> bool:
    """Cap glibc's malloc arenas (what MALLOC_ARENA_MAX does) before the worker threads start.

    With one arena per thread, the server's RSS kept growing while the same load was replayed
    (+89 MiB on the second identical run of the load test); with 2 arenas it stays flat.
    """
    import ctypes
    import ctypes.util
    import os

    if "MALLOC_ARENA_MAX" in os.environ:
        return False  # the user chose
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(-8, n))  # -8 = M_ARENA_MAX
    except (OSError, AttributeError):
        return False  # not glibc


def listen(host: str, port: int):
    """The listening socket of the service: binding it is the port check, done before any model
    loads (a busy port is one clean error, not a traceback after minutes of loading)."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise PaddleQAError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); another "
                            "server may hold the port: pass --port to choose another") from None
    sock.set_inheritable(True)
    return sock


def _serve_on(config: ServeConfig, sock, ready=None) -> None:
    """Build the app (loading the model) and serve it on ``sock`` until stopped."""
    import uvicorn

    from .processes import header_timeout_protocol

    limit_malloc_arenas()
    app = create_app(config)
    if ready is not None:
        ready()
    server = uvicorn.Server(uvicorn.Config(
        app, log_level="warning", limit_concurrency=config.max_connections,
        timeout_keep_alive=config.keep_alive_seconds, http=header_timeout_protocol(config.header_timeout_seconds)))
    server.run(sockets=[sock])


def serve(config: ServeConfig) -> None:
    from .processes import Processes, available_cores

    sock = listen(config.host, config.port)
    if not is_loopback(config.host):
        log.warning("binding %s: the QA service is reachable from the network", config.host)
    n = config.processes or available_cores()
    log.info("serving %s on http://%s:%d (POST /answer) with %d process(es)", config.artifact,
             config.host, config.port, n)
    try:
        if n == 1:
            _serve_on(config, sock)
        else:
            Processes(lambda ready: _serve_on(config, sock, ready), n).serve()
    finally:
        sock.close()


def ask_loop(config: ServeConfig, stdin, stdout) -> int:
    """``paddleqa ask``: read questions (``question ||| context`` to give a context), print answers."""

    kb = KnowledgeBase(config.kb, passage_chars=config.passage_chars) if config.kb else None
    engine = Engine(config.artifact, max_batch=1, max_wait_ms=0, n_best=config.n_best,
                    max_answer_length=config.max_answer_length, threads=config.threads,
                    int8_max_f1_drop=config.int8_max_f1_drop)
    answerer = Answerer(engine, kb, top_k=config.top_k, faq=Faq(config.faq) if config.faq else None,
                        faq_threshold=config.faq_threshold)
    stdout.write("Ask a question (`question ||| context` to give the passage; empty line or Ctrl-D quits).\n")
    try:
        for line in stdin:
            line = line.strip()
            if not line:
                break
            q, _, ctx = (x.strip() for x in line.partition("|||"))
            if ctx:  # a given context is cut to the limits, not refused
                q, ctx = q[: config.max_question_chars], ctx[: config.max_context_chars]
            t0 = time.perf_counter()
            try:
                reply = answerer.answer(q, ctx or None, timeout=config.timeout_seconds)
            except NoKnowledgeBase:
                stdout.write("no knowledge base: write `question ||| context`\n")
                continue
            if reply.faq is not None:
                stdout.write(f"{reply.faq.entry.answer}  [FAQ {reply.faq.entry.fid}, similarity "
                             f"{reply.faq.score:.2f}]\n")
                continue
            if reply.passages == []:
                stdout.write("no passage matches the question\n")
                continue
            ms = (time.perf_counter() - t0) * 1000
            if reply.span is None:
                stdout.write(f"(no answer)  [{ms:.0f} ms]\n")
                continue
            where = f"  ({reply.passage.title} / {reply.passage.pid})" if reply.passage else ""
            stdout.write(f"{reply.span.text}  [score {reply.span.score:.2f}, {ms:.0f} ms]{where}\n")
            stdout.flush()
    finally:
        engine.close()
    return 0
