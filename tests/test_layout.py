"""The run layout: written by the pipeline, read by the report; no folder is guessed from its name."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import tiny_pipeline_doc
from paddleqa import pipeline
from paddleqa.core.errors import PaddleQAError
from paddleqa.runtime.layout import LAYOUT_FILE, RunLayout
from paddleqa.runtime.report import ReportConfig, collect_rows, run as report

DEPLOY = {"quantize": {}, "export": {"targets": ["arm", "x86"], "onnx": True}, "bench": {}}


def _doc(tmp_path: Path, **sections) -> dict:
    doc = tiny_pipeline_doc(tmp_path, tmp_path / "train.json", tmp_path / "dev.json")
    return {**doc, "distill": {}, **DEPLOY, **sections}


def _layout(doc: dict) -> RunLayout:
    return pipeline.run_layout(pipeline.build_plan(doc))


def test_layout_json_round_trips(tmp_path):
    layout = _layout(_doc(tmp_path))
    assert layout.deployed == "distill" and layout.folders["finetune"] == "teacher"
    assert {k: e.role for k, e in layout.exports.items()} == {
        "export": "deployed", "export_int8": "int8", "export_teacher": "teacher_baseline"}
    assert "export-teacher/inference" in layout.no_score and "export/onnx" in layout.bench_artifacts
    path = layout.write(tmp_path / "run")
    assert path == tmp_path / "run" / LAYOUT_FILE
    assert RunLayout.read(tmp_path / "run") == layout
    assert json.loads(path.read_text(encoding="utf-8")) == layout.to_dict()


def test_channel_pruned_chain_benches_the_student_before_and_after_pruning(tmp_path):
    """distill -> l1norm prune deploys the pruned student; the distilled one keeps its own row
    (scored by its stage), so the table shows what pruning cost and gained."""
    layout = _layout(_doc(tmp_path, prune={"method": "l1norm"}))
    assert layout.deployed == "prune"
    assert {"distill/model", "prune/model"} <= set(layout.bench_artifacts)
    assert {"distill/model", "prune/model"} <= set(layout.no_score)
    assert layout.bench_artifacts.count("distill/model") == 1
    # an autocompress plan's distill is its trial, which never read dev: the bench scores it
    trial = _layout(_doc(tmp_path, prune={"method": "l1norm"}, distill={"dev_file": ""}))
    assert "distill/model" in trial.bench_artifacts and "distill/model" not in trial.no_score
    assert "prune/model" in trial.no_score
    plain = _layout(_doc(tmp_path))  # nothing pruned: the distilled student is the deployed one
    assert plain.deployed == "distill" and "prune/model" not in plain.bench_artifacts


def test_pipeline_writes_the_layout_before_its_stages(tiny_json, tmp_path):
    doc = tiny_pipeline_doc(tmp_path, tiny_json, tiny_json)
    pipeline.run(doc, only="data")
    layout = RunLayout.read(tmp_path / "run")
    assert layout == _layout(doc)
    assert layout.deployed == "teacher" and not layout.exports and not layout.bench_artifacts
    assert (layout.folder(tmp_path / "run", "data") / "metrics.json").exists()


def test_folders_renamed_in_the_config_are_recorded(tmp_path):
    root = tmp_path / "run"
    layout = _layout(_doc(tmp_path, finetune={"output_dir": str(root / "big")},
                          export={"out_dir": str(root / "ship" / "fp32"), "onnx": True},
                          bench={"out": str(tmp_path / "elsewhere" / "bench.json")}))
    assert layout.folders["finetune"] == "big" and layout.model_dir(root, "teacher") == root / "big" / "model"
    assert layout.exports["export"].folder == "ship/fp32"
    assert layout.exports["export_int8"].folder == "ship/export-int8"
    assert layout.file(root, "bench_results") == tmp_path / "elsewhere" / "bench.json"  # absolute
    assert "big/model" in layout.no_score


def _fake_run(root: Path, layout: RunLayout) -> None:
    """The metrics files of a finished run, written where ``layout`` says (no training)."""
    def put(path: Path, obj: dict) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(obj), encoding="utf-8")

    put(layout.folder(root, "finetune") / "metrics.json",
        {"params": 1000, "flops_per_query": 5e6, "flops_seq_len": 16, "model_bytes": 4000,
         "dev_em": 10.0, "dev_f1": 20.0})
    put(layout.folder(root, "evaluate") / "metrics.json", {"em": 11.0, "f1": 21.0})
    put(layout.folder(root, "distill") / "metrics.json",
        {"params": 300, "flops_per_query": 1e6, "model_bytes": 1200, "dev_em": 9.0, "dev_f1": 19.0})
    put(layout.folder(root, "quantize") / "metrics.json",
        {"method": "ptq", "file_bytes": 400, "quantized_em": 8.0, "quantized_f1": 18.0})
    timed = []
    for key, export in layout.exports.items():
        folder = root / export.folder
        bundles = {b: {"path": str(folder / b / "model.nb"), "bytes": 500 + i}
                   for i, b in enumerate(["arm-fp32", "x86-fp32"])}
        m = {"params": 300, "inference_model_bytes": 1100, "bundles": bundles}
        if key != "export_int8":
            m["onnx"] = {"path": str(folder / "onnx" / "model.onnx"), "bytes": 1150}
        put(folder / "metrics.json", m)
        timed += [folder / "inference", folder / "x86-fp32"]
    rows = [{"artifact": str(a), "threads": 1, "peak_rss_mib": 90.0,
             "settings": [{"seq_len": 16, "latency_ms_p50": 2.0 + i}]}
            for i, a in enumerate(timed + [layout.model_dir(root, "teacher")])]
    rows[0]["dev_em"], rows[0]["dev_f1"] = 7.0, 17.0
    put(layout.file(root, "bench_results"), {"rows": rows})


def test_report_finds_renamed_folders_through_the_layout(tmp_path):
    """The same run with every folder named differently reports the same rows."""
    std_root, odd_root = tmp_path / "std" / "run", tmp_path / "odd" / "run"
    std = _layout(_doc(tmp_path / "std"))
    odd = _layout(_doc(tmp_path / "odd", finetune={"output_dir": str(odd_root / "big")},
                       distill={"output_dir": str(odd_root / "small")},
                       evaluate={"out_dir": str(odd_root / "scores")},
                       quantize={"out_dir": str(odd_root / "q8")},
                       export={"out_dir": str(odd_root / "ship" / "fp32"), "targets": ["arm", "x86"],
                               "onnx": True},
                       bench={"out": str(odd_root / "timing" / "all.json")}))
    assert odd.folders != std.folders and odd.exports != std.exports
    for root, layout in ((std_root, std), (odd_root, odd)):
        _fake_run(root, layout)
        layout.write(root)
    a = report(ReportConfig(run_dir=str(std_root)))["rows"]
    b = collect_rows(odd_root)
    strip = [[{k: v for k, v in r.items() if k != "path"} for r in rows] for rows in (a, b)]
    assert strip[0] == strip[1]
    names = [r["name"] for r in a]
    assert names[:2] == ["teacher", "distill"] and "teacher inference fp32" in names
    assert "int8 ptq" in names and "lite arm-fp32 (ptq)" in names
    by_name = {r["name"]: r for r in b}
    assert by_name["teacher"]["dev_f1"] == 21.0 and by_name["teacher"]["latency_ms_p50"] is not None
    assert by_name["lite x86-fp32"]["source"] == "distill" and by_name["lite x86-fp32"]["latency_ms_p50"]
    assert by_name["lite arm-fp32 (ptq)"]["source"] == "int8 ptq"
    assert (std_root / "report" / "results.json").exists()


def test_report_without_a_layout_says_to_rerun_the_pipeline(tmp_path):
    (tmp_path / "teacher").mkdir()
    with pytest.raises(PaddleQAError, match=r"layout\.json does not exist.*paddleqa run CONFIG"):
        report(ReportConfig(run_dir=str(tmp_path)))
    (tmp_path / LAYOUT_FILE).write_text('{"version": 99, "folders": {}}', encoding="utf-8")
    with pytest.raises(PaddleQAError, match="not a run layout"):
        collect_rows(tmp_path)
