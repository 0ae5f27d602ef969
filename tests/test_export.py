"""Export: inference model and Lite .nb agree with dygraph; ARM fusion; artifacts score alike;
damaged or unknown inputs give clear errors."""
import hashlib
import json
import shutil

import numpy as np
import paddle
import pytest

from paddleqa import cli
from paddleqa.runtime.artifacts import Runner, explicit_inputs, open_artifact, predict_logits
from paddleqa.models.compact import from_ernie, select
from paddleqa.core.errors import PaddleQAError
from paddleqa.stages.export import ExportConfig, run
from paddleqa.runtime.bundle import program_op_counts
from paddleqa.models.mobile import MobileQAConfig, MobileQAForQuestionAnswering
from paddleqa.models.build import load_model


@pytest.fixture(scope="module")
def exported(teacher_run, tmp_path_factory):
    tmp, data, doc = teacher_run
    out = tmp_path_factory.mktemp("export")
    model = f"{doc['run_dir']}/teacher"
    metrics = run(ExportConfig(model=model, out_dir=str(out), targets=["arm", "x86"],
                               precisions=["fp32", "int8"], onnx=True, onnx_int8=True))
    return out, metrics, model, data


def _batch(vocab=40, pad=0, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(3, vocab, size=(3, 20))
    lengths = np.array([20, 13, 7])
    for row, n in enumerate(lengths):
        ids[row, n:] = pad
    types = np.zeros_like(ids)
    types[:, 8:] = 1
    return explicit_inputs({"input_ids": ids, "token_type_ids": types}, lengths), lengths


def _dygraph(model_dir, inputs):
    model = load_model(str(model_dir))
    model.eval()
    with paddle.no_grad():
        s, e = model(input_ids=paddle.to_tensor(inputs["input_ids"]),
                     token_type_ids=paddle.to_tensor(inputs["token_type_ids"]))[:2]
    return s.numpy(), e.numpy()


def _real(x, lengths):
    return np.concatenate([row[:n] for row, n in zip(x, lengths)])


def test_inference_model_x86_nb_and_onnx_agree_with_dygraph(exported):
    out, metrics, model, _ = exported
    inputs, lengths = _batch()
    ref_s, ref_e = _dygraph(f"{model}/model", inputs)
    assert metrics["onnx"]["bytes"] == (out / "onnx" / "model.onnx").stat().st_size
    for artifact in (out / "inference", out / "x86-fp32" / "model.nb", out / "onnx"):
        runner = open_artifact(artifact)
        s, e = runner.predict(inputs)
        # Padding positions differ by construction (masked); real tokens must agree.
        np.testing.assert_allclose(_real(s, lengths), _real(ref_s, lengths), atol=1e-4)
        np.testing.assert_allclose(_real(e, lengths), _real(ref_e, lengths), atol=1e-4)


def test_onnx_int8_is_written_opened_as_int8_and_tracks_fp32(exported):
    out, metrics, _, _ = exported
    q = out / "onnx" / "model.int8.onnx"
    assert metrics["onnx"]["int8"]["bytes"] == q.stat().st_size > 0
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert "onnx_int8" in json.dumps(manifest["outputs"])
    fp32, int8 = open_artifact(out / "onnx" / "model.onnx"), open_artifact(q)
    assert (fp32.backend, fp32.precision, int8.backend, int8.precision) == (
        "onnxruntime", "fp32", "onnxruntime", "int8")
    inputs, lengths = _batch()
    s32, s8 = _real(fp32.predict(inputs)[0], lengths), _real(int8.predict(inputs)[0], lengths)
    assert np.isfinite(s8).all() and np.abs(s8 - s32).max() > 0  # integer kernels, not a copy
    assert np.corrcoef(s8, s32)[0, 1] > 0.9  # ... that still follow the fp32 logits
    with pytest.raises(ValueError, match="onnx: true"):
        ExportConfig(model="m", out_dir="o", onnx_int8=True)


def test_arm_nb_is_written_and_fc_fusion_fires(exported):
    out, metrics, _, _ = exported
    assert (out / "arm-fp32" / "model.nb").stat().st_size > 0
    arm = metrics["op_report"]["arm-fp32"]
    assert "fc" in arm["new_op_types"] and arm["ops"]["fc"] >= 4 * 4  # q, k, v, out, ffn x2 per layer
    assert arm["ops_after"] < arm["ops_before"]
    # Dropout was removed before tracing: none in the graph to leave behind.
    assert not any("dropout" in op for op in metrics["inference_ops"])
    bundle = json.loads((out / "arm-fp32" / "bundle.json").read_text(encoding="utf-8"))
    assert [i["name"] for i in bundle["inputs"]] == ["input_ids", "token_type_ids", "position_ids",
                                                     "attention_mask"]
    assert (out / "arm-fp32" / "vocab.txt").exists() and bundle["vocab_sha256"]
    # opt's weight-only int8 stores weights in a byte: the file shrinks.
    assert metrics["bundles"]["arm-int8"]["bytes"] < 0.8 * metrics["bundles"]["arm-fp32"]["bytes"]


def test_every_runnable_artifact_scores_like_the_model(exported, tmp_path):
    from paddleqa.runtime.evaluate import EvaluateConfig, run as evaluate

    out, _, model, data = exported
    scores = {}
    for name, artifact in {"dygraph": model, "inference": out / "inference",
                           "lite": out / "x86-fp32", "onnx": out / "onnx" / "model.onnx"}.items():
        m = evaluate(EvaluateConfig(model=str(artifact), data_file=str(data),
                                    out_dir=str(tmp_path / name), progress=False))
        scores[name] = (m["em"], m["f1"], m["backend"])
        preds = json.loads((tmp_path / name / "predictions.json").read_text(encoding="utf-8"))
        assert len(preds) == 3
    assert scores["dygraph"][:2] == scores["inference"][:2] == scores["lite"][:2] == scores["onnx"][:2]
    assert [s[2] for s in scores.values()] == ["dygraph", "paddle-inference", "lite-x86", "onnxruntime"]


def test_arm_nb_evaluation_points_to_the_x86_twin(exported, tmp_path, capsys):
    out, _, _, data = exported
    code = cli.main(["evaluate", str(out / "arm-fp32" / "model.nb"), str(data), "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "cannot run on this x86 machine" in err and "x86-fp32" in err


def _truncated_copy(folder, dest, name, keep=3):
    """A copy of an artifact folder whose file ``name`` keeps only 1/keep of its bytes."""
    shutil.copytree(folder, dest)
    f = dest / name
    f.write_bytes(f.read_bytes()[: f.stat().st_size // keep])
    return f


def test_truncated_nb_is_refused_without_crashing(exported, tmp_path, capsys):
    out, _, _, data = exported
    nb = _truncated_copy(out / "x86-fp32", tmp_path / "bundle", "model.nb")
    bundle = nb.parent
    code = cli.main(["evaluate", str(nb), str(data), "--out", str(tmp_path / "ev")])
    assert code == 2 and "truncated" in capsys.readouterr().err
    # A bundle.json re-hashed to match the damaged file (or a foreign file shipped with its own):
    # the .nb is still loaded and run in a child process first, so Lite's abort is an error here.
    meta = json.loads((bundle / "bundle.json").read_text(encoding="utf-8"))
    meta.update(model_bytes=nb.stat().st_size, model_sha256=hashlib.sha256(nb.read_bytes()).hexdigest())
    (bundle / "bundle.json").write_text(json.dumps(meta), encoding="utf-8")
    with pytest.raises(PaddleQAError, match="in a child process"):
        open_artifact(nb)
    # Without bundle.json the file is test-loaded in a child process too.
    (bundle / "bundle.json").unlink()
    with pytest.raises(PaddleQAError, match="in a child process"):
        open_artifact(nb)


def test_static_window_bundle_records_its_length_and_opens(teacher_run, tmp_path):
    """A graph exported with a fixed window says so in bundle.json, and the child-process probe
    runs it at that length (a dummy window of another length would fail)."""
    _, _, doc = teacher_run
    out = tmp_path / "static"
    run(ExportConfig(model=f"{doc['run_dir']}/teacher", out_dir=str(out), targets=["x86"],
                     static_seq_len=True))
    bundle = json.loads((out / "x86-fp32" / "bundle.json").read_text(encoding="utf-8"))
    seq = bundle["max_seq_len"]
    assert all(i["shape"] == [-1, seq] for i in bundle["inputs"])
    assert open_artifact(out / "x86-fp32" / "model.nb").backend == "lite-x86"


def test_missing_files_and_unknown_targets_are_named(exported, tmp_path, capsys):
    out, _, model, data = exported
    half = tmp_path / "half"
    half.mkdir()
    shutil.copy(out / "inference" / "model.pdmodel", half / "model.pdmodel")
    with pytest.raises(PaddleQAError, match="pdiparams is missing"):
        open_artifact(half / "model.pdmodel")
    with pytest.raises(PaddleQAError, match="holds no model"):
        open_artifact(tmp_path)
    code = cli.main(["export", model, "--out", str(tmp_path / "x"), "--targets", "arm,riscv"])
    assert code == 2 and "unknown target(s) riscv; valid: arm, x86" in capsys.readouterr().err
    code = cli.main(["export", model, "--out", str(tmp_path / "x"), "--precision", "bf16"])
    assert code == 2 and "unknown precision(s) bf16" in capsys.readouterr().err


def test_damaged_onnx_is_refused_with_a_clear_error(exported, tmp_path, capsys):
    out, _, _, data = exported
    folder = _truncated_copy(out / "onnx", tmp_path / "onnx", "model.onnx", keep=2).parent
    code = cli.main(["evaluate", str(folder), str(data), "--out", str(tmp_path / "ev")])
    err = capsys.readouterr().err
    assert code == 2 and "ONNX Runtime cannot load" in err and "paddleqa export --onnx" in err
    assert not (tmp_path / "ev" / "predictions.json").exists()


def test_nan_logits_are_refused_not_scored():
    def nan_predict(inputs):
        s = np.zeros(inputs["input_ids"].shape, dtype=np.float32)
        s[0, 1] = np.nan
        return s, s

    runner = Runner("lite-x86", None, None, nan_predict, precision="int8")
    feats = {"input_ids": np.ones((2, 6), dtype=np.int64), "token_type_ids": np.zeros((2, 6), dtype=np.int64),
             "length": np.array([6, 6])}
    with pytest.raises(PaddleQAError, match="NaN.*int8"):
        predict_logits(runner, feats, progress=False)


@pytest.mark.parametrize("kind", ["compact", "mobile", "mobile-factorised"])
def test_student_architectures_export_and_agree(teacher_run, tmp_path, kind):
    tmp, _, doc = teacher_run
    src = load_model(f"{doc['run_dir']}/teacher/model")
    if kind == "compact":  # a pruned model: uneven heads and FFN widths per layer
        heads = [[0], [1, 0], [0], [1]]
        student = select(from_ernie(src), layers=[0, 1, 3], heads=[heads[0], heads[1], heads[3]],
                         neurons=[list(range(10)), list(range(20)), list(range(5))])
    else:
        paddle.seed(0)
        student = MobileQAForQuestionAnswering(MobileQAConfig(
            vocab_size=src.config.vocab_size, hidden_size=16, num_attention_heads=2,
            intermediate_size=32, max_position_embeddings=128, type_vocab_size=4, pad_token_id=0,
            conv_blocks=2, expand_ratio=2, kernel_size=3, num_transformer_layers=1,
            embedding_size=8 if kind == "mobile-factorised" else 0))
    model_dir = tmp_path / "model"
    student.save_pretrained(str(model_dir))
    for f in ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(f"{doc['run_dir']}/teacher/model/{f}", model_dir / f)
    conv = kind != "compact"  # ONNX int8 of conv blocks: they stay fp32 (ORT has no ConvInteger)
    m = run(ExportConfig(model=str(model_dir), out_dir=str(tmp_path / "out"), targets=["arm", "x86"],
                         onnx=conv, onnx_int8=conv))
    assert m["bundles"]["arm-fp32"]["bytes"] > 0  # Lite's ARM passes take this graph too
    inputs, lengths = _batch(vocab=src.config.vocab_size)
    ref_s, _ = _dygraph(model_dir, inputs)
    s, _ = open_artifact(tmp_path / "out" / "x86-fp32").predict(inputs)
    np.testing.assert_allclose(_real(s, lengths), _real(ref_s, lengths), atol=1e-4)
    if conv:
        q = open_artifact(tmp_path / "out" / "onnx" / "model.int8.onnx")
        s8, _ = q.predict(inputs)
        assert q.precision == "int8" and np.isfinite(s8).all()
        assert np.corrcoef(_real(s8, lengths), _real(ref_s, lengths))[0, 1] > 0.9
    assert program_op_counts(tmp_path / "out" / "inference" / "model.pdmodel")


def test_pipeline_quantizes_exports_and_benches_then_skips(teacher_run, caplog):
    import copy
    import logging

    from paddleqa import pipeline

    tmp, data, doc = teacher_run
    doc = copy.deepcopy(doc)
    doc["quantize"] = {"calib_windows": 16, "score_all_ops": True}
    doc["export"] = {"targets": ["arm", "x86"], "onnx": True}  # onnx: from the fp32 graph only
    doc["bench"] = {"seq_lens": [16], "repeats": 2, "warmup": 0, "throughput_batch": 2,
                    "throughput_repeats": 1}
    results = pipeline.run(doc)
    run_dir = tmp / "run"
    assert results["quantize"]["method"] == "ptq" and "f1_delta" in results["quantize"]
    assert (run_dir / "export" / "arm-fp32" / "model.nb").exists()
    assert (run_dir / "export-int8" / "arm-int8" / "model.nb").exists()  # the PTQ graph for ARM
    assert (run_dir / "export" / "onnx" / "model.onnx").exists()
    assert not (run_dir / "export-int8" / "onnx").exists()
    backends = [r["backend"] for r in results["bench"]["rows"]]
    assert backends == ["dygraph", "paddle-inference", "lite-x86", "onnxruntime", "paddle-inference"]
    with caplog.at_level(logging.INFO, logger="paddleqa.pipeline"):
        pipeline.run(doc)
    skipped = [r.getMessage() for r in caplog.records if "up to date" in r.getMessage()]
    for name in ("quantize", "export", "bench"):
        assert f"stage {name}: up to date, skipped" in skipped


def test_bench_times_the_teacher_baseline_next_to_the_student(teacher_run, tmp_path):
    """With a distilled student deployed, the teacher's own inference model and x86 .nb are
    exported and timed as the baseline; model folders already scored by their stage are not
    scored again."""
    import copy

    from paddleqa import pipeline
    from paddleqa.runtime.report import ReportConfig, run as report

    tmp, data, doc = teacher_run
    doc = copy.deepcopy(doc)
    doc["run_dir"] = str(tmp_path / "run")
    for name in ("vocab", "teacher"):  # reuse the finished teacher run
        shutil.copytree(tmp / "run" / name, tmp_path / "run" / name)
    doc["distill"] = {"student": {"num_layers": 1}, "max_steps": 2, "eval_each_epoch": False}
    doc["export"] = {"targets": ["x86"], "onnx": True}
    doc["bench"] = {"seq_lens": [16], "repeats": 2, "warmup": 0, "throughput_batch": 2,
                    "throughput_repeats": 1}
    results = pipeline.run(doc)
    assert "export_teacher" in results
    rows = {r["artifact"]: r for r in results["bench"]["rows"]}
    base = str(tmp_path / "run" / "export-teacher" / "inference")
    assert rows[base]["settings"][0]["latency_ms_p50"] > 0
    assert "dev_f1" not in rows[base]  # a baseline: timed, not scored
    assert "dev_f1" not in rows[str(tmp_path / "run" / "teacher" / "model")]
    assert rows[str(tmp_path / "run" / "export" / "inference")]["dev_f1"] is not None
    rep = report(ReportConfig(run_dir=str(tmp_path / "run")))
    table = {r["name"]: r for r in rep["rows"]}
    # Intervals from the predictions behind each score; the student compared with the teacher.
    student = table["distill"]
    lo, hi = student["dev_f1_ci95"]
    assert lo <= student["dev_f1"] <= hi
    if student["f1_retention"] is not None and student["f1_retention_ci95"] is not None:
        assert student["f1_retention_ci95"][0] <= student["f1_retention"] <= student["f1_retention_ci95"][1]
    assert table["teacher"]["f1_retention_ci95"] in ([1.0, 1.0], None)
    pages = {c["name"]: c for c in rep["comparisons"]}
    assert "distill" in pages and (tmp_path / "run" / "report" / pages["distill"]["page"]).exists()
    # the student's exports answer exactly as the student: compared once, not once per file
    assert "inference fp32" not in pages and "onnx fp32" not in pages
    assert "Each student against the teacher" in (tmp_path / "run" / "report" / "report.md").read_text(encoding="utf-8")
    for name in ("teacher inference fp32", "teacher lite x86-fp32", "teacher onnx fp32"):
        assert table[name]["source"] == "teacher" and table[name]["latency_ms_p50"] > 0
        assert table[name]["dev_f1"] is None
    assert table["lite x86-fp32"]["source"] == "distill"
    # ONNX Runtime is timed and scored like the other runnable backends
    onnx = table["onnx fp32"]
    assert onnx["backend"] == "onnxruntime" and onnx["latency_ms_p50"] > 0
    assert onnx["dev_f1"] == table["inference fp32"]["dev_f1"]


def test_report_rows_come_from_the_metrics_files(teacher_run, tmp_path):
    from paddleqa.runtime.report import ReportConfig, pareto_front, run as report

    tmp, data, doc = teacher_run
    run_dir = tmp / "run"
    if not (run_dir / "bench" / "results.json").exists():
        pytest.skip("needs the pipeline test's run (quantize/export/bench) first")
    res = report(ReportConfig(run_dir=str(run_dir), out_dir=str(tmp_path)))
    rows = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))
    keys = {"name", "source", "backend", "precision", "params", "flops", "file_bytes",
            "latency_ms_p50", "dev_em", "dev_f1"}
    assert all(keys <= set(r) for r in rows)
    assert rows[0]["name"] == "teacher" and rows[0]["f1_retention"] == 1.0
    ev = json.loads((run_dir / "evaluate" / "metrics.json").read_text(encoding="utf-8"))
    assert rows[0]["dev_f1"] == ev["f1"]
    q = json.loads((run_dir / "quantize" / "metrics.json").read_text(encoding="utf-8"))
    int8 = next(r for r in rows if r["name"] == "int8 ptq")
    assert int8["dev_f1"] == q["quantized_f1"] and int8["latency_ms_p50"] > 0
    assert f"{q['quantized_all_f1']:.2f}" in int8["note"]  # the all-op int8 score beside it
    arm = [r for r in rows if r["backend"] == "lite-arm"]
    assert arm and all(r["latency_ms_p50"] is None and r["dev_f1"] is None for r in arm)
    assert (tmp_path / "pareto.png").stat().st_size > 0 and res["pareto_png"]
    assert "| teacher |" in (tmp_path / "report.md").read_text(encoding="utf-8")
    # Pareto: lower x and higher y win; a dominated point is excluded.
    assert pareto_front([(1, 10), (2, 12), (3, 11), (0.5, 5)]) == [0, 1, 3]


def test_an_opt_crash_becomes_a_clear_error(exported, monkeypatch, tmp_path):
    from paddleqa.stages import lite as export_mod  # opt's wrapper lives in stages/lite.py

    out, _, _, _ = exported
    monkeypatch.setattr(export_mod, "_OPT_CHILD", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)")
    with pytest.raises(PaddleQAError, match=r"opt failed \(signal 11\).*for arm"):
        export_mod.lite_optimize(out / "inference" / "model.pdmodel", out / "inference" / "model.pdiparams",
                                 "arm", "fp32", tmp_path / "m")


def test_tokenizer_folder_is_found_without_opening_the_model(exported):
    from paddleqa.runtime.artifacts import tokenizer_dir_of

    out, _, model, _ = exported
    for artifact in (out / "inference", out / "x86-fp32" / "model.nb", out / "onnx" / "model.int8.onnx",
                     f"{model}/model"):
        assert tokenizer_dir_of(artifact) == open_artifact(artifact).tokenizer_dir
        assert (tokenizer_dir_of(artifact) / "vocab.txt").exists()


def test_int8_embedding_tables_shrink_the_nb_and_agree_with_dygraph(teacher_run, tmp_path):
    from paddleqa.models.int8tables import quantize_embeddings

    tmp, _, doc = teacher_run
    # A conv + attention student with a realistic share of its bytes in the character table.
    paddle.seed(0)
    student = MobileQAForQuestionAnswering(MobileQAConfig(
        vocab_size=3000, hidden_size=32, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=128, type_vocab_size=4, pad_token_id=0, conv_blocks=1,
        expand_ratio=2, kernel_size=3, num_transformer_layers=1, embedding_size=0))
    model_dir = str(tmp_path / "model")
    student.save_pretrained(model_dir)
    for f in ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(f"{doc['run_dir']}/teacher/model/{f}", f"{model_dir}/{f}")
    m32 = run(ExportConfig(model=model_dir, out_dir=str(tmp_path / "fp32"), targets=["arm", "x86"]))
    m8 = run(ExportConfig(model=model_dir, out_dir=str(tmp_path / "int8"), targets=["arm", "x86"],
                          embeddings="int8"))
    tables = m8["embedding_tables"]["tables"]
    assert {t["name"].rsplit(".", 1)[-1] for t in tables} >= {"word_embeddings", "position_embeddings"}
    saved = m8["embedding_tables"]["fp32_bytes"] - m8["embedding_tables"]["int8_bytes"]
    for target in ("arm", "x86"):
        b32, b8 = m32["bundles"][f"{target}-fp32"]["bytes"], m8["bundles"][f"{target}-fp32"]["bytes"]
        # The tables' bytes leave the .nb (less the few dequantising ops the graph gains).
        assert b32 - b8 > 0.9 * saved
    bundle = json.loads((tmp_path / "int8" / "x86-fp32" / "bundle.json").read_text(encoding="utf-8"))
    assert bundle["embeddings"] == "int8"
    # inference/ and ONNX keep the fp32 graph; Paddle Inference gets its own 8-bit-table model
    assert (tmp_path / "int8" / "inference" / "model.pdmodel").exists()
    pi8 = m8["embedding_tables"]["inference"]
    params32 = (tmp_path / "int8" / "inference" / "model.pdiparams").stat().st_size
    params8 = (tmp_path / "int8" / "inference-int8-tables" / "model.pdiparams").stat().st_size
    assert params32 - params8 > 0.9 * saved and pi8["bytes"] < m32["inference_model_bytes"]
    inputs, lengths = _batch(vocab=3000)
    ref_s, ref_e = _dygraph(model_dir, inputs)
    model = load_model(model_dir)
    model.eval()
    report = quantize_embeddings(model)
    assert report["max_abs_error"] > 0  # the tables really changed
    with paddle.no_grad():
        q_s = model(input_ids=paddle.to_tensor(inputs["input_ids"]),
                    token_type_ids=paddle.to_tensor(inputs["token_type_ids"]))[0].numpy()
    s, e = open_artifact(tmp_path / "int8" / "x86-fp32").predict(inputs)
    # The .nb and the Paddle Inference model compute what the int8-table dygraph model computes ...
    np.testing.assert_allclose(_real(s, lengths), _real(q_s, lengths), atol=1e-4)
    runner = open_artifact(pi8["path"])
    assert runner.backend == "paddle-inference"
    np.testing.assert_allclose(_real(runner.predict(inputs)[0], lengths), _real(q_s, lengths), atol=1e-4)
    # ... which stays close to the fp32 model.
    assert np.abs(_real(s, lengths) - _real(ref_s, lengths)).max() < 0.05 * np.abs(ref_s).max() + 1e-3
    assert np.corrcoef(_real(e, lengths), _real(ref_e, lengths))[0, 1] > 0.99


def test_int8_rows_are_within_half_a_step_and_padding_embeds_to_zero():
    from paddleqa.models.int8tables import Int8Embedding, quantize_rows

    rng = np.random.default_rng(0)
    w = rng.normal(size=(50, 12)).astype(np.float32)
    w[7] = 0.0
    q, scale = quantize_rows(w, padding_idx=3)
    assert q.dtype == np.int8 and np.abs(q).max() <= 127 and not q[3].any()
    err = np.abs(q.astype(np.float32) * scale - w)
    err[3] = 0
    assert (err <= scale / 2 + 1e-7).all()
    ids = paddle.to_tensor(np.array([[3, 7, 1]]))
    layer = Int8Embedding(w, padding_idx=3)
    out = layer(ids).numpy()
    assert out.shape == (1, 3, 12) and not out[0, 0].any() and not out[0, 1].any()
    np.testing.assert_allclose(out[0, 2], w[1], atol=float(scale[1, 0]) / 2 + 1e-7)
    # uint8 storage (Paddle Inference's graph): the same 8-bit values around a zero point of 128
    u8 = Int8Embedding(w, padding_idx=3, storage="uint8")
    assert u8.qweight.numpy().dtype == np.uint8
    np.testing.assert_array_equal(u8(ids).numpy(), out)
    np.testing.assert_array_equal(u8.dequantized(), layer.dequantized())
    with pytest.raises(PaddleQAError, match="valid: int8, uint8"):
        Int8Embedding(w, storage="int4")
    with pytest.raises(PaddleQAError, match="finite 2-D"):
        quantize_rows(np.full((2, 2), np.nan))


def test_int8_embeddings_config_is_validated(tmp_path):
    with pytest.raises(ValueError, match="valid: fp32, int8"):
        ExportConfig(model="m", out_dir="o", embeddings="int4")
    with pytest.raises(ValueError, match="cannot change a given inference_model"):
        ExportConfig(model="m", out_dir="o", embeddings="int8", inference_model="x/model")
