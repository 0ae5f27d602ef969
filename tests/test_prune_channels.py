"""Channel pruning of the mobilenet student (PaddleSlim filter pruners): a smaller dense student."""
import json

import numpy as np
import paddle
import pytest

from paddleqa import pipeline
from paddleqa.core.config import ConfigError
from paddleqa.models.build import count_params, load_model
from paddleqa.models.flops import flops_per_query
from paddleqa.models.mobile import MobileQAConfig, MobileQAForQuestionAnswering

CFG = dict(vocab_size=40, hidden_size=32, num_attention_heads=2, intermediate_size=64,
           max_position_embeddings=64, type_vocab_size=4, pad_token_id=0, hidden_dropout_prob=0.0,
           attention_probs_dropout_prob=0.0, conv_blocks=2, expand_ratio=4, kernel_size=3,
           num_transformer_layers=1)
SEQ = 64


def _student(seed=0):
    paddle.seed(seed)
    model = MobileQAForQuestionAnswering(MobileQAConfig(**CFG))
    model.eval()
    return model


def _ids():
    return paddle.to_tensor(np.random.default_rng(0).integers(3, 40, size=(3, 20)))


def _logits(model, ids):
    start, end = model(input_ids=ids, token_type_ids=paddle.zeros_like(ids))
    return start.numpy(), end.numpy()


def _agreement(reference, ids):
    """A score for the sensitivity pass: how close the student's logits stay to ``reference``'s."""
    ref = _logits(reference, ids)[0]
    return lambda m: 1.0 / (1.0 + float(np.abs(_logits(m, ids)[0] - ref).mean()))


def _conv_params(model):
    return sum(int(np.prod(p.shape)) for n, p in model.named_parameters() if ".blocks." in n)


