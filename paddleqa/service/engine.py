"""The service's micro-batching engine: predictor threads answering batches of QA examples.

``workers`` threads each hold their own predictor (Paddle predictors are not thread-safe) and take
requests from one queue, running them in micro-batches: up to ``max_batch`` requests, waiting at
most ``max_wait_ms`` for more after the first.
"""
from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import queue
import threading
import time

from ..core.errors import PaddleQAError
from ..core.postprocess import best_spans
from ..runtime.artifacts import artifact_kind, open_artifact, predict_logits
from ..text.features import feature_params_for
from ..text.tokenizer import load_tokenizer
from .select import served_artifact
from .windows import Windows


class Overloaded(PaddleQAError):
    """More questions are waiting than the engine's ``max_queue``: the caller should come back."""


@dataclasses.dataclass
class _Job:
    examples: list  # QAExample, one per context
    future: cf.Future


class Engine:
    """Micro-batching answerer over ``workers`` threads, each with its own predictor."""

    def __init__(self, artifact: str, *, workers: int = 1, max_batch: int = 8, max_wait_ms: float = 5.0,
                 n_best: int = 20, max_answer_length: int = 64, threads: int = 1, max_queue: int = 0,
                 int8_max_f1_drop: float = -1.0):
        # a run folder: its fastest measured form (int8 ones within int8_max_f1_drop F1 points)
        self.artifact = served_artifact(artifact, int8_max_f1_drop)
        self.backend, _ = artifact_kind(self.artifact)
        if self.backend == "lite-arm":
            raise PaddleQAError(f"{self.artifact} is an ARM .nb: serve its x86 twin or the model on this machine")
        self.max_batch, self.max_wait = max_batch, max_wait_ms / 1000
        self.n_best, self.max_answer_length, self.threads = n_best, max_answer_length, threads
        self.jobs: queue.Queue = queue.Queue()
        self.max_queue = max_queue  # 0 = unbounded
        self.batches = 0
        self.batched_requests = 0
        self._stop = threading.Event()
        self._ready = threading.Barrier(workers + 1, timeout=600)
        self._errors: list[BaseException] = []
        self.windows: Windows | None = None  # one for all predictor threads: it caches passage tokens
        self._windows_lock = threading.Lock()
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
        with self._windows_lock:
            if self.windows is None:
                self.windows = Windows(load_tokenizer(str(runner.tokenizer_dir)),
                                       feature_params_for(str(runner.tokenizer_dir)))
        return runner, self.windows

    def _work(self) -> None:
        try:
            runner, windows = self._load()
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
            self._run(batch, runner, windows)

    def _run(self, batch: list[_Job], runner, windows: Windows) -> None:
        live = [j for j in batch if j.future.set_running_or_notify_cancel()]
        if not live:
            return
        examples = [ex for j in live for ex in j.examples]
        try:
            # Knowledge-base passages (they have an id) keep their tokens for the next question.
            feats = windows.features(examples, cached=[bool(ex.context_id) for ex in examples])
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
        """Queue ``examples`` for a predictor; :class:`Overloaded` when ``max_queue`` are waiting
        (refusing at once beats answering after the client has given up)."""
        if self.max_queue and self.jobs.qsize() >= self.max_queue:
            raise Overloaded(f"{self.jobs.qsize()} questions are waiting for a predictor (the limit "
                             f"is {self.max_queue}); retry shortly")
        fut: cf.Future = cf.Future()
        self.jobs.put(_Job(examples, fut))
        return fut

    def answer(self, examples: list, timeout: float | None = None):
        return self.submit(examples).result(timeout=timeout)

    def close(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=5)
