"""`predict` on an unlabeled file and `evaluate` with intervals: one code path, same answers."""
from __future__ import annotations

import copy
import json

import pytest

from paddleqa.core.config import ConfigError, from_dict
from paddleqa.runtime.evaluate import EvaluateConfig, PredictConfig, predict, run as evaluate
from paddleqa.text.dataset import load_examples

from conftest import TINY, write_json


def _unlabeled(tmp_path):
    doc = copy.deepcopy(TINY)
    for art in doc["data"]:
        for para in art["paragraphs"]:
            for qa in para["qas"]:
                del qa["answers"]  # a hidden test set has questions only
    return write_json(tmp_path / "test.json", doc)


def test_unlabeled_file_loads_only_in_predict_mode(tmp_path):
    path = _unlabeled(tmp_path)
    assert load_examples(path, mode="eval")[0] == []
    examples, report = load_examples(path, mode="predict")
    assert [ex.qid for ex in examples] == ["q1", "q2", "q3"] and report.dropped == 0


def test_predict_answers_unlabeled_questions_like_evaluate(teacher_run, tmp_path):
    tmp, data, doc = teacher_run
    model = f"{doc['run_dir']}/teacher/model"
    out = tmp_path / "sub" / "predictions.json"
    metrics = predict(PredictConfig(model=model, data_file=str(_unlabeled(tmp_path)), out=str(out),
                                    nbest=3, cache_dir=str(tmp / "cache"), progress=False))
    preds = json.loads(out.read_text(encoding="utf-8"))
    contexts = {qa["id"]: p["context"] for a in TINY["data"] for p in a["paragraphs"] for qa in p["qas"]}
    assert set(preds) == set(contexts) and metrics["questions"] == 3
    assert all(ans in contexts[qid] for qid, ans in preds.items())  # extractive: spans of the context
    nbest = json.loads((out.parent / "predictions.nbest.json").read_text(encoding="utf-8"))
    assert all(1 <= len(v) <= 3 for v in nbest.values())
    assert (out.parent / "predictions.manifest.json").exists()
    ev = evaluate(EvaluateConfig(model=model, data_file=str(data), out_dir=str(tmp_path / "ev"),
                                 cache_dir=str(tmp / "cache"), progress=False, resamples=200))
    labelled = json.loads((tmp_path / "ev" / "predictions.json").read_text(encoding="utf-8"))
    assert labelled == preds  # the same code path gives the same answers with or without gold
    lo, hi = ev["f1_ci95"]
    assert lo <= ev["f1"] <= hi and ev["em_ci95"][0] <= ev["em"] <= ev["em_ci95"][1]


def test_predict_config_checks():
    with pytest.raises(ConfigError, match="out is required"):
        from_dict(PredictConfig, {"model": "m", "data_file": "d"})
    with pytest.raises(ConfigError, match="nbest must be between 0 and n_best"):
        from_dict(PredictConfig, {"model": "m", "data_file": "d", "out": "o", "nbest": 50})