def test_the_conv_view_round_trips_the_student_exactly():
    from paddleqa.models.channels import ConvView, from_view

    model, ids = _student(), _ids()
    again = from_view(model, ConvView(model))
    for a, b in zip(_logits(model, ids), _logits(again, ids)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("method", ["l1norm", "fpgm"])
def test_pruning_meets_the_flops_target_and_reloads_and_exports(tmp_path, method):
    from paddleqa.models.graph import export_inference
    from paddleqa.stages.channels import prune_channels

    model, ids = _student(), _ids()
    target = 0.7
    pruned, info = prune_channels(model, method, _agreement(model, ids), flops_ratio=target,
                                  seq_len=SEQ, out_dir=tmp_path / "out")
    before, after = flops_per_query(model.config, SEQ), flops_per_query(pruned.config, SEQ)
    assert after <= target * before and after >= (target - 0.02) * before
    assert info["flops_after"] == after and pruned.config.block_channels == info["block_channels"]
    # Params and FLOPs of a conv block are both linear in its inner width: they fall together.
    conv_flops = lambda cfg: flops_per_query(cfg, SEQ) - flops_per_query(  # noqa: E731
        MobileQAConfig(**{**CFG, "conv_blocks": 0}), SEQ)
    np.testing.assert_allclose(_conv_params(pruned) / _conv_params(model),
                               conv_flops(pruned.config) / conv_flops(model.config), atol=0.01)
    assert count_params(pruned)["params"] < count_params(model)["params"]
    assert model.config.block_channels == [128, 128]  # the source student is untouched
    # Same outputs shapes, finite logits.
    for a, b in zip(_logits(model, ids), _logits(pruned, ids)):
        assert a.shape == b.shape and np.isfinite(b).all()
    # The sensitivity: PaddleSlim's file and the table by block, one row per block and ratio.
    out = tmp_path / "out"
    assert (out / "sensitivities.pickle").stat().st_size > 0
    rows = json.loads((out / "channel_sensitivity.json").read_text(encoding="utf-8"))
    assert [r["block"] for r in rows] == [1, 2] and all(len(r["loss_by_ratio"]) == 9 for r in rows)
    # An ordinary model folder: the normal loader gives the same logits, and it exports.
    pruned.save_pretrained(str(tmp_path / "model"))
    again = load_model(str(tmp_path / "model"))
    assert again.config.block_channels == pruned.config.block_channels
    for a, b in zip(_logits(pruned, ids), _logits(again, ids)):
        np.testing.assert_allclose(a, b, atol=1e-6)
    prefix = tmp_path / "inference" / "model"
    export_inference(again, prefix)
    graph = paddle.jit.load(str(prefix))
    n, length = ids.shape
    exported = graph(ids, paddle.zeros_like(ids), paddle.arange(length).expand([n, length]),
                     paddle.ones([n, length], dtype="float32"))
    np.testing.assert_allclose(exported[0].numpy(), _logits(pruned, ids)[0], atol=1e-5)


def test_l1norm_keeps_the_largest_filters_and_their_coupled_channels(tmp_path):
    from paddleqa.stages.channels import prune_channels

    model, ids = _student(1), _ids()
    pruned, _ = prune_channels(model, "l1norm", _agreement(model, ids), flops_ratio=0.6,
                               seq_len=SEQ, out_dir=tmp_path)
    for src, dst in zip(model.mobile.blocks, pruned.mobile.blocks):
        w = src.expand.weight.numpy()[:, :, 0]
        kept_w = dst.expand.weight.numpy()[:, :, 0]
        idx = [int(np.flatnonzero((w == row).all(1))[0]) for row in kept_w]
        assert idx == sorted(idx) and len(idx) < len(w)
        norms = np.abs(w).mean(1)
        removed = np.setdiff1d(np.arange(len(w)), idx)
        assert norms[idx].min() >= norms[removed].max()
        # The depthwise filters and the projection's inputs of the same channels go with them.
        np.testing.assert_array_equal(dst.depthwise.weight.numpy(), src.depthwise.weight.numpy()[idx])
        np.testing.assert_array_equal(dst.project.weight.numpy(), src.project.weight.numpy()[:, idx])
        np.testing.assert_array_equal(dst.expand.bias.numpy(), src.expand.bias.numpy()[idx])


def test_an_unreachable_target_and_an_ernie_model_are_refused(tmp_path):
    from paddlenlp.transformers import ErnieConfig, ErnieForQuestionAnswering

    from paddleqa.stages.channels import prune_channels

    model, ids = _student(), _ids()
    with pytest.raises(ConfigError, match="raise prune.flops_ratio"):
        prune_channels(model, "l1norm", _agreement(model, ids), flops_ratio=0.05, seq_len=SEQ,
                       out_dir=tmp_path)
    ernie = ErnieForQuestionAnswering(ErnieConfig(vocab_size=40, hidden_size=32, num_hidden_layers=1,
                                                  num_attention_heads=2, intermediate_size=64))
    with pytest.raises(ConfigError, match="mobilenet student"):
        prune_channels(ernie, "fpgm", lambda m: 0.0, flops_ratio=0.5, seq_len=SEQ, out_dir=tmp_path)


def _doc(teacher_run, tmp_path, **prune):
    _, _, doc = teacher_run
    doc = json.loads(json.dumps(doc))
    common = {"batch_size": 2, "learning_rate": 0.002, "save_steps": 100, "logging_steps": 1}
    doc["distill"] = {"output_dir": str(tmp_path / "d"), "epochs": 4, **common,
                      "student": {"kind": "mobilenet", "conv_blocks": 2, "expand_ratio": 2,
                                  "kernel_size": 3, "num_layers": 1}}
    doc["prune"] = {"output_dir": str(tmp_path / "p"), "epochs": 4, **common,
                    "sensitivity_questions": 3, **prune}
    return doc


def test_the_pipeline_prunes_the_distilled_mobilenet_student(teacher_run, tmp_path):
    doc = _doc(teacher_run, tmp_path, method="fpgm", flops_ratio=0.8)
    cfg = pipeline.build_plan(doc)
    assert cfg.prune.model == str(tmp_path / "d" / "model")
    assert pipeline.run_layout(cfg).deployed == "prune"  # quantize/export take the pruned student
    pipeline.run(doc, only="distill")
    metrics = pipeline.run(doc, only="prune")["prune"]
    student = load_model(str(tmp_path / "d" / "model"))
    pruned = load_model(str(tmp_path / "p" / "model"))
    assert type(pruned).__name__ == "MobileQAForQuestionAnswering"
    assert pruned.config.block_channels == metrics["block_channels"]
    assert sum(pruned.config.block_channels) < sum(student.config.block_channels)
    seq = metrics["flops_seq_len"]
    ratio = flops_per_query(pruned.config, seq) / flops_per_query(student.config, seq)
    assert 0.78 <= ratio <= 0.8 and metrics["flops_per_query"] == flops_per_query(pruned.config, seq)
    assert metrics["params_ratio"] < 1 and "pruned_heldout_f1_before_recovery" in metrics
    assert (tmp_path / "p" / "sensitivities.pickle").exists()
    assert (tmp_path / "p" / "channel_sensitivity.md").exists()
    manifest = json.loads((tmp_path / "p" / "manifest.json").read_text(encoding="utf-8"))
    assert "model" in manifest["inputs"]  # a changed student reruns prune
    losses = [h["loss"] for h in json.loads((tmp_path / "p" / "train_log.json").read_text())
              if "loss" in h]
    assert np.isfinite(losses).all()
    # Valid spans: a non-empty answer from its own passage for every dev question.
    data = json.loads(teacher_run[1].read_text(encoding="utf-8"))["data"]
    context = {qa["id"]: para["context"] for art in data for para in art["paragraphs"]
               for qa in para["qas"]}
    preds = json.loads((tmp_path / "p" / "dev_predictions.json").read_text(encoding="utf-8"))
    assert set(preds) == set(context) and all(preds[q] and preds[q] in context[q] for q in preds)


@pytest.mark.parametrize("change, message", [
    ({"method": "slimming"}, "unknown prune method 'slimming'; valid: heads_ffn, l1norm, fpgm"),
    ({"method": "l1norm", "drop_layers": 1}, "drop_layers is for method heads_ffn"),
    ({"method": "l1norm", "flops_ratio": 1.0}, "flops_ratio must be in"),
    ({"model": "somewhere"}, "heads_ffn prunes the teacher"),
])
def test_bad_channel_settings_are_named(teacher_run, tmp_path, change, message):
    with pytest.raises(ConfigError, match=message):
        pipeline.build_plan(_doc(teacher_run, tmp_path, **change))
