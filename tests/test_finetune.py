"""Teacher fine-tuning end to end on tiny fixtures: pipeline, evaluate, resume after kill -9."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

from conftest import FINETUNE_KILLER, TINY, tiny_pipeline_doc
from paddleqa import cli

REPO = Path(__file__).resolve().parent.parent


def _write_cfg(tmp_path, doc) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    return path


def _contexts():
    return {qa["id"]: p["context"] for a in TINY["data"] for p in a["paragraphs"] for qa in p["qas"]}


def test_pipeline_trains_evaluates_and_skips_when_done(tmp_path, tiny_json, capsys):
    cfg = _write_cfg(tmp_path, tiny_pipeline_doc(tmp_path, tiny_json, tiny_json))
    assert cli.main(["-q", "run", str(cfg)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert {"em", "f1", "average", "total"} <= set(summary) and summary["total"] == 3
    run = tmp_path / "run"
    preds = json.loads((run / "evaluate" / "predictions.json").read_text(encoding="utf-8"))
    contexts = _contexts()
    assert set(preds) == set(contexts)
    assert all(ans in contexts[q] for q, ans in preds.items())  # spans of their own contexts
    manifest = json.loads((run / "teacher" / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["inputs"]["train_file"]["sha256"] and manifest["versions"]["paddlenlp"] == "2.8.1"
    assert manifest["metrics"]["params"] > 0 and "git_commit" in manifest
    curve = json.loads((run / "teacher" / "learning_curve.json").read_text(encoding="utf-8"))
    assert [round(c["epoch"]) for c in curve] == [1, 2]
    stamp = (run / "teacher" / "manifest.json").stat().st_mtime_ns
    assert cli.main(["-q", "run", str(cfg)]) == 0  # second run: every stage up to date
    assert (run / "teacher" / "manifest.json").stat().st_mtime_ns == stamp
    assert json.loads(capsys.readouterr().out)["f1"] == summary["f1"]

    # evaluate accepts the finetune folder and reproduces the pipeline's scores
    assert cli.main(["-q", "evaluate", str(run / "teacher"), str(tiny_json), "--out",
                     str(tmp_path / "ev"), "--no-progress"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["f1"] == summary["f1"] and again["em"] == summary["em"]

    # score the written predictions with the standalone command: same numbers
    assert cli.main(["score", str(tiny_json), str(tmp_path / "ev" / "predictions.json")]) == 0
    assert json.loads(capsys.readouterr().out)["f1"] == summary["f1"]

    # A changed training config: the finished run is kept aside, not resumed, not deleted.
    doc = tiny_pipeline_doc(tmp_path, tiny_json, tiny_json, epochs=1)
    cfg = _write_cfg(tmp_path, doc)
    assert cli.main(["-q", "run", str(cfg), "--only", "finetune"]) == 0
    aside = list(run.glob("teacher.superseded-*"))
    assert len(aside) == 1 and (aside[0] / "manifest.json").stat().st_mtime_ns == stamp
    assert json.loads((run / "teacher" / "metrics.json").read_text())["epochs"] == 1


def test_output_dir_guards(tmp_path, tiny_json, capsys):
    doc = tiny_pipeline_doc(tmp_path, tiny_json, tiny_json, epochs=1)
    cfg = _write_cfg(tmp_path, doc)
    assert cli.main(["-q", "run", str(cfg), "--only", "vocab"]) == 0
    assert cli.main(["-q", "finetune", "--config", str(cfg)]) == 0
    capsys.readouterr()
    assert cli.main(["-q", "finetune", "--config", str(cfg)]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert cli.main(["-q", "finetune", "--config", str(cfg), "--resume",
                     "--set", "finetune.learning_rate=0.01"]) == 2
    err = capsys.readouterr().err
    assert "cannot resume" in err and "learning_rate" in err
    tiny_json.write_text(tiny_json.read_text(encoding="utf-8") + "\n", encoding="utf-8")
    assert cli.main(["-q", "finetune", "--config", str(cfg), "--resume"]) == 2
    assert "train_file changed since its checkpoints were made" in capsys.readouterr().err


def test_missing_tokenizer_is_explained(tmp_path, tiny_json, capsys):
    cfg = _write_cfg(tmp_path, tiny_pipeline_doc(tmp_path, tiny_json, tiny_json))
    assert cli.main(["-q", "finetune", "--config", str(cfg)]) == 2
    assert "--only vocab" in capsys.readouterr().err


def _weights(run_dir: Path) -> dict:
    import paddle

    return {k: v.numpy() for k, v in paddle.load(str(run_dir / "teacher" / "model" /
                                                     "model_state.pdparams")).items()}


def test_resume_after_kill_reaches_the_same_weights(tmp_path, tiny_json):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # 12 steps, dropout on: the resumed run must replay the same batches and dropout masks
    finetune = {"epochs": 4, "batch_size": 1, "save_steps": 4, "eval_each_epoch": False}
    runs = {}
    for name in ("straight", "killed"):
        base = tmp_path / name
        base.mkdir()
        cfg = _write_cfg(base, tiny_pipeline_doc(base, tiny_json, tiny_json, **finetune))
        subprocess.run([sys.executable, "-m", "paddleqa.cli", "-q", "run", str(cfg), "--only", "vocab"],
                       env=env, check=True, cwd=REPO)
        runs[name] = (base, cfg)
    base, cfg = runs["straight"]
    subprocess.run([sys.executable, "-m", "paddleqa.cli", "-q", "finetune", "--config", str(cfg)],
                   env=env, check=True, cwd=REPO, capture_output=True)
    base, cfg = runs["killed"]
    proc = subprocess.run([sys.executable, "-c", FINETUNE_KILLER, str(cfg), "6"], env=env, cwd=REPO,
                          capture_output=True)
    assert proc.returncode == -9  # really killed by SIGKILL mid-training
    ckpts = sorted(p.name for p in (base / "run" / "teacher" / "checkpoints").iterdir())
    assert ckpts == ["checkpoint-4"] and not (base / "run" / "teacher" / "model").exists()
    out = subprocess.run([sys.executable, "-m", "paddleqa.cli", "-q", "finetune", "--config", str(cfg),
                          "--resume"], env=env, check=True, cwd=REPO, capture_output=True, text=True)
    metrics = json.loads(out.stdout)
    assert metrics["resumed_from"] == "checkpoint-4"
    a, b = _weights(runs["straight"][0] / "run"), _weights(base / "run")
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=0, atol=1e-6, err_msg=k)


def test_hybrid_teacher_from_scratch_trains_and_distils(tmp_path, tiny_json):
    """arch.kind: mobilenet -- the conv + attention hybrid as the teacher: the loss falls, the
    saved folder reloads with the same outputs, and an ERNIE student distils from it."""
    import paddle

    from paddleqa import pipeline
    from paddleqa.models.build import load_model

    doc = tiny_pipeline_doc(tmp_path, tiny_json, tiny_json, epochs=4, eval_each_epoch=False)
    doc["finetune"]["arch"].update(kind="mobilenet", num_layers=1, conv_blocks=1, expand_ratio=2)
    doc["distill"] = {"student": {"num_layers": 1}, "max_steps": 2, "save_steps": 2, "logging_steps": 1,
                      "eval_each_epoch": False}
    pipeline.run(doc, only="vocab")
    metrics = pipeline.run(doc, only="finetune")["finetune"]
    log = json.loads((tmp_path / "run" / "teacher" / "train_log.json").read_text(encoding="utf-8"))
    losses = [h["loss"] for h in log if "loss" in h]
    assert losses[-1] < losses[0]
    model_dir = tmp_path / "run" / "teacher" / "model"
    assert json.loads((model_dir / "config.json").read_text(encoding="utf-8"))["conv_blocks"] == 1
    model = load_model(str(model_dir))
    assert type(model).__name__ == "MobileQAForQuestionAnswering"
    assert metrics["params"] == sum(int(np.prod(p.shape)) for p in model.parameters())
    model.eval()
    ids = paddle.to_tensor([[1, 5, 6, 2, 7, 8, 2]])
    a = model(ids, token_type_ids=paddle.zeros_like(ids))[0].numpy()
    b = load_model(str(model_dir))
    b.eval()
    np.testing.assert_allclose(a, b(ids, token_type_ids=paddle.zeros_like(ids))[0].numpy(), atol=1e-6)
    student = pipeline.run(doc, only="distill")["distill"]
    assert student["params"] < metrics["params"]
