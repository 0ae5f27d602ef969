"""Synonym augmentation: variants differ, answers stay put, output stays valid, input untouched."""
import json
from pathlib import Path

import pytest

from paddleqa import cli
from paddleqa.text.augment import AugmentConfig, run
from paddleqa.core.config import ConfigError, from_dict
from paddleqa.text.dataset import load_examples
from paddleqa.core.manifest import sha256_path

from conftest import CONTEXT_1, REPO, write_json

THESAURUS = "Aa01A01= 退货 退换\nAa01A02= 办理 处理 料理\nAa01A03# 电话 话机\nBa01A01= 签收 收下\n"


def _doc(questions):
    return {"version": "v1.0", "data": [{"title": "退货", "paragraphs": [
        {"id": "p1", "context": CONTEXT_1, "qas": [
            {"id": qid, "question": q, "answers": [{"text": a, "answer_start": CONTEXT_1.index(a)}]}
            for qid, q, a in questions]}]}]}


@pytest.fixture
def thesaurus(tmp_path) -> Path:
    path = tmp_path / "cilin.txt"
    path.write_text(THESAURUS, encoding="utf-8")
    return path


def _config(src, out, thesaurus, **kw) -> AugmentConfig:
    base = dict(input_file=str(src), output_file=str(out), source="cilin", cilin_file=str(thesaurus),
                min_word_freq=0, same_pos=False, variants=3, rate=0.5)
    base.update(kw)
    return from_dict(AugmentConfig, base)


def _check_valid(path: Path):
    examples, report = load_examples(path, mode="train")
    assert report.repaired == 0 and report.dropped == 0
    for ex in examples:
        for text, start in zip(ex.answers, ex.answer_starts):
            assert ex.context[start: start + len(text)] == text
    assert len({ex.qid for ex in examples}) == len(examples)
    return examples


def test_variants_differ_and_answers_stay_at_their_offsets(tmp_path, thesaurus):
    src = write_json(tmp_path / "in.json", _doc([
        ("q1", "签收后几天内可以退货？", "7天"),
        ("q2", "退款多久能办理到账？", "3个工作日"),
    ]))
    before = sha256_path(src)
    out = tmp_path / "out" / "aug.json"
    metrics = run(_config(src, out, thesaurus), progress=False)
    assert sha256_path(src) == before  # the input is never modified
    examples = _check_valid(out)
    originals = {ex.qid: ex for ex in load_examples(src)[0]}
    variants = [ex for ex in examples if ex.qid not in originals]
    assert metrics["variants"] == len(variants) > 0
    assert metrics["output_questions"] == len(examples) == len(originals) + len(variants)
    for ex in variants:
        orig = originals[ex.qid.split("-aug")[0]]
        assert ex.question != orig.question
        assert (ex.context, ex.answers, ex.answer_starts) == (orig.context, orig.answers, orig.answer_starts)
    for qid in originals:  # a question's variants are distinct
        texts = [ex.question for ex in variants if ex.qid.startswith(qid + "-aug")]
        assert len(texts) == len(set(texts))
    # '#' lines are related words, not synonyms: 电话 is never replaced by 话机.
    assert not any("话机" in ex.question for ex in examples)
    assert (out.parent / "aug.manifest.json").exists() and (out.parent / "aug.metrics.json").exists()


def test_words_that_form_the_answer_are_never_replaced(tmp_path, thesaurus):
    src = write_json(tmp_path / "in.json", _doc([("q1", "哪种退货可以无理由办理？", "无理由退货")]))
    out = tmp_path / "aug.json"
    metrics = run(_config(src, out, thesaurus, variants=5, rate=1.0), progress=False)
    variants = [ex for ex in _check_valid(out) if ex.qid != "q1"]
    assert variants and metrics["skipped_answer_words"] >= 1
    assert all("退货" in ex.question and "退换" not in ex.question for ex in variants)
    assert all("办理" not in ex.question for ex in variants)  # rate 1.0: every free slot replaced


def test_same_seed_same_output(tmp_path, thesaurus):
    src = write_json(tmp_path / "in.json", _doc([("q1", "签收后几天内可以退货？", "7天")]))
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    run(_config(src, a, thesaurus, seed=3), progress=False)
    run(_config(src, b, thesaurus, seed=3), progress=False)
    assert a.read_bytes() == b.read_bytes()


def test_sample_data_with_the_shipped_thesaurus(tmp_path):
    src = REPO / "data" / "cs_qa_train.json"
    out = tmp_path / "aug.json"
    cfg = from_dict(AugmentConfig, {"input_file": str(src), "output_file": str(out), "variants": 2,
                                    "source": "auto"})
    metrics = run(cfg, progress=False)
    assert metrics["source"] == "cilin"  # no word vectors here: the offline thesaurus
    examples = _check_valid(out)
    assert metrics["questions_with_variants"] > metrics["questions"] // 2
    assert len(examples) == metrics["questions"] + metrics["variants"]


@pytest.mark.parametrize("change, message", [
    ({"source": "wordnet"}, "valid: auto, cilin, synonyms"),
    ({"variants": 0}, "variants must be >= 1"),
    ({"rate": 1.5}, "rate must be in (0, 1]"),
    ({"pos": []}, "pos must name at least one"),
])
def test_bad_settings_are_named(tmp_path, thesaurus, change, message):
    src = write_json(tmp_path / "in.json", _doc([("q1", "签收后几天内可以退货？", "7天")]))
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")
                       .replace("[", r"\[")):
        _config(src, tmp_path / "o.json", thesaurus, **change)


def test_cli_errors_are_clear_and_lose_nothing(tmp_path, tiny_json, capsys):
    before = sha256_path(tiny_json)
    assert cli.main(["augment", str(tiny_json), "--out", str(tiny_json)]) == 2
    assert "input is never overwritten" in capsys.readouterr().err
    assert cli.main(["augment", str(tiny_json), "--out", str(tmp_path / "o.json"),
                     "--cilin-file", str(tmp_path / "missing.txt"), "--source", "cilin"]) == 2
    err = capsys.readouterr().err
    assert "missing.txt" in err and "Traceback" not in err
    assert cli.main(["augment", str(tiny_json), "--out", str(tmp_path / "o.json"),
                     "--source", "synonyms"]) == 2
    assert "Use source 'cilin'" in capsys.readouterr().err
    assert sha256_path(tiny_json) == before and not (tmp_path / "o.json").exists()
    assert cli.main(["-q", "augment", str(tiny_json), "--out", str(tmp_path / "o.json")]) == 0
    assert json.loads(capsys.readouterr().out)["output_questions"] >= 3
