"""One record decides whether a stage's run stands: skip a finished run, resume checkpoints, and
read the folders an earlier paddleqa wrote."""
import dataclasses
import json
import logging

import yaml

from paddleqa import pipeline
from paddleqa.core.config import opt, to_dict
from paddleqa.core.freshness import begin, config_diff, finished_reason, resume_reason
from paddleqa.core.io import write_json
from paddleqa.core.manifest import write_manifest
from paddleqa.stages.runner import training_inputs


@dataclasses.dataclass
class Arch:
    width: int = opt(8, help="")


@dataclasses.dataclass
class Cfg:
    lr: float = opt(0.1, help="")
    arch: Arch = opt(factory=Arch, help="")
    progress: bool = opt(True, help="", result=False)
    added_later: str = opt("", help="a field a newer paddleqa added, its default the old behaviour")


def test_only_result_fields_count_and_a_missing_field_is_its_default():
    recorded = {"lr": 0.1, "arch": {"width": 8}, "progress": False, "gone": 3}  # no added_later
    assert config_diff(Cfg(), recorded) == []
    assert config_diff(Cfg(lr=0.2), recorded) == ["lr"]
    assert config_diff(Cfg(arch=Arch(16)), recorded) == ["arch.width"]
    assert config_diff(Cfg(added_later="x"), recorded) == ["added_later"]


def test_finished_running_and_changed_records(tmp_path):
    data = tmp_path / "in.txt"
    data.write_text("a", encoding="utf-8")
    out, model = tmp_path / "stage", tmp_path / "stage" / "model.txt"
    begin(out, "s", Cfg(), {"data": str(data)})
    assert finished_reason(out, Cfg(), {"data": str(data)}) == "its last run did not finish"
    assert resume_reason(out, Cfg(progress=False), {"data": str(data)}) is None
    assert "differs in: lr" in resume_reason(out, Cfg(lr=0.5), {"data": str(data)})
    model.write_text("weights", encoding="utf-8")
    write_manifest(out, "s", to_dict(Cfg()), {"data": data}, {"model": model}, {"f1": 1.0})
    assert finished_reason(out, Cfg(progress=False), {"data": str(data)}) is None
    assert finished_reason(out, Cfg(lr=0.5), {"data": str(data)}) == "its config differs in: lr"
    data.write_text("b", encoding="utf-8")
    assert finished_reason(out, Cfg(), {"data": str(data)}) == "input data changed"
    assert resume_reason(out, Cfg(), {"data": str(data)}) == "data changed since its checkpoints were made"
    data.write_text("a", encoding="utf-8")
    model.write_text("other weights", encoding="utf-8")
    assert finished_reason(out, Cfg(), {"data": str(data)}) == "output model changed since it was written"


def _as_written_before_the_record(stage_dir, drop_field: str) -> None:
    """Rewrite a finished stage's manifest as paddleqa wrote it before the freshness record: no
    status, and a config without a field that was added later (with its default)."""
    path = stage_dir / "manifest.json"
    manifest = json.loads(path.read_text(encoding="utf-8"))
    manifest.pop("status")
    manifest["config"].pop(drop_field)
    write_json(path, manifest)


def test_a_run_folder_from_before_the_record_is_still_finished(teacher_run, tmp_path, caplog):
    _, data, doc = teacher_run
    doc = json.loads(json.dumps(doc))
    doc["distill"] = {"output_dir": str(tmp_path / "distill"), "epochs": 1, "batch_size": 4,
                      "student": {"num_layers": 2}, "progress": False}
    pipeline.run(doc, only="distill")
    _as_written_before_the_record(tmp_path / "distill", drop_field="intermediate")
    stamp = (tmp_path / "distill" / "manifest.json").stat().st_mtime_ns
    with caplog.at_level(logging.INFO, logger="paddleqa"):
        pipeline.run(doc, only="distill")
    assert "stage distill: up to date, skipped" in caplog.text
    assert (tmp_path / "distill" / "manifest.json").stat().st_mtime_ns == stamp
    # ... but a changed result field still redoes it (a progress flag does not)
    doc["distill"]["progress"] = True
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="paddleqa"):
        pipeline.run(doc, only="distill")
    assert "stage distill: up to date, skipped" in caplog.text
    doc["distill"]["alpha"] = 0.3
    cfg = pipeline.build_plan(doc).distill
    assert finished_reason(cfg.output_dir, cfg, training_inputs(cfg)) == "its config differs in: alpha"


def test_an_unfinished_training_folder_of_an_older_paddleqa_resumes(tmp_path):
    """Older runs recorded resolved_config.yaml + run_inputs.json and no manifest until the end."""
    train = tmp_path / "train.json"
    train.write_text("{}", encoding="utf-8")
    out = tmp_path / "teacher"
    out.mkdir()
    (out / "resolved_config.yaml").write_text(yaml.safe_dump(to_dict(Cfg())), encoding="utf-8")
    from paddleqa.core.manifest import sha256_path

    write_json(out / "run_inputs.json", {"train_file": sha256_path(train)})
    assert resume_reason(out, Cfg(), {"train_file": str(train)}) is None
    assert "differs in: lr" in resume_reason(out, Cfg(lr=0.3), {"train_file": str(train)})
    train.write_text('{"data": []}', encoding="utf-8")
    assert resume_reason(out, Cfg(), {"train_file": str(train)}) == (
        "train_file changed since its checkpoints were made")
