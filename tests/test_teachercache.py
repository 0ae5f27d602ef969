"""The teacher cache: a batch read back gives the loss the live teacher gives, only for the same
teacher and windows, and a distillation run with it trains as one without it."""
import json

import numpy as np
import pytest

from paddleqa import pipeline

from conftest import distill_doc


def _batch():
    import paddle

    ids = paddle.to_tensor([[1, 8, 9, 2, 10, 11, 12, 2, 0, 0], [1, 13, 2, 14, 15, 16, 17, 18, 19, 2]])
    types = paddle.to_tensor([[0, 3, 0, 0, 2, 1, 1, 1, 0, 0], [0, 0, 0, 1, 1, 1, 1, 1, 1, 1]])
    return ids, types, paddle.to_tensor([4, 0]), paddle.to_tensor([6, 0])


def _feats(n=6, width=10):
    rng = np.random.RandomState(0)
    return {"input_ids": rng.randint(1, 20, (n, width)), "token_type_ids": np.zeros((n, width), int),
            "length": np.full(n, width)}


def test_a_cached_batch_gives_the_live_teachers_loss_without_running_it(teacher_run, tmp_path):
    import paddle

    from paddleqa.models.build import load_model
    from paddleqa.models.distiller import Distiller
    from paddleqa.models.students import STUDENTS
    from paddleqa.models.teachercache import open_cache

    cfg = pipeline.build_plan(distill_doc(teacher_run, tmp_path, alpha=0.3, hidden_weight=1.0,
                                           student={"num_layers": 2, "hidden_size": 16,
                                                    "num_heads": 2, "dropout": 0.0}),
                              enable=("distill",)).distill
    teacher = load_model(cfg.teacher)
    teacher.eval()
    student, layers = STUDENTS["ernie"](teacher, cfg.student)
    objective = cfg.objective([(i + 1, t) for i, t in enumerate(layers)])
    ids, types, start, end = _batch()
    feats = _feats(n=5)
    cache = open_cache(tmp_path / "tc", cfg.teacher, feats, [0, *layers], teacher.config.hidden_size)
    assert not Distiller(student, teacher, objective).takes_window
    cached = Distiller(student, teacher, objective, cache)  # (its width projections are its own)
    assert cached.takes_window
    student.eval()
    window = paddle.to_tensor([3, 1])
    (expected,) = cached(ids, types, start, end)  # no window indices: the live teacher
    calls = []
    teacher.register_forward_pre_hook(lambda layer, inputs: calls.append(1))
    (first,) = cached(ids, types, start, end, window)  # computes and keeps the teacher's outputs
    (again,) = cached(ids, types, start, end, window)  # reads them back
    assert calls == [1]
    assert float(first) == pytest.approx(float(expected), rel=1e-6)
    assert float(again) == pytest.approx(float(expected), rel=1e-3)  # hidden states kept as float16
    assert cache.stats["hits"] == 1 and cache.stats["misses"] == 1
    # A batch with one window not seen yet runs the teacher again.
    cached(ids, types, start, end, paddle.to_tensor([3, 0]))
    assert calls == [1, 1]
    # Past a window's length the kept logits are zeros (padding, masked by every loss).
    s, e, hidden = cache.get(np.array([3]), 10)
    assert (s[0, 8:] == 0).all() and (s[0, :8] != 0).all() and set(hidden) == {0, *layers}
    # Another process (a data-parallel rank) opening the same cache sees what was written.
    other = open_cache(tmp_path / "tc", cfg.teacher, feats, [0, *layers], teacher.config.hidden_size)
    assert other.folder == cache.folder and other.get(np.array([3, 1]), 10) is not None
    # Other windows or another set of hidden states: another folder, nothing cached there.
    feats2 = {**feats, "input_ids": feats["input_ids"] + 1}
    assert open_cache(tmp_path / "tc", cfg.teacher, feats2, [0, *layers], 32).folder != cache.folder
    assert open_cache(tmp_path / "tc", cfg.teacher, feats, [0], 32).get(np.array([3, 1]), 10) is None


def test_no_cache_when_the_disk_cannot_hold_it(teacher_run, tmp_path, monkeypatch):
    import shutil

    from paddleqa.models import teachercache

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(teachercache.shutil, "disk_usage", lambda p: usage._replace(free=1000))
    assert teachercache.open_cache(tmp_path / "tc", teacher_run[0], _feats(), [0, 1], 32) is None


def test_distillation_with_the_cache_trains_as_without_it(teacher_run, tmp_path):
    runs = {}
    for flag in (True, False):
        doc = distill_doc(teacher_run, tmp_path / str(flag), hidden_weight=0.5, epochs=3,
                           student={"num_layers": 2, "hidden_size": 16, "num_heads": 2},
                           teacher_cache=flag, cache_dir=str(tmp_path / "cache"))
        runs[flag] = pipeline.run(doc, only="distill")["distill"]
    with_cache, without = runs[True], runs[False]
    stats = with_cache["teacher_cache"]
    assert "teacher_cache" not in without
    assert stats["hits"] > 0 and stats["misses"] > 0  # epoch 1 computes, epochs 2-3 read back
    assert with_cache["train_loss"] == pytest.approx(without["train_loss"], rel=1e-3)
    assert with_cache["dev_f1"] == pytest.approx(without["dev_f1"], abs=1e-6)
    done = np.load(f"{stats['path']}/done.npy", allow_pickle=False)
    assert done.all() and len(done) == with_cache["train_windows"]
    manifest = json.loads((tmp_path / "True" / "distill" / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["config"]["teacher_cache"] is True


def test_the_benchmark_keeps_whole_passages_and_reports_both_runs(tmp_path):
    from benchmarks import teacher_cache as bench

    from conftest import TINY, write_json

    src = write_json(tmp_path / "train.json", TINY)
    n = bench.subset(src, 1, tmp_path / "sub.json")
    kept = json.loads((tmp_path / "sub.json").read_text(encoding="utf-8"))
    first = json.loads(src.read_text(encoding="utf-8"))["data"][0]["paragraphs"][0]
    assert kept["data"][0]["paragraphs"][0] == first and n == len(first["qas"]) >= 1
    row = {"global_step": 30, "epochs": 3.0, "train_windows": 40, "train_loss": 2.0,
           "validation_em": 10.0, "validation_f1": 30.0}
    record = {"command": "python benchmarks/teacher_cache.py", "record": bench.RECORD,
              "machine": {"cpu": "x", "cores": 2, "paddlepaddle": "2.6.2"}, "nproc": 2,
              "config": "c.yaml", "teacher": "t", "questions": n,
              "rows": {"off": {**row, "train_seconds": 90.0},
                       "on": {**row, "train_seconds": 45.0, "validation_f1": 30.5,
                              "teacher_cache": {"hits": 20, "misses": 10}}}}
    text = bench.render(record)
    assert "**2.00x faster**" in text and "| on | 30 | 45 | 1.50 | 20 / 10 |" in text
    assert "differs by +0.50" in text
