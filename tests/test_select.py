"""`paddleqa serve RUN_DIR` serves the deployed model's fastest measured form (int8 within an F1 bound)."""
from __future__ import annotations

import json

import pytest

from paddleqa.core.errors import PaddleQAError
from paddleqa.runtime.layout import ExportFolder, RunLayout
from paddleqa.service.select import fastest_artifact, served_artifact


def _run(tmp_path, rows, **folders):
    run = tmp_path / "myrun"
    RunLayout(folders={"bench": "bench", "distill": "distill", **folders}, files={"bench_results": "bench/results.json"},
              deployed="distill", deployed_model="distill/model",
              exports={"export": ExportFolder("export", "deployed"),
                       "export_int8": ExportFolder("export-int8", "int8"),
                       "export_teacher": ExportFolder("export-teacher", "teacher_baseline")}).write(run)
    (run / "bench").mkdir(parents=True)
    (run / "bench" / "results.json").write_text(json.dumps({"rows": rows}), encoding="utf-8")
    return run


def _row(artifact, ms, backend, threads=1, **extra):
    return {"artifact": artifact, "backend": backend, "threads": threads,
            "settings": [{"seq_len": 384, "latency_ms_p50": ms}], **extra}


def test_the_fastest_form_of_the_deployed_model_is_served(tmp_path):
    run = _run(tmp_path, [
        _row("runs/myrun/distill/model", 9.0, "dygraph"),
        _row("runs/myrun/export/inference", 2.1, "paddle-inference"),
        _row("runs/myrun/export/onnx", 1.2, "onnxruntime"),
        _row("runs/myrun/export/onnx", 0.9, "onnxruntime", threads=2),      # not the 1-thread setting
        _row("runs/myrun/export-int8/x86-int8", 0.5, "lite-x86"),           # int8: answers differently
        _row("runs/myrun/export-teacher/onnx", 0.4, "onnxruntime"),         # the teacher's graph
        _row("runs/myrun/export/x86-fp32", None, "lite-x86", error="boom"),
    ])
    path, facts = fastest_artifact(run)
    assert path == str(run / "export" / "onnx") and facts["backend"] == "onnxruntime"
    assert facts["latency_ms_p50"] == 1.2 and len(facts["candidates"]) == 3
    assert served_artifact(run) == path
    assert served_artifact(run / "export" / "onnx") == str(run / "export" / "onnx")  # a path as it is


def test_a_run_without_bench_results_says_what_to_do(tmp_path):
    run = _run(tmp_path, [_row("elsewhere/model", 1.0, "dygraph")])
    with pytest.raises(PaddleQAError, match="times none of the deployed model's forms"):
        fastest_artifact(run)
    (run / "bench" / "results.json").unlink()
    with pytest.raises(PaddleQAError, match="--only bench"):
        fastest_artifact(run)


def test_an_int8_form_is_served_only_within_the_allowed_f1_drop(tmp_path):
    run = _run(tmp_path, [
        _row("runs/myrun/export/onnx", 1.2, "onnxruntime", precision="fp32", dev_f1=40.0),
        _row("runs/myrun/export/onnx/model.int8.onnx", 0.7, "onnxruntime", precision="int8", dev_f1=39.5),
        _row("runs/myrun/quantize/inference", 0.5, "paddle-inference", precision="int8", dev_f1=37.0),
    ], quantize="quantize")
    path, facts = fastest_artifact(run, 1.0)  # PTQ is faster but 3 points down: left out
    assert path == str(run / "export" / "onnx" / "model.int8.onnx") and facts["precision"] == "int8"
    assert "F1 37.00 vs fp32 40.00" in facts["int8_rejected"][str(run / "quantize" / "inference")]
    assert fastest_artifact(run, 5.0)[0] == str(run / "quantize" / "inference")
    assert fastest_artifact(run, -1)[0] == str(run / "export" / "onnx")  # fp32 only
    assert served_artifact(run, 1.0) == path
