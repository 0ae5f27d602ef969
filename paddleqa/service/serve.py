"""``paddleqa serve``: an HTTP QA service (FastAPI) over any artifact, with BM25 retrieval.

Requests are answered by :class:`Engine`: ``workers`` threads, each holding its own predictor
(Paddle predictors are not thread-safe), take requests from one queue and run them in
micro-batches (up to ``max_batch`` requests, waiting at most ``max_wait_ms`` for more after the
first). The HTTP layer validates and bounds every input, applies a per-request timeout and never
lets an exception escape: bad input gets a 4xx with a message that says what to fix.
"""

import asyncio
import collections
import concurrent.futures as cf
import dataclasses
import ipaddress
import json
import logging
import queue
import threading
import time

from ..core.config import opt
from ..core.errors import PaddleQAError
from ..core.postprocess import best_spans
from ..runtime.artifacts import artifact_kind, open_artifact, predict_logits
from ..text.dataset import QAExample
from ..text.features import build_features, feature_params_for
from ..text.tokenizer import load_tokenizer
from .kb import KnowledgeBase

log = logging.getLogger(__name__)

LATENCY_BUCKETS_MS = (10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)


@dataclasses.dataclass
class ServeConfig:
    """Serve an artifact over HTTP: POST /answer, POST /kb/reload, GET /healthz, GET /metrics."""

    artifact: str = opt("", help="model folder, Paddle inference model or Lite x86 .nb")
    kb: str = opt("", help="knowledge base: folder of .txt/.md files or a CMRC JSON ('' = none; "
                  "then every request must carry a context)")
    host: str = opt("127.0.0.1", help="bind address (loopback unless allow_remote)")
    port: int = opt(8000, help="TCP port")
    allow_remote: bool = opt(False, help="allow binding a non-loopback address")
    workers: int = opt(1, help="predictor threads (each loads its own predictor)")
    max_batch: int = opt(8, help="requests per micro-batch")
    max_wait_ms: float = opt(5.0, help="how long a batch waits for more requests after its first")
    top_k: int = opt(3, help="passages retrieved and read per question without context")
    passage_chars: int = opt(300, help="passage length when chunking the knowledge base")
    kb_check_seconds: float = opt(2.0, help="look for changed knowledge-base files this often")
    max_body_bytes: int = opt(65536, help="largest request body accepted (413 above)")
    max_question_chars: int = opt(200, help="longest question accepted")
    max_context_chars: int = opt(5000, help="longest context accepted")
    timeout_seconds: float = opt(10.0, help="per-request time limit (504 above)")
    n_best: int = opt(20, help="n-best candidates in post-processing")
    max_answer_length: int = opt(64, help="longest answer in tokens")
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
        if self.max_wait_ms < 0 or self.timeout_seconds <= 0:
            raise ValueError("max_wait_ms must be >= 0 and timeout_seconds > 0")
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


# ---------------------------------------------------------------- engine
@dataclasses.dataclass
class _Job:
    examples: list  # QAExample, one per context
    future: cf.Future


