"""Property-based robustness of every entry point that reads user input.

Random JSON, CMRC-shaped records with wrong types and missing fields, and random unicode (emoji,
mixed scripts, control characters, very long strings) go to `data check`, `augment`, `score`,
`evaluate` and the server. Properties: no exception escapes (the CLI returns 0, 1 or 2 and prints
`error: ...` on failure), the server answers every body with a JSON status below 500, and no
input file is ever modified.
"""
import hashlib
import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from paddleqa import cli

SETTINGS = settings(max_examples=30, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

weird_text = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.sampled_from("退货客服热线？。，🙂🚀\u200b\x00\x07\n\t\r\ud7ffaZ9 ٣ك한"), max_size=60),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=2000, max_size=6000),
)
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), weird_text)
any_json = st.recursive(scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(weird_text, c, max_size=4),
                        max_leaves=12)


@st.composite
def cmrc_like(draw):
    """CMRC-shaped documents whose fields are sometimes missing, mistyped or strange."""
    def maybe(value_strategy, junk=any_json):
        return draw(st.one_of(value_strategy, junk)) if draw(st.booleans()) else draw(value_strategy)

    articles = []
    for a in range(draw(st.integers(0, 3))):
        paragraphs = []
        for p in range(draw(st.integers(0, 2))):
            context = maybe(weird_text)
            qas = []
            for q in range(draw(st.integers(0, 3))):
                text = draw(weird_text)
                start = draw(st.one_of(st.integers(-5, 50), st.just(0)))
                if isinstance(context, str) and context and draw(st.booleans()):
                    i = draw(st.integers(0, len(context) - 1))
                    text, start = context[i: i + draw(st.integers(1, 5))], i
                qa = {"id": maybe(st.just(f"q{a}-{p}-{q}")), "question": maybe(weird_text),
                      "answers": maybe(st.just([{"text": text, "answer_start": start}]))}
                if draw(st.booleans()):
                    qa.pop(draw(st.sampled_from(sorted(qa))))
                qas.append(qa)
            paragraphs.append({"context": context, "qas": maybe(st.just(qas))})
        articles.append({"title": maybe(weird_text), "paragraphs": maybe(st.just(paragraphs))})
    return {"version": "v1.0", "data": maybe(st.just(articles))}


documents = st.one_of(cmrc_like(), any_json)


def _write(folder: Path, name: str, obj, raw: bytes | None = None) -> tuple[Path, str]:
    path = folder / name
    data = raw if raw is not None else json.dumps(obj, ensure_ascii=False).encode("utf-8", "surrogatepass")
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


def _unchanged(path: Path, digest: str) -> bool:
    return hashlib.sha256(path.read_bytes()).hexdigest() == digest


def _run(args, capsys) -> tuple[int, str]:
    code = cli.main(["-q", *args])
    err = capsys.readouterr().err
    assert code in (0, 1, 2), code
    if code == 2:
        assert "error: " in err and "Traceback" not in err
    return code, err


@SETTINGS
@given(doc=documents, raw=st.one_of(st.none(), st.binary(max_size=200)), mode=st.sampled_from(["train", "eval"]))
def test_data_check_never_crashes_or_writes_its_input(doc, raw, mode, capsys):
    with tempfile.TemporaryDirectory() as tmp:
        path, digest = _write(Path(tmp), "in.json", doc, raw)
        _run(["data", "check", str(path), "--mode", mode, "--out", str(Path(tmp) / "clean.json")], capsys)
        assert _unchanged(path, digest)


@SETTINGS
@given(doc=cmrc_like())
def test_augment_never_crashes_or_writes_its_input(doc, capsys):
    with tempfile.TemporaryDirectory() as tmp:
        path, digest = _write(Path(tmp), "in.json", doc)
        code, _ = _run(["augment", str(path), "--out", str(Path(tmp) / "out.json"), "--variants", "1"], capsys)
        assert _unchanged(path, digest)
        if code == 0:  # what it writes passes its own validation
            assert cli.main(["-q", "data", "check", str(Path(tmp) / "out.json")]) in (0, 1)
            capsys.readouterr()


@SETTINGS
@given(gold=documents, pred=st.one_of(any_json, st.dictionaries(weird_text, weird_text, max_size=5)),
       raw=st.one_of(st.none(), st.binary(max_size=100)))
def test_score_never_crashes_or_writes_its_inputs(gold, pred, raw, capsys):
    with tempfile.TemporaryDirectory() as tmp:
        g, gd = _write(Path(tmp), "gold.json", gold)
        p, pd = _write(Path(tmp), "pred.json", pred, raw)
        code, _ = _run(["score", str(g), str(p)], capsys)
        assert _unchanged(g, gd) and _unchanged(p, pd)


@settings(max_examples=8, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(doc=cmrc_like())
def test_evaluate_never_crashes_or_writes_its_input(teacher_run, doc, capsys):
    tmp_run, _, run_doc = teacher_run
    with tempfile.TemporaryDirectory() as tmp:
        path, digest = _write(Path(tmp), "dev.json", doc)
        code, _ = _run(["evaluate", f"{run_doc['run_dir']}/teacher", str(path), "--out",
                        str(Path(tmp) / "ev"), "--no-progress"], capsys)
        assert _unchanged(path, digest)
        if code == 0:
            metrics = json.loads((Path(tmp) / "ev" / "metrics.json").read_text(encoding="utf-8"))
            assert 0 <= metrics["f1"] <= 100


@pytest.fixture(scope="module")
def client(teacher_run):
    from fastapi.testclient import TestClient

    from paddleqa.service.serve import Engine, ServeConfig, create_app

    tmp, _, doc = teacher_run
    engine = Engine(f"{doc['run_dir']}/teacher", max_batch=4)
    with TestClient(create_app(ServeConfig(artifact=engine.artifact), engine=engine)) as c:
        yield c
    engine.close()


@SETTINGS
@given(body=st.one_of(
    st.binary(max_size=300),
    any_json.map(lambda o: json.dumps(o, ensure_ascii=False).encode("utf-8", "surrogatepass")),
    st.fixed_dictionaries({"question": weird_text}, optional={"context": weird_text})
      .map(lambda o: json.dumps(o, ensure_ascii=False).encode("utf-8", "surrogatepass")),
))
def test_server_answers_every_body_without_a_5xx(client, body):
    r = client.post("/answer", content=body, headers={"content-type": "application/json"})
    assert r.status_code < 500, r.text
    data = r.json()
    if r.status_code == 200:
        assert set(data) >= {"answer", "score", "start", "end", "latency_ms"}
    else:
        assert 400 <= r.status_code < 500 and data["error"]
