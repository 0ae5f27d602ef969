"""Loading, repairing and rejecting SQuAD/CMRC data: every bad-input case has a clear message."""
import copy
import json

import pytest

from conftest import CONTEXT_1, TINY, write_json
from paddleqa import cli
from paddleqa.text.dataset import load_examples, to_squad_json
from paddleqa.core.errors import DataError


def _doc(mutate):
    doc = copy.deepcopy(TINY)
    mutate(doc)
    return doc


def _check(capsys, path, *extra):
    code = cli.main(["-q", "data", "check", str(path), *extra])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_clean_file_loads_every_question(tiny_json):
    examples, report = load_examples(tiny_json)
    assert [e.qid for e in examples] == ["q1", "q2", "q3"]
    assert report.repaired == report.dropped == 0
    for e in examples:  # answers sit at their offsets
        assert e.context[e.answer_starts[0]: e.answer_starts[0] + len(e.answers[0])] == e.answers[0]


def test_offsets_off_by_up_to_three_are_repaired_and_counted(tmp_path):
    def shift(doc):
        doc["data"][0]["paragraphs"][0]["qas"][0]["answers"][0]["answer_start"] += 2
        doc["data"][0]["paragraphs"][0]["qas"][1]["answers"][0]["answer_start"] -= 3
    path = write_json(tmp_path / "shifted.json", _doc(shift))
    before = path.read_bytes()
    examples, report = load_examples(path)
    assert report.repaired == 2 and report.dropped == 0
    e = examples[0]
    assert e.context[e.answer_starts[0]:].startswith(e.answers[0])
    assert path.read_bytes() == before  # the input is never modified


def test_offset_off_by_more_is_dropped_with_record_id(tmp_path, capsys):
    def far(doc):
        doc["data"][0]["paragraphs"][0]["qas"][0]["answers"][0]["answer_start"] = 30
    path = write_json(tmp_path / "far.json", _doc(far))
    examples, report = load_examples(path)
    assert report.dropped == 1 and "q1" not in {e.qid for e in examples}
    code, out, _ = _check(capsys, path)
    assert code == 0 and "[dropped] q1" in out and "answer_start 30" in out
    assert "occurs at offsets" in out  # says where the text really is


def test_answer_not_in_context(tmp_path, capsys):
    def missing(doc):
        doc["data"][1]["paragraphs"][0]["qas"][0]["answers"][0]["text"] = "不存在的答案"
    path = write_json(tmp_path / "notin.json", _doc(missing))
    code, out, _ = _check(capsys, path)
    assert "[dropped] q3" in out and "not in the context" in out
    # in eval mode the question is kept: the metric scores texts, not offsets
    examples, report = load_examples(path, mode="eval")
    assert "q3" in {e.qid for e in examples} and report.warnings == 1


def test_empty_context_and_empty_question(tmp_path, capsys):
    def empty(doc):
        doc["data"][1]["paragraphs"][0]["context"] = "   "
        doc["data"][0]["paragraphs"][0]["qas"][1]["question"] = ""
    path = write_json(tmp_path / "empty.json", _doc(empty))
    code, out, _ = _check(capsys, path)
    assert "[dropped] p2: empty context" in out
    assert "[dropped] q2: empty question" in out
    assert "questions kept: 1" in out


def test_oversize_context_is_dropped_with_advice(tmp_path, capsys):
    def huge(doc):
        doc["data"][1]["paragraphs"][0]["context"] = "很长的段落。" * 3334  # 20,004 characters
    path = write_json(tmp_path / "huge.json", _doc(huge))
    code, out, _ = _check(capsys, path)
    assert "[dropped] p2" in out and "20004 characters" in out and "--max-context-chars" in out


def test_malformed_json_names_file_line_and_fix(tmp_path, capsys):
    path = tmp_path / "broken.json"
    path.write_text('{"data": [\n  {"title": "x",\n   "paragraphs": [}\n]}', encoding="utf-8")
    with pytest.raises(DataError, match=r"broken.json: malformed JSON at line 3"):
        load_examples(path)
    code, out, err = _check(capsys, path)
    assert code == 2 and "malformed JSON at line 3" in err and "Traceback" not in err


@pytest.mark.parametrize("text,message", [
    ("[" * 100_000 + "]" * 100_000, "JSON nested too deeply"),
    ('{"data": [], "version": ' + "9" * 5000 + "}", "unreadable JSON value"),
])
def test_hostile_json_is_a_clear_error_not_a_traceback(tmp_path, capsys, text, message):
    path = tmp_path / "hostile.json"
    path.write_text(text, encoding="utf-8")
    code, _, err = _check(capsys, path)
    assert code == 2 and f"hostile.json: {message}" in err and "Traceback" not in err


