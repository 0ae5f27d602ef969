"""The QA service: answers from the context or the knowledge base, a 4xx for every bad request,
no errors under concurrent load, knowledge-base reloads."""
import json
import threading

import pytest
from fastapi.testclient import TestClient

from conftest import CONTEXT_1, CONTEXT_2
from paddleqa import cli
from paddleqa.service.kb import KnowledgeBase, split_passages
from paddleqa.service.serve import Engine, ServeConfig, create_app


@pytest.fixture(scope="module")
def engine(teacher_run):
    tmp, data, doc = teacher_run
    eng = Engine(f"{doc['run_dir']}/teacher", workers=2, max_batch=4, max_wait_ms=2)
    yield eng
    eng.close()


@pytest.fixture
def kb_dir(tmp_path):
    d = tmp_path / "kb"
    d.mkdir()
    (d / "returns.txt").write_text("# 退货\n\n" + CONTEXT_1, encoding="utf-8")
    (d / "service.md").write_text(CONTEXT_2, encoding="utf-8")
    return d


def _client(engine, kb=None, **cfg):
    config = ServeConfig(artifact=engine.artifact, **cfg)
    return TestClient(create_app(config, engine=engine, kb=kb))


def test_answer_comes_from_the_given_context(engine):
    with _client(engine) as c:
        r = c.post("/answer", json={"question": "退款多久到账？", "context": CONTEXT_1})
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"answer", "score", "start", "end", "latency_ms"}
    assert body["answer"] and CONTEXT_1[body["start"]:body["end"]] == body["answer"]
    assert body["latency_ms"] > 0


def test_answer_comes_from_the_knowledge_base(engine, kb_dir):
    kb = KnowledgeBase(kb_dir, check_seconds=0)
    with _client(engine, kb=kb) as c:
        body = c.post("/answer", json={"question": "客服热线的服务时间？"}).json()
        health = c.get("/healthz").json()
    passage = next(p for p in kb.passages if p.pid == body["passage_id"])
    assert body["answer"] in passage.text and passage.text[body["start"]:body["end"]] == body["answer"]
    assert body["passages"] and body["passages"][0]["id"] == "service.md#0"  # BM25 ranks it first
    assert health["kb_passages"] == len(kb.passages) == 2
    titles = {p.pid: p.title for p in kb.passages}
    assert titles["returns.txt#0"] == "退货"  # a markdown-style heading names the passage


@pytest.mark.parametrize("body, status, message", [
    (b"{not json", 400, "invalid JSON at line 1"),
    (b"", 400, "empty body"),
    (b"\xff\xfe", 400, "not UTF-8"),
    (b"[1, 2]", 422, "must be a JSON object"),
    (b'{"context": "x"}', 422, "'question' is required"),
    (b'{"question": 5}', 422, "'question' must be a string"),
    (b'{"question": "   "}', 422, "'question' is empty"),
    ('{"question": "%s"}' % ("问" * 201), 422, "limit is 200"),
    (json.dumps({"question": "q", "context": "长" * 5001}), 422, "'context' has 5001 characters"),
    (b'{"question": "q", "context": ""}', 422, "'context' is empty"),
    (b'{"question": "q", "lang": "zh"}', 422, "unknown field(s) lang"),
    (b'{"question": "q"}', 400, "no 'context' given and the server has no knowledge base"),
    # hostile input: 4xx, never a 500
    (b"[" * 20_000 + b"]" * 20_000, 400, "nested too deeply"),
    (b'{"question": ' + b"9" * 5000 + b"}", 400, "unreadable JSON value"),
    (b'{"question": "\\ud800?"}', 422, "unpaired UTF-16 surrogate"),
    (json.dumps({"question": "q", "context": "\u200b\u200d\u0301\x07"}), 422, "no visible characters"),
])
def test_every_bad_request_gets_a_clear_4xx(engine, body, status, message):
    with _client(engine) as c:
        r = c.post("/answer", content=body.encode("utf-8") if isinstance(body, str) else body,
                   headers={"content-type": "application/json"})
        assert r.status_code == status and message in r.json()["error"]
        assert c.get("/healthz").status_code == 200  # still serving


def test_oversize_body_is_refused_before_reading(engine):
    with _client(engine, max_body_bytes=100) as c:
        r = c.post("/answer", content=b"x" * 500)
    assert r.status_code == 413 and "limit of 100" in r.json()["error"]