class Engine:
    """Micro-batching answerer over ``workers`` threads, each with its own predictor."""

    def __init__(self, artifact: str, *, workers: int = 1, max_batch: int = 8, max_wait_ms: float = 5.0,
                 n_best: int = 20, max_answer_length: int = 64, threads: int = 1):

        self.artifact = artifact
        self.backend, _ = artifact_kind(artifact)
        if self.backend == "lite-arm":
            raise PaddleQAError(f"{artifact} is an ARM .nb: serve its x86 twin or the model on this machine")
        self.max_batch, self.max_wait = max_batch, max_wait_ms / 1000
        self.n_best, self.max_answer_length, self.threads = n_best, max_answer_length, threads
        self.jobs: queue.Queue = queue.Queue()
        self.batches = 0
        self.batched_requests = 0
        self._stop = threading.Event()
        self._ready = threading.Barrier(workers + 1, timeout=600)
        self._errors: list[BaseException] = []
        self._threads = [threading.Thread(target=self._work, name=f"paddleqa-predictor-{i}", daemon=True)
                         for i in range(workers)]
        for t in self._threads:
            t.start()
        try:
            self._ready.wait()
        except threading.BrokenBarrierError:
            pass
        if self._errors:
            self.close()
            err = self._errors[0]
            raise err if isinstance(err, PaddleQAError) else PaddleQAError(
                f"cannot load {artifact}: {type(err).__name__}: {err}")

    def _load(self):
        runner = open_artifact(self.artifact, threads=self.threads)
        tokenizer = load_tokenizer(str(runner.tokenizer_dir))
        params = feature_params_for(str(runner.tokenizer_dir))
        return runner, tokenizer, params

    def _work(self) -> None:
        try:
            runner, tokenizer, params = self._load()
        except BaseException as exc:  # noqa: BLE001 -- reported to the constructor
            self._errors.append(exc)
            self._ready.abort()
            return
        try:
            self._ready.wait()
        except threading.BrokenBarrierError:
            return
        while not self._stop.is_set():
            try:
                first = self.jobs.get(timeout=0.2)
            except queue.Empty:
                continue
            batch = [first]
            deadline = time.monotonic() + self.max_wait
            while len(batch) < self.max_batch:
                left = deadline - time.monotonic()
                try:
                    batch.append(self.jobs.get(timeout=max(left, 0)) if left > 0 else self.jobs.get_nowait())
                except queue.Empty:
                    break
            self._run(batch, runner, tokenizer, params)

    def _run(self, batch: list[_Job], runner, tokenizer, params) -> None:
        live = [j for j in batch if j.future.set_running_or_notify_cancel()]
        if not live:
            return
        examples = [ex for j in live for ex in j.examples]
        try:
            feats = build_features(examples, tokenizer, params, train=False, progress=False)
            start, end = predict_logits(runner, feats, batch_size=32, progress=False)
            spans = best_spans(start, end, feats["offsets"], feats["example_index"],
                               [ex.context for ex in examples], n_best=self.n_best,
                               max_answer_length=self.max_answer_length)
        except BaseException as exc:  # noqa: BLE001 -- every waiting request gets the error
            for j in live:
                j.future.set_exception(exc)
            return
        self.batches += 1
        self.batched_requests += len(live)
        i = 0
        for j in live:
            j.future.set_result(spans[i: i + len(j.examples)])
            i += len(j.examples)

    def submit(self, examples: list) -> cf.Future:
        fut: cf.Future = cf.Future()
        self.jobs.put(_Job(examples, fut))
        return fut

    def answer(self, examples: list, timeout: float | None = None):
        return self.submit(examples).result(timeout=timeout)

    def close(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=5)


def best_answer(spans: list) -> tuple | None:
    """(index of the context, its top span) with the highest score across contexts, or None."""
    return max(((i, c[0]) for i, c in enumerate(spans) if c), key=lambda x: x[1].score, default=None)


