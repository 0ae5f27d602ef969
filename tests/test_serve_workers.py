"""The service at speed and under abuse: the fast windows equal build_features, the BM25 index
equals rank_bm25, several server processes answer on one port, a slow or half-sent request is
cut off, and a process that cannot load the model is one `error:` line."""
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import CONTEXT_1, CONTEXT_2
from paddleqa.service.kb import Bm25Index
from paddleqa.service.windows import Windows
from paddleqa.text.dataset import QAExample
from paddleqa.text.features import FeatureParams, build_features
from paddleqa.text.tokenizer import load_tokenizer

ROOT = Path(__file__).resolve().parent.parent
ODD_TEXTS = ["Hello World! e.g. U.S.A. café naïve ＡＢＣ１２３", "退货\u200b\u200d\u0301\x07abc", "x\x00y\ufffdz问",
             "温度约23～28℃，长7.62×51mm──见图", "😀emoji 表情", "longword" * 40, "ひらがな、カタカナ。한국어"]


@pytest.mark.parametrize("params", [FeatureParams(max_seq_len=64, doc_stride=16, max_query_length=8),
                                    FeatureParams(max_seq_len=48, doc_stride=8, max_query_length=6,
                                                  overlap_types=True),
                                    FeatureParams(max_seq_len=48, doc_stride=8, max_query_length=6,
                                                  overlap_types=True, word_marks=True),
                                    FeatureParams(max_seq_len=48, doc_stride=8, max_query_length=6,
                                                  word_marks=True, entity_marks=True)])
def test_fast_windows_equal_build_features(teacher_run, params):
    tmp, data, doc = teacher_run
    tok = load_tokenizer(f"{doc['run_dir']}/teacher/model")
    contexts = [CONTEXT_1, CONTEXT_2, CONTEXT_1 * 3] + ODD_TEXTS
    questions = ["退款多久到账？", "客服电话是多少？这个问题很长很长很长很长很长", "what is café？"]
    examples = [QAExample(f"q{i}", questions[i % 3], c, [], []) for i, c in enumerate(contexts)]
    windows = Windows(tok, params)
    ours = windows.features(examples, cached=[i % 2 == 0 for i in range(len(examples))])
    again = windows.features(examples, cached=[True] * len(examples))  # from the cache
    ref = build_features(examples, tok, params, train=False, progress=False)
    assert len(ref["input_ids"]) > len(examples)  # long contexts were cut into several windows
    for key in ref:
        assert np.array_equal(ours[key], ref[key]), key
        assert np.array_equal(again[key], ref[key]), key


def test_bm25_index_scores_as_rank_bm25():
    from rank_bm25 import BM25Plus

    rng = np.random.default_rng(0)
    vocab = [f"w{i}" for i in range(40)]
    docs = [list(rng.choice(vocab, size=rng.integers(1, 30))) for _ in range(60)]
    index = Bm25Index(docs)
    for query in (["w1", "w2", "w1"], ["w39", "nope"], ["nope"]):
        scores, hit = index.scores(query)
        assert np.allclose(scores, BM25Plus(docs).get_scores(query))
        assert list(hit) == [any(q in d for q in query) for d in docs]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "paddleqa.cli", "serve", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def two_processes(teacher_run):
    tmp, data, doc = teacher_run
    port = _free_port()
    server = _serve([f"{doc['run_dir']}/teacher", "--port", str(port), "--processes", "2",
                     "--header-timeout-seconds", "1", "--body-timeout-seconds", "1"])
    import httpx

    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        assert server.poll() is None, server.communicate()[1][-2000:]
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.5)
    yield port, server
    server.terminate()
    server.wait(timeout=30)


def test_several_processes_answer_on_one_port(two_processes):
    import httpx

    port, server = two_processes
    pids, answers = set(), []
    for _ in range(100):  # a new connection each time: the kernel hands them to either process
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as c:
            pids.add(c.get("/healthz").json()["pid"])
            r = c.post("/answer", json={"question": "退款多久到账？", "context": CONTEXT_1})
            answers.append((r.status_code, r.json()))
        if len(pids) == 2 and len(answers) >= 6:
            break
    assert len(pids) == 2 and server.pid not in pids  # two children answer, the parent only watches
    assert all(s == 200 and CONTEXT_1[b["start"]:b["end"]] == b["answer"] for s, b in answers)


def _closed_within(sock: socket.socket, seconds: float) -> tuple[bool, bytes]:
    """(whether the server closed the connection within ``seconds``, what it sent)."""
    sock.settimeout(0.2)
    got, deadline = b"", time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(4096)
        except socket.timeout:
            continue
        except ConnectionResetError:
            return True, got
        if not chunk:
            return True, got
        got += chunk
    return False, got


def test_slow_headers_and_half_requests_are_cut_off(two_processes):
    port, _ = two_processes
    with socket.create_connection(("127.0.0.1", port)) as slow:  # slowloris: headers a byte at a time
        t0 = time.monotonic()
        slow.sendall(b"POST /answer HTTP/1.1\r\nHost: x\r\n")
        slow.settimeout(0.3)
        closed = False
        for ch in b"X-Slow: " + b"a" * 40:
            try:
                slow.sendall(bytes([ch]))
                if slow.recv(1) == b"":
                    closed = True
                    break
            except socket.timeout:
                continue
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
        assert closed and time.monotonic() - t0 < 5  # cut off after the 1 s header timeout
    with socket.create_connection(("127.0.0.1", port)) as half:  # headers, then half the body
        half.sendall(b"POST /answer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100\r\n\r\n{\"question\": ")
        closed, got = _closed_within(half, 5)
        assert got.startswith(b"HTTP/1.1 408") and closed
    with socket.create_connection(("127.0.0.1", port)) as silent:  # connects and sends nothing
        assert _closed_within(silent, 5)[0]


def test_a_process_that_cannot_load_is_one_error_line(tmp_path):
    bad = tmp_path / "model"
    bad.mkdir()
    (bad / "config.json").write_text(json.dumps({"architectures": ["Nope"]}), encoding="utf-8")
    server = _serve([str(bad), "--port", str(_free_port()), "--processes", "2"])
    out, err = server.communicate(timeout=180)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert server.returncode == 2 and len(errors) == 1 and "Traceback" not in err
    assert "server process" in errors[0] and str(bad) in errors[0]


def test_a_busy_port_fails_before_the_model_loads(teacher_run):
    tmp, data, doc = teacher_run
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        t0 = time.monotonic()
        server = _serve([f"{doc['run_dir']}/teacher", "--port", str(busy.getsockname()[1]), "--processes", "2"])
        out, err = server.communicate(timeout=120)
    assert server.returncode == 2 and "--port" in err and "server process" not in err


@pytest.mark.parametrize("chunked", [False, True])
def test_a_refused_oversize_body_still_gets_its_413(two_processes, chunked):
    port, _ = two_processes  # the server refuses before reading; the client has sent it all
    body = b"x" * 200_000
    head = b"POST /answer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    if chunked:
        request = head + b"Transfer-Encoding: chunked\r\n\r\n" + b"".join(
            b"%x\r\n%s\r\n" % (8192, body[i:i + 8192]) for i in range(0, len(body), 8192)) + b"0\r\n\r\n"
    else:
        request = head + b"Content-Length: %d\r\n\r\n" % len(body) + body
    for _ in range(5):  # a reset instead of the response was intermittent: try several times
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(request)
            closed, got = _closed_within(s, 10)
        assert got.startswith(b"HTTP/1.1 413") and b"limit" in got and closed
