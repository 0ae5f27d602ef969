"""Traditional -> Simplified conversion of a SQuAD file: every kept answer sits at its offset."""
from __future__ import annotations

import json

import pytest

from conftest import write_json
from paddleqa import cli
from paddleqa.core.config import ConfigError, from_dict
from paddleqa.text.dataset import load_examples
from paddleqa.text.simplify import SimplifyConfig, run

CONTEXT = "電腦的記憶體不足時，請關閉網際網路瀏覽器再使用軟體。臺灣的計程車很多。"


def _doc():
    def ans(text):
        return {"text": text, "answer_start": CONTEXT.index(text)}

    return {"version": "1.3", "data": [{"title": "電腦", "paragraphs": [{"id": "p1", "context": CONTEXT, "qas": [
        {"id": "q1", "question": "記憶體不足時該關閉什麼？", "answers": [ans("網際網路瀏覽器")]},
        {"id": "q2", "question": "再使用什麼？", "answers": [ans("軟體"), ans("使用軟體")]},
        {"id": "q3", "question": "哪裡的計程車很多？", "answers": [ans("臺灣")]},
        # half of a word that tw2sp converts as a phrase (記憶體 -> 内存): cannot survive
        {"id": "q4", "question": "什麼不足？", "answers": [ans("憶體")]},
    ]}]}]}


@pytest.mark.parametrize("opencc, recomputed", [("t2s", 0), ("tw2sp", 4)])
def test_every_kept_answer_stays_at_its_offset(tmp_path, opencc, recomputed):
    src = write_json(tmp_path / "drcd.json", _doc())
    before = src.read_bytes()
    out = tmp_path / "simplified.json"
    m = run(SimplifyConfig(input_file=str(src), output_file=str(out), opencc=opencc))
    doc = json.loads(out.read_text(encoding="utf-8"))
    para = doc["data"][0]["paragraphs"][0]
    for qa in para["qas"]:
        for a in qa["answers"]:
            assert para["context"][a["answer_start"]: a["answer_start"] + len(a["text"])] == a["text"]
    assert doc["data"][0]["title"] == "电脑" and para["qas"][0]["question"].startswith("内存" if opencc == "tw2sp" else "记忆体")
    assert m["offsets_recomputed"] == recomputed and m["questions"] == 4
    if opencc == "tw2sp":  # 記憶體 -> 内存, 網際網路 -> 互联网: later offsets move
        assert "软件" in para["context"] and m["answers_dropped"] == 1 and m["questions_dropped"] == 1
    else:
        assert m["answers_dropped"] == 0 and len(para["qas"]) == 4
    examples, report = load_examples(out, mode="train")  # passes data check as it is
    assert report.dropped == 0 and report.repaired == 0 and len(examples) == len(para["qas"])
    assert src.read_bytes() == before and (tmp_path / "simplified.manifest.json").exists()


def test_cli_and_bad_settings(tmp_path, capsys):
    src = write_json(tmp_path / "drcd.json", _doc())
    assert cli.main(["-q", "data", "simplify", str(src), "--out", str(tmp_path / "s.json")]) == 0
    assert json.loads(capsys.readouterr().out)["answers"] == 5
    with pytest.raises(ConfigError, match="unknown opencc 'zh2xx'"):
        from_dict(SimplifyConfig, {"input_file": "a", "output_file": "b", "opencc": "zh2xx"})
    assert cli.main(["-q", "data", "simplify", str(tmp_path / "missing.json"), "--out", str(tmp_path / "x.json")]) == 2
    assert "missing.json: file not found" in capsys.readouterr().err


def test_the_data_stage_converts_traditional_files_and_merges_them(tmp_path):
    from conftest import TINY, tiny_pipeline_doc
    from paddleqa import pipeline

    train, dev = write_json(tmp_path / "train.json", TINY), write_json(tmp_path / "dev.json", TINY)
    src = write_json(tmp_path / "DRCD_dev.json", _doc())
    before = src.read_bytes()
    doc = tiny_pipeline_doc(tmp_path, train, dev)
    doc["data"]["traditional_files"] = [str(src)]
    doc["quantize"] = {}
    metrics = pipeline.run(doc, only="data")["data"]
    examples, report = load_examples(tmp_path / "run" / "data" / "train.json", mode="train")
    drcd = [ex for ex in examples if "计程车" in ex.context]  # the converted passage
    assert len(examples) == 3 + 4 and len(drcd) == 4 and report.dropped == 0 and src.read_bytes() == before
    assert all("記" not in ex.question and "記" not in ex.context for ex in drcd)  # Simplified now
    assert all(ex.context[s:s + len(a)] == a for ex in drcd for a, s in zip(ex.answers, ex.answer_starts))
    assert metrics["simplified"][str(src)]["questions"] == 4
    assert (tmp_path / "run" / "data" / "simplified" / "DRCD_dev.json").exists()
    with pytest.raises(ConfigError, match="opencc"):
        pipeline.build_plan({**doc, "data": {**doc["data"], "opencc": "nope"}})
