"""Distillation: KD vanishes for a perfect student, a smaller student trains, saves and reloads."""
import json
from pathlib import Path

import numpy as np
import pytest

from paddleqa import cli, pipeline
from paddleqa.core.config import ConfigError, from_dict

from conftest import distill_doc as _distill_doc, tiny_pipeline_doc


def test_distillation_loss_is_zero_for_a_student_equal_to_the_teacher(teacher_run, tmp_path):
    import paddle

    from paddleqa.models.build import load_model
    from paddleqa.models.distiller import Distiller
    from paddleqa.models.students import STUDENTS

    cfg = pipeline.build_plan(_distill_doc(teacher_run, tmp_path, alpha=0.0, temperature=3.0,
                                              hidden_weight=1.0, attention_weight=1.0,
                                              student={"dropout": 0.0}), enable=("distill",)).distill
    teacher = load_model(cfg.teacher)
    teacher.eval()
    student, layers = STUDENTS["ernie"](teacher, cfg.student)  # same shape, copied from the teacher
    assert layers == [1, 2, 3, 4]
    pairs = [(i, i) for i in range(1, 5)]
    distiller = Distiller(student, teacher, cfg.objective(pairs))
    ids = paddle.to_tensor([[1, 8, 9, 2, 10, 11, 12, 2, 0, 0], [1, 13, 2, 14, 15, 16, 17, 18, 19, 2]])
    types = paddle.to_tensor([[0, 3, 0, 0, 2, 1, 1, 1, 0, 0], [0, 0, 0, 1, 1, 1, 1, 1, 1, 1]])
    labels = paddle.to_tensor([4, 0]), paddle.to_tensor([6, 0])
    distiller.train()
    (loss,) = distiller(ids, types, *labels)
    assert abs(float(loss)) < 1e-5
    # A different student: the same objective is clearly positive.
    other, _ = STUDENTS["ernie"](teacher, from_dict(type(cfg.student), {"init": "random", "dropout": 0.0}))
    (loss2,) = Distiller(other, teacher, cfg.objective(pairs))(ids, types, *labels)
    assert float(loss2) > 1e-3
    # The same two terms written as data (`intermediate`) are the same objective.
    layers = [f"{i}:{i}" for i in range(1, 5)]
    as_data = pipeline.build_plan(_distill_doc(teacher_run, tmp_path, alpha=0.0, temperature=3.0, intermediate=[
        {"feature": "hidden", "loss": "hidden_mse", "layers": ["0:0", *layers], "weight": 1.0},
        {"feature": "attention", "loss": "attention_mse", "layers": layers, "weight": 1.0}],
        student={"dropout": 0.0}), enable=("distill",)).distill
    assert as_data.objective(pairs) == cfg.objective(pairs)
    (loss3,) = Distiller(other, teacher, as_data.objective(pairs))(ids, types, *labels)
    assert float(loss3) == pytest.approx(float(loss2), rel=1e-6)


def test_smaller_student_distils_saves_and_reloads(teacher_run, tmp_path, capsys):

    from paddleqa.runtime.evaluate import EvaluateConfig, run as evaluate
    from paddleqa.models.build import count_params, load_model

    doc = _distill_doc(teacher_run, tmp_path, student={"num_layers": 2, "intermediate_size": 32},
                       hidden_weight=0.5, attention_weight=0.5, noise_prob=0.5, noise_std=0.1,
                       epochs=10, batch_size=2, logging_steps=1)
    metrics = pipeline.run(doc, only="distill")["distill"]
    out = tmp_path / "distill"
    teacher = load_model(pipeline.build_plan(doc, enable=("distill",)).distill.teacher)
    student = load_model(str(out / "model"))
    assert student.config.num_hidden_layers == 2 and student.config.intermediate_size == 32
    assert count_params(student)["non_embedding_params"] < count_params(teacher)["non_embedding_params"]
    assert metrics["non_embedding_ratio"] < 0.5
    assert metrics["teacher_dev_f1"] is not None and "f1_retention" in metrics
    info = json.loads((out / "model" / "paddleqa_training.json").read_text(encoding="utf-8"))
    assert info["feature_params"]["overlap_types"] is True  # the teacher's inputs, kept
    assert info["student_layers_from_teacher"] == [2, 4]
    losses = [h["loss"] for h in json.loads((out / "train_log.json").read_text()) if "loss" in h]
    assert len(losses) >= 10 and np.mean(losses[-3:]) < np.mean(losses[:3])
    # The saved student is an ordinary model folder: evaluate scores it like the teacher.
    ev = evaluate(from_dict(EvaluateConfig, {"model": str(out / "model"), "data_file": teacher_run[1],
                                             "out_dir": str(tmp_path / "ev"), "progress": False}))
    assert ev["f1"] == pytest.approx(metrics["dev_f1"], abs=1e-6)
    # Rerunning the pipeline skips the finished stage.
    assert pipeline.run(doc, only="distill")["distill"] == json.loads((out / "metrics.json").read_text())


