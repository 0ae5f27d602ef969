"""Several server processes on one port, and the header timeout of every connection.

``paddleqa serve --processes N`` runs N copies of the service, each with its own model,
knowledge base and predictor threads, accepting from one listening socket. One Python process
answers ~1 request per core at a time (the event loop, tokenizing and post-processing hold the
GIL), so a process per core is what lets a 2-core machine use both cores.

Why not uvicorn's own ``workers=N``: each worker must build the app from an import string (the
config would travel through the environment), a worker that cannot load the model ends the
server with the worker's traceback and uvicorn's "failed to start" rather than our one ``error:``
line, and the parent never learns when every worker has loaded its model. Here the parent binds
the socket first (the port check, before any model loads), forks the children before Paddle,
the tokenizer or any runtime is imported (no predictor or runtime thread pool is copied; numpy's
BLAS pool handles fork; ``spawn`` would re-run the ``python -m paddleqa.cli`` main module in each
child), and each child reports "ready" or its
error through a pipe. The first error stops them all and is raised as a
:class:`~paddleqa.core.errors.PaddleQAError`. A child that dies later is started again.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import time
from typing import Callable

from ..core.errors import PaddleQAError

log = logging.getLogger(__name__)

MAX_RESTARTS = 5  # a child that keeps dying after it was ready is not restarted forever


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


LINGER_SECONDS = 2.0  # how long a closing connection's unread input is drained (lingering close)
LINGER_BYTES = 1 << 20


class _LingeringTransport:
    """A transport whose ``close()`` first drains what the client is still sending (for at most
    LINGER_SECONDS and LINGER_BYTES, or until the client closes). Closing a socket with unread
    input makes the kernel send a reset, which can destroy the response just written: a client
    whose oversize body was refused (413, before reading it) got "connection reset" instead of
    the 413. Apache's "lingering close" is the same remedy; uvicorn closes at once."""

    def __init__(self, transport, protocol):
        self._t, self._protocol, self._closing = transport, protocol, False

    def __getattr__(self, name):
        return getattr(self._t, name)

    def is_closing(self) -> bool:
        return self._closing or self._t.is_closing()

    def close(self) -> None:
        if self._closing or self._t.is_closing():
            return
        self._closing = True
        self._protocol.lingering = 0
        try:
            self._t.resume_reading()  # flow control may have paused it: drain needs reading
        except (RuntimeError, AttributeError):
            pass
        self._protocol.loop.call_later(LINGER_SECONDS, self._t.close)

    def close_now(self) -> None:
        self._closing = True
        self._t.close()


def header_timeout_protocol(seconds: float):
    """uvicorn's HTTP protocol class, closing connections with a lingering close (see
    :class:`_LingeringTransport`) and closing a connection whose request line and headers do not
    all arrive within ``seconds`` of its opening or of the previous response (a slowloris client,
    or half a request). uvicorn has a keep-alive
    timeout but none for headers; a request whose headers arrived is bounded by the body and
    per-request time limits of the app instead."""
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    class HeaderTimeoutProtocol(AutoHTTPProtocol):  # type: ignore[misc, valid-type]
        _header_timer = None
        lingering: int | None = None  # bytes drained since close() was asked for (None: open)

        def _waiting_for_headers(self) -> bool:
            return self.cycle is None or self.cycle.response_complete

        def _arm(self) -> None:
            if self._header_timer is None:
                self._header_timer = self.loop.call_later(seconds, self._expire)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _expire(self) -> None:
            self._header_timer = None
            if self._waiting_for_headers() and not self.transport.is_closing():
                log.info("closing a connection from %s: no complete request headers within %s s",
                         self.client, seconds)
                self.transport.close_now()

        def connection_made(self, transport) -> None:
            super().connection_made(_LingeringTransport(transport, self))
            self._arm()

        def data_received(self, data: bytes) -> None:
            if self.lingering is not None:  # closing: drop what still arrives, within bounds
                self.lingering += len(data)
                if self.lingering > LINGER_BYTES:
                    self.transport.close_now()
                return
            if self._waiting_for_headers():
                self._arm()  # also a new request on a kept-alive connection
            super().data_received(data)
            if not self._waiting_for_headers():
                self._disarm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if self._waiting_for_headers() and not self.transport.is_closing():
                self._arm()  # the next request's headers (or the rest of an unread body) are timed too

        def eof_received(self):
            if self.lingering is not None:
                self.transport.close_now()  # the client is done sending: close for real
            return super().eof_received()

        def connection_lost(self, exc) -> None:
            self._disarm()
            self.transport.close_now()
            super().connection_lost(exc)

    return HeaderTimeoutProtocol


