"""Several training files: the data stage merges them and every training stage reads the merge."""
from __future__ import annotations

import copy
import json

from conftest import TINY, tiny_pipeline_doc, write_json
from paddleqa import pipeline
from paddleqa.text.dataset import load_examples


def test_training_files_are_merged_and_wired(tmp_path):
    train = write_json(tmp_path / "train.json", TINY)
    extra = copy.deepcopy(TINY)  # the same ids again (as two releases of one dataset would have)
    extra["data"][0]["paragraphs"][0]["context"] += "另行通知。"
    drcd = write_json(tmp_path / "drcd_dev.json", extra)
    dev = write_json(tmp_path / "dev.json", TINY)
    doc = tiny_pipeline_doc(tmp_path, train, dev)
    doc["data"]["train_files"] = [str(drcd)]
    doc["quantize"] = {}
    results = pipeline.run(doc, only="data")
    merged = tmp_path / "run" / "data" / "train.json"
    examples, report = load_examples(merged, mode="train")
    assert len(examples) == 6 and report.dropped == 0
    ids = [ex.qid for ex in examples]
    assert sorted(ids) == ["drcd_dev:q1", "drcd_dev:q2", "drcd_dev:q3", "q1", "q2", "q3"]
    assert all(ex.context[s:s + len(a)] == a for ex in examples for a, s in zip(ex.answers, ex.answer_starts))
    assert results["data"]["merged_train"]["ids_prefixed"] == 3
    cfg = pipeline.build_plan(doc)
    assert cfg.finetune.train_file == str(merged) == cfg.quantize.calib_file
    assert pipeline.build_plan(doc, enable=("distill",)).distill.train_file == str(merged)
    layout = json.loads((tmp_path / "run" / "layout.json").read_text(encoding="utf-8"))
    assert layout["files"]["merged_train"] == "data/train.json"
    # without train_files nothing changes: the training stages read train_file itself
    del doc["data"]["train_files"]
    assert pipeline.build_plan(doc).finetune.train_file == str(train)