# ---------------------------------------------------------------- HTTP
class BadRequest(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def parse_answer_request(body: bytes, config: ServeConfig) -> tuple[str, str | None]:
    """(question, context or None) from a request body, or :class:`BadRequest` saying what is wrong."""
    if len(body) > config.max_body_bytes:
        raise BadRequest(413, f"request body is {len(body)} bytes; the limit is {config.max_body_bytes}")
    if not body.strip():
        raise BadRequest(400, 'empty body: send JSON {"question": "...", "context": "..."}')
    try:
        data = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise BadRequest(400, f"body is not UTF-8 (byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise BadRequest(400, f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    if not isinstance(data, dict):
        raise BadRequest(422, 'body must be a JSON object {"question": "...", "context": "..."}')
    unknown = sorted(set(data) - {"question", "context"})
    if unknown:
        raise BadRequest(422, f"unknown field(s) {', '.join(map(str, unknown))}; valid: question, context")
    q = data.get("question")
    if q is None:
        raise BadRequest(422, "field 'question' is required")
    if not isinstance(q, str):
        raise BadRequest(422, f"'question' must be a string, got {type(q).__name__}")
    q = q.strip()
    if not q:
        raise BadRequest(422, "'question' is empty")
    if len(q) > config.max_question_chars:
        raise BadRequest(422, f"'question' has {len(q)} characters; the limit is {config.max_question_chars}")
    ctx = data.get("context")
    if ctx is not None:
        if not isinstance(ctx, str):
            raise BadRequest(422, f"'context' must be a string, got {type(ctx).__name__}")
        if not ctx.strip():
            raise BadRequest(422, "'context' is empty: leave it out to search the knowledge base")
        if len(ctx) > config.max_context_chars:
            raise BadRequest(422, f"'context' has {len(ctx)} characters; the limit is {config.max_context_chars}")
    return q, ctx


class Metrics:
    def __init__(self):
        self.lock = threading.Lock()
        self.requests = collections.Counter()  # (path, status) -> count
        self.latency = collections.Counter()  # bucket -> count
        self.latency_sum = 0.0
        self.latency_count = 0

    def record(self, path: str, status: int, ms: float | None) -> None:
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
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse


    if kb is None and config.kb:

        kb = KnowledgeBase(config.kb, passage_chars=config.passage_chars,
                           check_seconds=config.kb_check_seconds)
    owns_engine = engine is None
    if engine is None:
        engine = Engine(config.artifact, workers=config.workers, max_batch=config.max_batch,
                        max_wait_ms=config.max_wait_ms, n_best=config.n_best,
                        max_answer_length=config.max_answer_length, threads=config.threads)
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(_app):
        yield
        if owns_engine:  # an engine handed in belongs to the caller
            engine.close()

    app = FastAPI(title="paddleqa", description="Chinese extractive QA over a compressed model",
                  lifespan=lifespan)
    app.state.engine, app.state.kb, app.state.metrics = engine, kb, Metrics()
    metrics: Metrics = app.state.metrics

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    @app.middleware("http")
    async def guard(request: Request, call_next):
        t0 = time.perf_counter()
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > config.max_body_bytes):
            resp = error(413, f"request body of {length} bytes exceeds the limit of {config.max_body_bytes}")
        else:
            try:
                resp = await call_next(request)
            except Exception as exc:  # noqa: BLE001 -- the server must not die on anything
                log.exception("unhandled error on %s", request.url.path)
                resp = error(500, f"internal error: {type(exc).__name__}")
        ms = (time.perf_counter() - t0) * 1000
        metrics.record(request.url.path, resp.status_code,
                       ms if request.url.path == "/answer" and resp.status_code == 200 else None)
        return resp

    @app.post("/answer")
    async def answer(request: Request):
        t0 = time.perf_counter()
        try:
            question, context = parse_answer_request(await request.body(), config)
        except BadRequest as exc:
            return error(exc.status, exc.message)
        passages = []
        if context is not None:
            examples = [QAExample("q", question, context, [], [])]
        else:
            if kb is None:
                return error(400, "no 'context' given and the server has no knowledge base "
                                  "(start it with --kb DIR_OR_FILE, or send a context)")
            try:
                await asyncio.to_thread(kb.maybe_reload)
            except PaddleQAError as exc:
                log.warning("knowledge base reload failed, keeping the old index: %s", exc)
            passages = kb.search(question, config.top_k)
            if not passages:
                return {"answer": "", "score": None, "start": None, "end": None,
                        "passage_id": None, "title": None, "passages": [],
                        "latency_ms": round((time.perf_counter() - t0) * 1000, 2)}
            examples = [QAExample(f"q{i}", question, p.text, [], [], title=p.title, context_id=p.pid)
                        for i, (p, _) in enumerate(passages)]
        fut = engine.submit(examples)
        try:
            spans = await asyncio.wait_for(asyncio.wrap_future(fut), timeout=config.timeout_seconds)
        except asyncio.TimeoutError:
            fut.cancel()
            return error(504, f"no answer within {config.timeout_seconds} s; try again or shorten the context")
        except PaddleQAError as exc:
            return error(500, str(exc))
        best = best_answer(spans)
        out = {"answer": "", "score": None, "start": None, "end": None}
        if best is not None:
            i, span = best
            out = {"answer": span.text, "score": round(float(span.score), 4), "start": span.start,
                   "end": span.end}
        if context is None:
            p = passages[best[0]][0] if best is not None else None
            out.update(passage_id=p.pid if p else None, title=p.title if p else None,
                       passages=[{"id": q.pid, "title": q.title, "bm25": round(s, 3)} for q, s in passages])
        out["latency_ms"] = round((time.perf_counter() - t0) * 1000, 2)
        return out

    @app.post("/kb/reload")
    async def reload():
        if kb is None:
            return error(400, "the server has no knowledge base (start it with --kb)")
        try:
            n = await asyncio.to_thread(kb.reload)
        except PaddleQAError as exc:
            return error(422, f"reload failed, the old index stays in use: {exc}")
        return {"passages": n, "skipped": kb.skipped}

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok", "artifact": config.artifact, "backend": engine.backend,
                "kb_passages": len(kb.passages) if kb else 0}

    @app.get("/metrics")
    async def get_metrics():
        return metrics.snapshot(engine)

    return app


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


