"""Lexical marks in the token types (jieba word segmentation, LAC entity classes): widening a
model's type table changes nothing until it trains; a teacher trained with them has 56 types, its
students inherit them, and the exported graphs see the same inputs as dygraph."""
import json
import shutil

import numpy as np
import paddle
import pytest

from conftest import TINY, TINY_ARCH, tiny_pipeline_doc, write_json
from paddleqa import pipeline
from paddleqa.models.build import ArchConfig, build_from_scratch, load_model, widen_token_types
from paddleqa.text.features import (ENTITY_STEP, TYPES_WITH_ENTITY_MARKS, TYPES_WITH_WORD_MARKS,
                                     WORD_INSIDE)


def _logits(model, ids, types):
    model.eval()
    with paddle.no_grad():
        s, e = model(input_ids=paddle.to_tensor(ids), token_type_ids=paddle.to_tensor(types))[:2]
    return s.numpy(), e.numpy()


@pytest.mark.parametrize("kind", ["ernie", "mobilenet"])
def test_widened_types_start_as_copies_and_survive_saving(kind, tmp_path):
    paddle.seed(0)
    model = build_from_scratch(ArchConfig(**{**TINY_ARCH, "kind": kind, "conv_blocks": 1,
                                             "expand_ratio": 2, "kernel_size": 3}), vocab_size=40)
    rng = np.random.default_rng(0)
    ids = rng.integers(3, 40, size=(2, 12))
    types = rng.integers(0, 4, size=(2, 12))
    before = _logits(model, ids, types)
    assert widen_token_types(model, TYPES_WITH_WORD_MARKS) == 4
    assert model.config.type_vocab_size == TYPES_WITH_WORD_MARKS
    marked = types + WORD_INSIDE * rng.integers(0, 2, size=types.shape)
    for t in (types, marked):  # types 4-7 are types 0-3 until training moves them
        np.testing.assert_allclose(_logits(model, ids, t)[0], before[0], atol=1e-6)
    assert widen_token_types(model, TYPES_WITH_WORD_MARKS) == TYPES_WITH_WORD_MARKS  # no-op
    assert widen_token_types(model, TYPES_WITH_ENTITY_MARKS) == TYPES_WITH_WORD_MARKS
    entity = marked + ENTITY_STEP * rng.integers(0, 7, size=types.shape)
    np.testing.assert_allclose(_logits(model, ids, entity)[0], before[0], atol=1e-6)
    model.save_pretrained(str(tmp_path / "m"))
    again = load_model(str(tmp_path / "m"))
    assert again.config.type_vocab_size == TYPES_WITH_ENTITY_MARKS
    np.testing.assert_allclose(_logits(again, ids, entity)[0], before[0], atol=1e-6)


@pytest.fixture(scope="module")
def marked_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("marks")
    data = write_json(tmp / "tiny.json", TINY)
    doc = tiny_pipeline_doc(tmp, data, data, epochs=2, overlap_types=True, word_marks=True,
                            entity_marks=True)
    pipeline.run(doc, only="vocab")
    pipeline.run(doc, only="finetune")
    return tmp, data, doc


def test_a_marked_teacher_trains_its_word_types_and_its_student_inherits_them(marked_run):
    tmp, data, doc = marked_run
    teacher_dir = f"{doc['run_dir']}/teacher/model"
    teacher = load_model(teacher_dir)
    table = teacher.ernie.embeddings.token_type_embeddings.weight.numpy()
    assert table.shape[0] == TYPES_WITH_ENTITY_MARKS
    assert not np.allclose(table[WORD_INSIDE:2 * WORD_INSIDE], table[:WORD_INSIDE])  # told apart
    info = json.loads((tmp / "run" / "teacher" / "model" / "paddleqa_training.json").read_text())
    assert info["feature_params"]["word_marks"] is True and info["feature_params"]["entity_marks"]
    doc = json.loads(json.dumps(doc))
    doc["distill"] = {"output_dir": str(tmp / "distill"), "epochs": 1, "batch_size": 4,
                      "save_steps": 4, "logging_steps": 2, "student": {"num_layers": 1}}
    pipeline.run(doc, only="distill")
    student = load_model(str(tmp / "distill" / "model"))
    assert student.config.type_vocab_size == TYPES_WITH_ENTITY_MARKS
    sinfo = json.loads((tmp / "distill" / "model" / "paddleqa_training.json").read_text())
    assert sinfo["feature_params"]["word_marks"] and sinfo["feature_params"]["entity_marks"]


def test_exported_graphs_read_word_marked_windows_as_dygraph_does(marked_run, tmp_path):
    from paddleqa.runtime.artifacts import explicit_inputs, open_artifact
    from paddleqa.stages.export import ExportConfig, run
    from paddleqa.text.dataset import load_examples
    from paddleqa.text.features import build_features, feature_params_for
    from paddleqa.text.tokenizer import load_tokenizer

    tmp, data, doc = marked_run
    model = f"{doc['run_dir']}/teacher"
    out = tmp_path / "export"
    run(ExportConfig(model=model, out_dir=str(out), targets=["x86"], onnx=True))
    params = feature_params_for(f"{model}/model")
    assert params.word_marks and params.entity_marks
    feats = build_features(load_examples(data)[0], load_tokenizer(f"{model}/model"), params,
                           train=False, progress=False)
    n = min(4, len(feats["input_ids"]))
    lengths = feats["length"][:n]
    width = int(lengths.max())
    inputs = explicit_inputs({"input_ids": feats["input_ids"][:n, :width].astype("int64"),
                              "token_type_ids": feats["token_type_ids"][:n, :width].astype("int64")},
                             lengths)
    assert (inputs["token_type_ids"] % ENTITY_STEP >= WORD_INSIDE).any()  # word marks
    assert (inputs["token_type_ids"] >= ENTITY_STEP).any()  # and entity marks
    ref, _ = _logits(load_model(f"{model}/model"), inputs["input_ids"], inputs["token_type_ids"])
    for artifact in (out / "inference", out / "x86-fp32" / "model.nb", out / "onnx"):
        s, _ = open_artifact(artifact).predict(inputs)
        for row, k in enumerate(lengths):
            np.testing.assert_allclose(s[row, :k], ref[row, :k], atol=1e-4)
    readme = (out / "x86-fp32" / "README.md").read_text(encoding="utf-8")
    assert "jieba word" in readme and "LAC entity class" in readme
    # every artifact folder carries the setting evaluate and serve read, and scores as dygraph
    from paddleqa.runtime.evaluate import EvaluateConfig, run as evaluate

    preds = {}
    for name, artifact in {"dygraph": model, "lite": out / "x86-fp32", "onnx": out / "onnx"}.items():
        if name != "dygraph":
            assert feature_params_for(str(artifact)).entity_marks
        evaluate(EvaluateConfig(model=str(artifact), data_file=str(data),
                                out_dir=str(tmp_path / name), progress=False))
        preds[name] = json.loads((tmp_path / name / "predictions.json").read_text(encoding="utf-8"))
    assert preds["dygraph"] == preds["lite"] == preds["onnx"]
    shutil.rmtree(out)