def _child(run: Callable, conn, index: int) -> None:
    """A forked server process: ``run(ready)`` builds the app, calls ``ready()``, serves."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops the children (SIGTERM)
    try:
        run(lambda: conn.send(("ready", os.getpid())))
    except BaseException as exc:  # noqa: BLE001 -- reported to the parent as one line
        msg = str(exc) if isinstance(exc, PaddleQAError) else f"{type(exc).__name__}: {exc}"
        try:
            conn.send(("error", f"server process {index}: {msg}"))
        except OSError:
            pass
        os._exit(3)
    os._exit(0)


class Processes:
    """Start, watch and stop ``n`` server processes running ``run`` (see :func:`_child`)."""

    def __init__(self, run: Callable, n: int, *, start_timeout: float = 600.0):
        self.run, self.n, self.start_timeout = run, n, start_timeout
        self.ctx = multiprocessing.get_context("fork")
        self.procs: list = [None] * n
        self.pipes: list = [None] * n
        self.restarts = 0

    def _start(self, i: int) -> None:
        receive, send = self.ctx.Pipe(duplex=False)
        p = self.ctx.Process(target=_child, args=(self.run, send, i), name=f"paddleqa-serve-{i}")
        p.start()
        send.close()
        self.procs[i], self.pipes[i] = p, receive

    def _wait_ready(self, i: int) -> int:
        """The child's pid once it is serving; PaddleQAError with its message if it failed."""
        p, conn, deadline = self.procs[i], self.pipes[i], time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if conn.poll(0.5):
                try:
                    kind, value = conn.recv()
                except EOFError:
                    break
                if kind == "ready":
                    return value
                raise PaddleQAError(value)
            if not p.is_alive():
                break
        p.join(1)
        raise PaddleQAError(f"server process {i} exited (status {p.exitcode}) before it was ready"
                            if p.exitcode is not None else
                            f"server process {i} was not ready within {self.start_timeout:.0f} s")

    def serve(self) -> None:
        """Start all, wait until each is ready (or fail with the first error), then watch them
        until SIGTERM/SIGINT, restarting a process that dies."""
        stop = []
        previous = signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
        try:
            for i in range(self.n):
                self._start(i)
            pids = [self._wait_ready(i) for i in range(self.n)]
            log.info("%d server processes ready (pids %s)", self.n, ", ".join(map(str, pids)))
            while not stop:
                time.sleep(0.5)
                for i, p in enumerate(self.procs):
                    if p.is_alive() or stop:
                        continue
                    if self.restarts >= MAX_RESTARTS:
                        raise PaddleQAError(f"server processes died {self.restarts + 1} times; the last, "
                                            f"process {i}, with status {p.exitcode}: see the log above")
                    self.restarts += 1
                    log.error("server process %d died (status %s); starting it again", i, p.exitcode)
                    self._start(i)
                    self._wait_ready(i)
        except KeyboardInterrupt:
            pass
        finally:
            signal.signal(signal.SIGTERM, previous)
            self.stop()

    def stop(self) -> None:
        for p in self.procs:
            if p is not None and p.is_alive():
                p.terminate()
        for p in self.procs:
            if p is not None:
                p.join(15)
                if p.is_alive():
                    p.kill()
                    p.join(5)
