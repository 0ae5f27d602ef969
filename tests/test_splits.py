"""The validation split: by context, stable, disjoint from training, wired into every training stage."""
from __future__ import annotations

import json

import pytest

from conftest import tiny_pipeline_doc, write_json
from paddleqa import pipeline
from paddleqa.core.errors import DataError
from paddleqa.text.dataset import load_examples
from paddleqa.text.splits import build_training_sets


def _many_contexts(n: int, tag: str = "") -> dict:
    """n passages with two questions each (answers at their offsets)."""
    articles = []
    for i in range(n):
        ctx = f"第{i}号{tag}门店的营业时间是上午{i % 12 + 1}点到晚上九点，节假日照常营业。"
        ans = f"上午{i % 12 + 1}点"
        articles.append({"title": f"店{i}", "paragraphs": [{"id": f"p{i}", "context": ctx, "qas": [
            {"id": f"{tag}q{i}a", "question": f"第{i}号门店几点开门？",
             "answers": [{"text": ans, "answer_start": ctx.index(ans)}]},
            {"id": f"{tag}q{i}b", "question": f"第{i}号门店节假日营业吗？",
             "answers": [{"text": "照常营业", "answer_start": ctx.index("照常营业")}]},
        ]}]})
    return {"version": "v1.0", "data": articles}


def _contexts(path) -> set[str]:
    examples, _ = load_examples(path, mode="eval")
    return {ex.context for ex in examples}


def test_split_is_by_context_disjoint_and_complete(tmp_path):
    src = write_json(tmp_path / "train.json", _many_contexts(200))
    result = build_training_sets([str(src)], tmp_path / "t.json", tmp_path / "v.json", share=0.1, seed=0)
    train, val = _contexts(tmp_path / "t.json"), _contexts(tmp_path / "v.json")
    assert not train & val
    assert len(train | val) == 200
    assert 5 <= len(val) <= 40  # ~10% of 200 contexts
    # every question of a held-out context is held out with it
    val_examples, _ = load_examples(tmp_path / "v.json", mode="eval")
    assert len(val_examples) == 2 * len(val) == result["validation"]["questions"]


def test_split_depends_only_on_the_passage(tmp_path):
    src = write_json(tmp_path / "train.json", _many_contexts(120))
    extra = write_json(tmp_path / "extra.json", _many_contexts(50, tag="繁"))
    build_training_sets([str(src)], tmp_path / "a.json", tmp_path / "va.json", share=0.1, seed=3)
    # another file merged in, and the source file's articles reversed: the same passages held out
    doc = json.loads(src.read_text(encoding="utf-8"))
    doc["data"].reverse()
    shuffled = write_json(tmp_path / "shuffled.json", doc)
    result = build_training_sets([str(shuffled), str(extra)], tmp_path / "b.json", tmp_path / "vb.json",
                                 share=0.1, seed=3)
    assert _contexts(tmp_path / "va.json") == _contexts(tmp_path / "vb.json")
    # the extra file goes wholly to training
    assert result["questions"] == 2 * (120 - len(_contexts(tmp_path / "vb.json"))) + 100
    # another seed holds out other passages
    build_training_sets([str(src)], tmp_path / "c.json", tmp_path / "vc.json", share=0.1, seed=4)
    assert _contexts(tmp_path / "vc.json") != _contexts(tmp_path / "va.json")


def test_a_split_that_holds_out_nothing_is_an_error_naming_the_file(tmp_path):
    src = write_json(tmp_path / "train.json", _many_contexts(2))
    with pytest.raises(DataError, match="train.json.*validation_share"):
        build_training_sets([str(src)], tmp_path / "t.json", tmp_path / "v.json", share=0.001, seed=0)


def test_pipeline_chooses_on_validation_and_scores_dev_separately(tmp_path):
    train = write_json(tmp_path / "train.json", _many_contexts(60))
    dev = write_json(tmp_path / "dev.json", _many_contexts(5, tag="dev"))
    doc = tiny_pipeline_doc(tmp_path, train, dev)
    doc["data"]["validation_share"] = 0.1
    doc["distill"] = {}
    cfg = pipeline.build_plan(doc, enable=("prune",))
    data_dir = tmp_path / "run" / "data"
    for stage in (cfg.finetune, cfg.distill, cfg.prune):
        assert stage.validation_file == str(data_dir / "validation.json")
        assert stage.train_file == str(data_dir / "train.json")
        assert stage.dev_file == str(dev)
    results = pipeline.run(doc, only="data")
    held = results["data"]["validation"]
    assert held["questions"] > 0 and held["split_from"] == str(train)
    assert not _contexts(data_dir / "train.json") & _contexts(data_dir / "validation.json")
    layout = json.loads((tmp_path / "run" / "layout.json").read_text(encoding="utf-8"))
    assert layout["files"]["validation"] == "data/validation.json"
    # the teacher's learning curve is scored on the validation split, not on dev
    doc["finetune"].update(epochs=1, max_steps=-1)
    pipeline.run(doc, only="vocab")
    metrics = pipeline.run(doc, only="finetune")["finetune"]
    curve = json.loads((tmp_path / "run" / "teacher" / "learning_curve.json").read_text(encoding="utf-8"))
    assert curve and "validation_f1" in curve[0] and "dev_f1" not in curve[0]
    assert curve[0]["validation_questions"] == held["questions"]
    assert "validation_f1" in metrics and "dev_f1" in metrics


def test_teacher_can_train_on_augmented_questions_never_of_the_validation_split(tmp_path):
    train = write_json(tmp_path / "train.json", _many_contexts(60))
    doc = tiny_pipeline_doc(tmp_path, train, train)
    doc["data"]["validation_share"] = 0.1
    doc["augment"] = {"teacher": True, "variants": 1}
    cfg = pipeline.build_plan(doc)
    augmented = tmp_path / "run" / "augment" / "train.json"
    assert cfg.finetune.train_file == str(augmented) == pipeline.build_plan(doc, enable=("distill",)).distill.train_file
    assert cfg.augment.input_file == str(tmp_path / "run" / "data" / "train.json")
    pipeline.run(doc, only="data")
    pipeline.run(doc, only="augment")
    assert not _contexts(augmented) & _contexts(tmp_path / "run" / "data" / "validation.json")
    # without augment.teacher the teacher reads the split's training part, the students the variants
    doc["augment"]["teacher"] = False
    cfg = pipeline.build_plan(doc)
    assert cfg.finetune.train_file == str(tmp_path / "run" / "data" / "train.json")
    assert pipeline.build_plan(doc, enable=("distill",)).distill.train_file == str(augmented)


def test_pruning_sensitivity_is_scored_on_the_validation_split(tmp_path):
    from paddleqa.stages.prune import sensitivity_examples

    train = write_json(tmp_path / "train.json", _many_contexts(60))
    doc = tiny_pipeline_doc(tmp_path, train, train)
    doc["data"]["validation_share"] = 0.1
    doc["prune"] = {"sensitivity_questions": 3}
    pipeline.run(doc, only="data")
    cfg = pipeline.build_plan(doc, enable=("prune",)).prune
    training, _ = load_examples(cfg.train_file, mode="train")
    chosen = sensitivity_examples(cfg, training)
    assert len(chosen) == 3
    assert not {ex.context for ex in chosen} & {ex.context for ex in training}