def test_wrong_schema(tmp_path, capsys):
    path = write_json(tmp_path / "list.json", [{"question": "x"}])
    code, _, err = _check(capsys, path)
    assert code == 2 and "wrong schema" in err and "'data' list" in err
    path = write_json(tmp_path / "noqas.json", {"data": [{"title": "t", "paragraphs": [{"context": "c"}]}]})
    code, out, _ = _check(capsys, path)
    assert code == 1 and "no 'qas' list" in out


def test_non_utf8_bytes(tmp_path, capsys):
    path = tmp_path / "gbk.json"
    path.write_bytes(json.dumps(TINY, ensure_ascii=False).encode("gbk"))
    code, _, err = _check(capsys, path)
    assert code == 2 and "not UTF-8" in err and "byte offset" in err and "iconv" in err


def test_missing_file_and_bom(tmp_path, capsys):
    code, _, err = _check(capsys, tmp_path / "nope.json")
    assert code == 2 and "file not found" in err
    path = tmp_path / "bom.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(TINY, ensure_ascii=False).encode("utf-8"))
    examples, report = load_examples(path)
    assert len(examples) == 3 and report.repaired == 1


def test_duplicate_ids_keep_the_first(tmp_path):
    def dup(doc):
        doc["data"][1]["paragraphs"][0]["qas"][0]["id"] = "q1"
    examples, report = load_examples(write_json(tmp_path / "dup.json", _doc(dup)))
    assert [e.qid for e in examples] == ["q1", "q2"] and report.dropped == 1


def test_repaired_output_round_trips(tmp_path, capsys):
    def shift(doc):
        doc["data"][0]["paragraphs"][0]["qas"][0]["answers"][0]["answer_start"] += 1
    src = write_json(tmp_path / "in.json", _doc(shift))
    out = tmp_path / "clean.json"
    code, text, _ = _check(capsys, src, "--out", str(out))
    assert code == 0 and "repaired: 1" in text
    again, report = load_examples(out)
    assert len(again) == 3 and report.repaired == 0
    assert to_squad_json(again)["data"][0]["paragraphs"][0]["context"] == CONTEXT_1


def test_summary_json_has_histogram(tiny_json, capsys):
    code, out, _ = _check(capsys, tiny_json, "--json")
    summary = json.loads(out)
    assert summary["questions"] == 3 and summary["contexts"] == 2
    assert sum(summary["answer_length_histogram"].values()) == 3


def test_fetch_cmrc_checks_sha256(tmp_path, capsys):
    from conftest import CMRC_DIR

    if not (CMRC_DIR / "cmrc2018_dev.json").exists():
        pytest.skip("CMRC 2018 not available")
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for name in ("cmrc2018_train.json", "cmrc2018_dev.json"):
        (mirror / name).write_bytes((CMRC_DIR / name).read_bytes())
    out = tmp_path / "cmrc"
    assert cli.main(["-q", "data", "fetch-cmrc", "--out", str(out), "--base-url", mirror.as_uri()]) == 0
    assert (out / "cmrc2018_dev.json").read_bytes() == (CMRC_DIR / "cmrc2018_dev.json").read_bytes()
    capsys.readouterr()
    with open(mirror / "cmrc2018_dev.json", "ab") as fh:  # a damaged download is refused
        fh.write(b" ")
    (out / "cmrc2018_dev.json").unlink()
    assert cli.main(["-q", "data", "fetch-cmrc", "--out", str(out), "--base-url", mirror.as_uri()]) == 2
    assert "does not match" in capsys.readouterr().err and not (out / "cmrc2018_dev.json").exists()


def test_cmrc2018_known_defects_are_repaired():
    from conftest import CMRC_DIR

    if not (CMRC_DIR / "cmrc2018_train.json").exists():
        pytest.skip("CMRC 2018 not available")
    train, report = load_examples(CMRC_DIR / "cmrc2018_train.json")
    # the public release has 21 answer offsets off by 1-3 characters; all are repairable
    assert (len(train), report.repaired, report.dropped) == (10142, 21, 0)
    dev, report = load_examples(CMRC_DIR / "cmrc2018_dev.json", mode="eval")
    assert len(dev) == 3219 and report.dropped == 0


def test_embedded_sample_data_is_clean_and_split_by_passage():
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent / "data"
    train, tr = load_examples(root / "cs_qa_train.json")
    dev, dr = load_examples(root / "cs_qa_dev.json")
    assert tr.repaired == tr.dropped == dr.repaired == dr.dropped == 0
    assert len(train) + len(dev) >= 250
    assert not {e.context for e in train} & {e.context for e in dev}
    assert len({e.qid for e in train + dev}) == len(train) + len(dev)
    for e in train + dev:
        for text, start in zip(e.answers, e.answer_starts):
            assert e.context[start: start + len(text)] == text
