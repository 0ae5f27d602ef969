"""Quantization: PTQ and QAT give int8 models that Paddle Inference runs; k-means keeps at most
2^bits values per matrix and stores less; bad settings are named."""
import json

import numpy as np
import pytest

from paddleqa import cli
from paddleqa.runtime.artifacts import open_artifact
from paddleqa.runtime.bundle import program_op_counts
from paddleqa.stages.quantize import QuantizeConfig, kmeans_1d, run


@pytest.mark.parametrize("method", ["ptq", "qat"])
def test_int8_models_run_in_paddle_inference(teacher_run, tmp_path, method):
    tmp, data, doc = teacher_run
    out = tmp_path / method
    m = run(QuantizeConfig(model=f"{doc['run_dir']}/teacher", out_dir=str(out), method=method,
                           calib_file=str(data), dev_file=str(data), calib_windows=16,
                           qat_steps=4, qat_batch_size=4, score_all_ops=True, progress=False))
    ops = program_op_counts(out / "inference" / "model.pdmodel")
    assert any("quantize" in op for op in ops), ops  # an int8 graph, not a copy of fp32
    runner = open_artifact(out / "inference")
    assert runner.backend == "paddle-inference" and runner.precision == "int8"
    assert m["quantized_backend"] == "paddle-inference"
    assert 0 <= m["quantized_f1"] <= 100 and m["f1_delta"] == pytest.approx(m["quantized_f1"] - m["fp32_f1"], abs=1e-3)
    # the all-ops score is its own run (int8_ops=all), recorded next to the fc-only one
    assert m["quantized_all_backend"] == "paddle-inference"
    assert m["f1_delta_all_ops"] == pytest.approx(m["quantized_all_f1"] - m["fp32_f1"], abs=1e-3)
    all_cfg = (out / "eval_quantized_all" / "resolved_config.yaml").read_text(encoding="utf-8")
    assert "- all" in all_cfg and "- all" not in (out / "eval_quantized" / "resolved_config.yaml").read_text(encoding="utf-8")
    preds = json.loads((out / "eval_quantized" / "predictions.json").read_text(encoding="utf-8"))
    assert set(preds) == {"q1", "q2", "q3"}


def test_kmeans_codebook_is_small_and_exact():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(64, 32)).astype(np.float32)
    centroids, codes = kmeans_1d(w, 16)
    assert len(centroids) <= 16 and codes.max() < len(centroids) and codes.shape == w.shape
    assert np.all(np.diff(centroids) > 0)
    # Every value goes to its nearest centroid (what Lloyd's algorithm converges to).
    nearest = np.abs(w[..., None] - centroids).argmin(-1)
    assert np.array_equal(nearest, codes)
    err16 = np.abs(centroids[codes] - w).mean()
    c4, k4 = kmeans_1d(w, 4)
    assert np.abs(c4[k4] - w).mean() > err16  # fewer clusters, larger error
    # Fewer distinct values than clusters: each value is its own centroid.
    c, k = kmeans_1d(np.array([1.0, 1.0, 2.0, 5.0]), 8)
    assert np.array_equal(c[k], [1.0, 1.0, 2.0, 5.0])


def test_kmeans_model_has_few_distinct_weights_and_reports_size(teacher_run, tmp_path):
    from paddleqa.models.build import load_model

    tmp, data, doc = teacher_run
    m = run(QuantizeConfig(model=f"{doc['run_dir']}/teacher", out_dir=str(tmp_path), method="kmeans",
                           weight_bits=3, dev_file=str(data), progress=False))
    model = load_model(str(tmp_path / "model"))
    weight = model.ernie.encoder.layers[0].linear1.weight.numpy()
    assert len(np.unique(weight)) <= 8
    assert m["stored_bytes"] < m["fp32_bytes"] and m["matrices_clustered"] >= 4 * 6
    codebook = np.load(tmp_path / "codebook.npz")
    assert codebook["ernie.encoder.layers.0.linear1.weight.codes"].max() < 8
    assert "quantized_f1" in m
    # Re-run with other settings into the same folder: the new model is not held to the
    # sha256 the earlier run recorded (that manifest is gone before the outputs change).
    m2 = run(QuantizeConfig(model=f"{doc['run_dir']}/teacher", out_dir=str(tmp_path), method="kmeans",
                            weight_bits=2, dev_file=str(data), progress=False))
    assert len(np.unique(load_model(str(tmp_path / "model")).ernie.encoder.layers[0].linear1.weight.numpy())) <= 4
    assert "quantized_f1" in m2


@pytest.mark.parametrize("args, message", [
    (["--method", "fp4"], "unknown method 'fp4'; valid: ptq, qat, kmeans"),
    (["--algo", "magic"], "unknown algo 'magic'"),
    (["--method", "kmeans", "--bits", "12"], "weight_bits must be 1-8"),
    (["--method", "ptq", "--bits", "4"], "weight_bits must be 8"),
])
def test_bad_quantize_settings_are_named(teacher_run, tmp_path, capsys, args, message):
    tmp, data, doc = teacher_run
    code = cli.main(["quantize", f"{doc['run_dir']}/teacher", "--out", str(tmp_path), *args])
    assert code == 2 and message in capsys.readouterr().err