def serve(config: ServeConfig) -> None:
    import uvicorn

    limit_malloc_arenas()
    if not is_loopback(config.host):
        log.warning("binding %s: the QA service is reachable from the network", config.host)
    app = create_app(config)
    log.info("serving %s on http://%s:%d (POST /answer)", config.artifact, config.host, config.port)
    uvicorn.run(app, host=config.host, port=config.port, log_level="warning")


def ask_loop(config: ServeConfig, stdin, stdout) -> int:
    """``paddleqa ask``: read questions (``question ||| context`` to give a context), print answers."""

    kb = None
    if config.kb:

        kb = KnowledgeBase(config.kb, passage_chars=config.passage_chars)
    engine = Engine(config.artifact, max_batch=1, max_wait_ms=0, n_best=config.n_best,
                    max_answer_length=config.max_answer_length, threads=config.threads)
    stdout.write("Ask a question (`question ||| context` to give the passage; empty line or Ctrl-D quits).\n")
    try:
        for line in stdin:
            line = line.strip()
            if not line:
                break
            q, _, ctx = (x.strip() for x in line.partition("|||"))
            t0 = time.perf_counter()
            if ctx:
                passages = [(None, 0.0)]
                examples = [QAExample("q", q[: config.max_question_chars], ctx[: config.max_context_chars], [], [])]
            elif kb is not None:
                passages = kb.search(q, config.top_k)
                examples = [QAExample(f"q{i}", q, p.text, [], []) for i, (p, _) in enumerate(passages)]
            else:
                stdout.write("no knowledge base: write `question ||| context`\n")
                continue
            if not examples:
                stdout.write("no passage matches the question\n")
                continue
            spans = engine.answer(examples, timeout=config.timeout_seconds)
            best = best_answer(spans)
            ms = (time.perf_counter() - t0) * 1000
            if best is None:
                stdout.write(f"(no answer)  [{ms:.0f} ms]\n")
                continue
            where = f"  ({passages[best[0]][0].title} / {passages[best[0]][0].pid})" if passages[best[0]][0] else ""
            stdout.write(f"{best[1].text}  [score {best[1].score:.2f}, {ms:.0f} ms]{where}\n")
            stdout.flush()
    finally:
        engine.close()
    return 0

