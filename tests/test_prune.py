"""Structured pruning: fewer params and FLOPs, an ordinary model that reloads with the same outputs."""
import json

import numpy as np
import paddle
import pytest

from paddleqa import cli, pipeline
from paddleqa.core.config import ConfigError


def _prune_doc(teacher_run, tmp_path, **prune):
    _, data, doc = teacher_run
    doc = json.loads(json.dumps(doc))
    doc["prune"] = {"output_dir": str(tmp_path / "prune"), "epochs": 4, "batch_size": 2,
                    "learning_rate": 0.001, "save_steps": 100, "logging_steps": 1,
                    "importance_windows": 8, "sensitivity_questions": 3, **prune}
    return doc


def _logits(model, feats):
    from paddleqa.runtime.artifacts import model_runner, predict_logits

    return predict_logits(model_runner(model), feats, progress=False)


def test_width_and_depth_pruning_gives_a_smaller_dense_model(teacher_run, tmp_path):
    from paddleqa.models.flops import flops_per_query
    from paddleqa.text.dataset import load_examples
    from paddleqa.text.features import feature_params_for
    from paddleqa.text.features import build_features
    from paddleqa.models.build import count_params, load_model
    from paddleqa.text.tokenizer import load_tokenizer

    doc = _prune_doc(teacher_run, tmp_path, width_mult=0.5, drop_layers=1)
    teacher_dir = pipeline.build_plan(doc, enable=("prune",)).prune.teacher
    teacher = load_model(teacher_dir)
    tok, params = load_tokenizer(teacher_dir), feature_params_for(teacher_dir)
    feats = build_features(load_examples(teacher_run[1])[0], tok, params, train=False, progress=False)
    before = _logits(teacher, feats)

    metrics = pipeline.run(doc, only="prune")["prune"]
    out = tmp_path / "prune"
    pruned = load_model(str(out / "model"))
    assert type(pruned).__name__ == "CompactErnieForQuestionAnswering"
    assert pruned.config.num_hidden_layers == 3  # 4 - 1 dropped
    assert pruned.config.layer_heads == [1, 1, 1] and pruned.config.layer_ffn == [32, 32, 32]
    assert count_params(pruned)["non_embedding_params"] < count_params(teacher)["non_embedding_params"]
    assert flops_per_query(pruned.config, 384) < flops_per_query(teacher.config, 384)
    assert metrics["flops_per_query"] < metrics["teacher_flops_per_query"]
    assert metrics["params_ratio"] < 1 and len(metrics["layers_dropped"]) == 1
    # The sensitivity table: one row per layer plus the unpruned baseline, written twice.
    rows = json.loads((out / "layer_sensitivity.json").read_text(encoding="utf-8"))
    assert [r["removed_layer"] for r in rows] == [None, 1, 2, 3, 4]
    assert "| removed layer |" in (out / "layer_sensitivity.md").read_text(encoding="utf-8")
    # The teacher itself was not touched by the in-place reordering.
    for a, b in zip(before, _logits(load_model(teacher_dir), feats)):
        np.testing.assert_allclose(a, b, atol=1e-6)
    # Saved and reloaded: the same outputs as the model the stage scored.
    again = load_model(str(out / "model"))
    for a, b in zip(_logits(pruned, feats), _logits(again, feats)):
        np.testing.assert_allclose(a, b, atol=1e-6)
    losses = [h["loss"] for h in json.loads((out / "train_log.json").read_text()) if "loss" in h]
    assert np.mean(losses[-2:]) < np.mean(losses[:2])


def test_importance_ranks_a_dead_head_last(teacher_run):
    from paddleqa.models.compact import from_ernie
    from paddleqa.text.dataset import load_examples
    from paddleqa.text.features import feature_params_for
    from paddleqa.text.features import build_features
    from paddleqa.models.build import load_model
    from paddleqa.stages.prune import importance
    from paddleqa.text.tokenizer import load_tokenizer

    teacher_dir = str(teacher_run[0] / "run" / "teacher" / "model")
    model = from_ernie(load_model(teacher_dir))
    attn = model.ernie.encoder.layers[0].self_attn
    d = attn.head_dim
    w = attn.out_proj.weight.numpy()
    w[d: 2 * d] = 0.0  # head 1 of layer 1 no longer reaches the output
    attn.out_proj.weight.set_value(paddle.to_tensor(w))
    feats = build_features(load_examples(teacher_run[1])[0], load_tokenizer(teacher_dir),
                           feature_params_for(teacher_dir), train=True, progress=False)
    heads, neurons = importance(model, feats, 8, 4, seed=0)
    assert heads[0, 1] == 0.0 and heads[0].max() > 0
    assert len(neurons) == 4 and all((n >= 0).all() for n in neurons)


@pytest.mark.parametrize("change, message", [
    ({"width_mult": 0}, "width_mult must be in"),
    ({"drop_layers": -1}, "drop_layers must be >= 0"),
])
def test_bad_prune_settings_are_named(teacher_run, tmp_path, change, message):
    with pytest.raises(ConfigError, match=message):
        pipeline.build_plan(_prune_doc(teacher_run, tmp_path, **change))


def test_dropping_every_layer_is_refused(teacher_run, tmp_path, capsys):
    import yaml

    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(_prune_doc(teacher_run, tmp_path, drop_layers=4)), encoding="utf-8")
    assert cli.main(["prune", "--config", str(cfg)]) == 2
    assert "must leave at least one" in capsys.readouterr().err