def test_a_chunked_body_is_refused_while_it_streams(engine):
    sent = []

    def chunks():  # no content-length: the limit must apply while reading
        for _ in range(64):
            sent.append(1)
            yield b"x" * 1024

    with _client(engine, max_body_bytes=4096) as c:
        r = c.post("/answer", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and "limit of 4096" in r.json()["error"]


def test_metrics_count_routes_not_paths_and_docs_are_off(engine):
    with _client(engine) as c:
        for i in range(20):
            assert c.get(f"/no-such-page-{i}").status_code == 404
        assert c.get("/docs").status_code == 404 and c.get("/openapi.json").status_code == 404
        paths = {x["path"] for x in c.get("/metrics").json()["requests"]}
    assert paths == {"(no route)"}
    with _client(engine, docs=True) as c:
        assert c.get("/openapi.json").status_code == 200


def test_a_full_queue_answers_503_with_retry_after(engine):
    from paddleqa.service.engine import Overloaded

    class Busy:  # an engine whose queue is full
        artifact, backend, batches, batched_requests = engine.artifact, engine.backend, 0, 0

        def submit(self, examples):
            raise Overloaded("256 questions are waiting for a predictor (the limit is 256); retry shortly")

    config = ServeConfig(artifact=engine.artifact)
    with TestClient(create_app(config, engine=Busy())) as c:
        r = c.post("/answer", json={"question": "多久？", "context": CONTEXT_1})
    assert r.status_code == 503 and r.headers["retry-after"] == "1" and "retry" in r.json()["error"]


def test_serve_checks_the_port_before_loading_the_model():
    import socket

    from paddleqa.core.errors import PaddleQAError
    from paddleqa.service.serve import listen

    # serve() binds with listen() before it builds the app (and loads the model)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(PaddleQAError, match="--port"):
            listen("127.0.0.1", busy.getsockname()[1])


def test_concurrent_clients_get_no_errors(engine):
    results, lock = [], threading.Lock()
    with _client(engine) as c:
        def client(i):
            for j in range(6):
                ctx = CONTEXT_1 if (i + j) % 2 else CONTEXT_2
                r = c.post("/answer", json={"question": "多久？" if ctx is CONTEXT_1 else "电话？", "context": ctx})
                with lock:
                    results.append((r.status_code, r.json(), ctx))

        threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        m = c.get("/metrics").json()
    assert len(results) == 48 and all(s == 200 for s, _, _ in results)
    assert all(b["answer"] == ctx[b["start"]:b["end"]] for _, b, ctx in results)
    answered = sum(x["count"] for x in m["requests"] if x["path"] == "/answer" and x["status"] == 200)
    assert answered == 48 and m["answer_latency_ms_histogram"]["le_inf"] == 48
    assert m["batches"] >= 1


def test_kb_reload_picks_up_new_files(engine, kb_dir):
    kb = KnowledgeBase(kb_dir, check_seconds=3600)
    with _client(engine, kb=kb) as c:
        (kb_dir / "vip.txt").write_text("VIP会员每月可领取两张免运费券。会员等级每年1月1日更新。", encoding="utf-8")
        (kb_dir / "bad.txt").write_bytes(b"\xff\xfe\x00bad")
        r = c.post("/kb/reload").json()
    assert r["passages"] == 3 and any("bad.txt" in s and "UTF-8" in s for s in r["skipped"])


def test_kb_chunks_long_text_at_sentence_ends():
    text = "第一句话很长。" * 30 + "\n\n短段落。"
    parts = split_passages(text, 50)
    assert all(len(p) <= 50 for p in parts) and "".join(parts).replace("\n", "") == text.replace("\n", "")


def test_remote_bind_needs_an_explicit_flag(capsys, teacher_run):
    tmp, data, doc = teacher_run
    code = cli.main(["serve", f"{doc['run_dir']}/teacher", "--host", "0.0.0.0"])
    assert code == 2 and "--allow-remote" in capsys.readouterr().err
    assert ServeConfig(artifact="x", host="::1").host == "::1"


FAQS = [{"id": "refund-time", "question": "退款多久能到账？", "answer": "退款在3个工作日内原路退回。"},
        {"id": "hotline", "question": "客服电话是多少？", "answer": "客服热线400-820-1234。"}]


def test_faq_files_load_from_json_and_csv_with_clear_errors(tmp_path):
    from paddleqa.core.errors import DataError
    from paddleqa.service.faq import load_faq, similarity

    j = tmp_path / "faq.json"
    j.write_text(json.dumps({"faqs": FAQS}, ensure_ascii=False), encoding="utf-8")
    c = tmp_path / "faq.csv"
    c.write_text("id,question,answer\n" + "\n".join(f"{f['id']},{f['question']},{f['answer']}" for f in FAQS),
                 encoding="utf-8")
    assert load_faq(j) == load_faq(c)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([FAQS[0], {"question": "没有答案？"}], ensure_ascii=False), encoding="utf-8")
    with pytest.raises(DataError, match=r"bad.json, record #1: needs a non-empty 'question' and 'answer'"):
        load_faq(bad)
    assert similarity("退款多久能到账？", "退款多久能到账") == pytest.approx(1.0)
    assert similarity("退款多久能到账？", "客服电话是多少") < 0.2


def test_a_known_question_gets_the_faq_answer_and_others_the_reader(engine, kb_dir, tmp_path):
    faq = tmp_path / "faq.json"
    faq.write_text(json.dumps(FAQS, ensure_ascii=False), encoding="utf-8")
    kb = KnowledgeBase(kb_dir, check_seconds=0)
    with _client(engine, kb=kb, faq=str(faq)) as c:
        hit = c.post("/answer", json={"question": "退款多久能到账"}).json()
        miss = c.post("/answer", json={"question": "会员可以享受什么服务？"}).json()
        given = c.post("/answer", json={"question": "客服电话是多少？", "context": CONTEXT_2}).json()
        assert c.get("/healthz").json()["faq_entries"] == 2
    assert hit["answer"] == FAQS[0]["answer"] and hit["faq"]["id"] == "refund-time" and hit["score"] >= 0.8
    assert "faq" not in miss and miss["passages"]  # read from the knowledge base
    assert "faq" not in given and CONTEXT_2[given["start"]:given["end"]] == given["answer"]  # a context wins


def test_ask_loop_answers_from_the_faq(teacher_run, tmp_path):
    import io

    from paddleqa.service.serve import ask_loop

    tmp, data, doc = teacher_run
    faq = tmp_path / "faq.json"
    faq.write_text(json.dumps(FAQS, ensure_ascii=False), encoding="utf-8")
    out = io.StringIO()
    ask_loop(ServeConfig(artifact=f"{doc['run_dir']}/teacher", faq=str(faq)), io.StringIO("客服电话是多少\n"), out)
    assert "客服热线400-820-1234。  [FAQ hotline, similarity" in out.getvalue()