def test_extra_training_files_reach_the_student_alone_and_are_recorded(teacher_run, tmp_path):
    from conftest import TINY, write_json

    _, data, base = teacher_run
    extra = json.loads(json.dumps(TINY))
    for art in extra["data"]:  # other questions over the same passages: a second labelled set
        for par in art["paragraphs"]:
            for qa in par["qas"]:
                qa["id"] = "x" + qa["id"]
    extra_file = write_json(tmp_path / "extra.json", extra)
    doc = _distill_doc(teacher_run, tmp_path, student={"num_layers": 1}, epochs=1,
                       extra_train_files=[str(extra_file)])
    metrics = pipeline.run(doc, only="distill")["distill"]
    assert metrics["extra_train_questions"] == 3
    assert metrics["train_questions"] == 3 + 3  # the training file's and the extra file's
    manifest = json.loads((tmp_path / "distill" / "manifest.json").read_text(encoding="utf-8"))
    assert "extra_train_file_0" in json.dumps(manifest["inputs"])
    # the teacher was not retrained on it: its own record still counts the training file only
    t = json.loads((Path(base["run_dir"]) / "teacher" / "metrics.json").read_text(encoding="utf-8"))
    assert t["train_questions"] == 3
    with pytest.raises(ConfigError, match="dev file"):
        pipeline.build_plan(_distill_doc(teacher_run, tmp_path, extra_train_files=[str(data)]))


@pytest.mark.parametrize("change, message", [
    ({"alpha": 1.5}, "alpha must be in"),
    ({"prediction_loss": "kl"}, "valid: span_kd, span_mse"),
    ({"layer_map": ["2-4"]}, "must look like 'student:teacher'"),
    ({"student": {"kind": "lstm"}}, "valid: ernie, mobilenet"),
    ({"student": {"num_layers": 2, "init_layers": [1]}}, "one per student layer"),
    ({"intermediate": [{"feature": "logits", "layers": ["1:1"]}]}, "valid: hidden, attention"),
    ({"intermediate": [{"loss": "cosine", "layers": ["1:1"]}]}, "valid: hidden_mse, attention_mse"),
    ({"intermediate": [{"layers": ["1:1"], "projection": "pca"}]}, "valid: linear, none"),
    ({"intermediate": [{"feature": "attention", "loss": "attention_mse", "layers": ["0:0"]}]},
     "layers count from 1"),
    ({"intermediate": [{"layers": ["1:1"]}], "hidden_weight": 0.5}, "not both"),
])
def test_bad_distill_settings_are_named(teacher_run, tmp_path, change, message):
    with pytest.raises(ConfigError, match=message):
        pipeline.build_plan(_distill_doc(teacher_run, tmp_path, **change))


def test_cli_distill_names_a_missing_teacher(tmp_path, tiny_json, capsys):
    import yaml

    doc = tiny_pipeline_doc(tmp_path, tiny_json, tiny_json)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(doc), encoding="utf-8")
    assert cli.main(["distill", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "teacher folder" in err and "paddleqa finetune" in err


def test_a_labels_only_objective_is_the_gold_span_loss_without_running_the_teacher(teacher_run, tmp_path):
    import paddle

    from paddleqa.models import losses
    from paddleqa.models.build import load_model
    from paddleqa.models.distiller import Distiller
    from paddleqa.models.students import STUDENTS

    cfg = pipeline.build_plan(_distill_doc(teacher_run, tmp_path, alpha=1.0, student={"dropout": 0.0}),
                              enable=("distill",)).distill
    teacher = load_model(cfg.teacher)
    student, _ = STUDENTS["ernie"](teacher, cfg.student)
    distiller = Distiller(student, teacher, cfg.objective([]))
    calls = []
    teacher.register_forward_pre_hook(lambda layer, inputs: calls.append(1))
    ids = paddle.to_tensor([[1, 8, 9, 2, 10, 11, 12, 2, 0, 0]])
    types = paddle.to_tensor([[0, 3, 0, 0, 2, 1, 1, 1, 0, 0]])
    start, end = paddle.to_tensor([4]), paddle.to_tensor([6])
    distiller.eval()
    (loss,) = distiller(ids, types, start, end)
    out = student(input_ids=ids, token_type_ids=types, attention_mask=(ids != 0).astype("int64"),
                  return_dict=True)
    expected = losses.span_ce(out.start_logits, out.end_logits, start, end, (ids != 0).astype("int64"))
    assert float(loss) == pytest.approx(float(expected), rel=1e-6)
    assert calls == []  # the teacher never ran
    Distiller(student, teacher, pipeline.build_plan(_distill_doc(teacher_run, tmp_path, alpha=0.5),
                                                    enable=("distill",)).distill.objective([]))(
        ids, types, start, end)
    assert calls == [1]  # ...and runs as soon as its predictions are part of the loss
