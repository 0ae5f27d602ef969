"""Tiny fixtures: a 3-question CMRC file, a char tokenizer, a 2-layer 32-hidden ERNIE."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CMRC_DIR = Path(os.environ.get("CMRC2018_DIR", REPO.parent / "shared" / "data" / "cmrc2018"))

CONTEXT_1 = "退货政策：自签收之日起7天内可申请无理由退货，商品须保持完好。退款将在3个工作日内原路退回。"
CONTEXT_2 = "客服热线400-820-1234每天9:00至21:00服务。VIP会员可享受免运费服务。"

TINY = {
    "version": "v1.0",
    "data": [
        {"id": "a1", "title": "退货", "paragraphs": [{"id": "p1", "context": CONTEXT_1, "qas": [
            {"id": "q1", "question": "签收后几天内可以退货？",
             "answers": [{"text": "7天", "answer_start": CONTEXT_1.index("7天")}]},
            {"id": "q2", "question": "退款多久到账？",
             "answers": [{"text": "3个工作日", "answer_start": CONTEXT_1.index("3个工作日")}]},
        ]}]},
        {"id": "a2", "title": "客服", "paragraphs": [{"id": "p2", "context": CONTEXT_2, "qas": [
            {"id": "q3", "question": "客服电话是多少？",
             "answers": [{"text": "400-820-1234", "answer_start": CONTEXT_2.index("400-820-1234")}]},
        ]}]},
    ],
}


def write_json(path: Path, obj) -> Path:
    path.write_text(json.dumps(obj, ensure_ascii=False), encoding="utf-8")
    return path


@pytest.fixture
def tiny_json(tmp_path) -> Path:
    return write_json(tmp_path / "tiny.json", TINY)


@pytest.fixture
def tiny_tokenizer_dir(tmp_path, tiny_json) -> Path:
    from paddleqa.text.tokenizer import VocabConfig, run

    out = tmp_path / "vocab"
    run(VocabConfig(data_files=[str(tiny_json)], out_dir=str(out)))
    return out


# Head of a driver script for the kill/resume tests (run as `python -c KILL_AT_STEP + "..."`):
# a PaddleNLP Trainer callback that SIGKILLs its own process at the end of a chosen step, so what
# the kill leaves on disk (which checkpoints, no model/) is the same on every run: no polling for a
# checkpoint folder, no timing. Under the data-parallel launcher every rank runs it and dies at the
# same step. `import paddleqa` first: it loads the system zlib before paddle (paddleqa/__init__.py).
KILL_AT_STEP = r"""
import os, signal, sys
import paddleqa
from paddlenlp.trainer import TrainerCallback

class KillAtStep(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            print(f"rank {args.process_index}: SIGKILL at step {self.step}", file=sys.stderr, flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
"""

# `paddleqa finetune --config CFG` (argv: CFG STEP), killed by SIGKILL at the end of step STEP.
FINETUNE_KILLER = KILL_AT_STEP + r"""
from paddleqa import pipeline
from paddleqa.core import config
from paddleqa.stages import finetune

ft = pipeline.build_plan(config.read_yaml(sys.argv[1])).finetune
finetune.run(ft, callbacks=[KillAtStep(int(sys.argv[2]))])
"""


def assert_resumed_as_straight(straight: Path, killed: Path, at_step: int) -> None:
    """A pre-training run killed after ``at_step`` and resumed ends as the uninterrupted one:
    the same losses step by step (same batches, masks, dropout) and the same weights."""
    import numpy as np
    import paddle

    a, b = (json.loads((d / "metrics.json").read_text(encoding="utf-8")) for d in (straight, killed))
    assert b["resumed_from"] == f"checkpoint-{at_step}" and b["steps_this_run"] == a["global_step"] - at_step
    assert [p["loss"] for p in b["loss_curve"]] == pytest.approx([p["loss"] for p in a["loss_curve"]], abs=1e-5)
    wa, wb = (paddle.load(str(d / "model" / "model_state.pdparams")) for d in (straight, killed))
    assert wa.keys() == wb.keys()
    for k in wa:
        np.testing.assert_allclose(wa[k].numpy(), wb[k].numpy(), rtol=0, atol=1e-6, err_msg=k)


TINY_ARCH = {"num_layers": 2, "hidden_size": 32, "num_heads": 2, "intermediate_size": 64,
             "max_position_embeddings": 128, "dropout": 0.1}


def tiny_pipeline_doc(tmp_path: Path, train: Path, dev: Path, **finetune) -> dict:
    return {
        "run_dir": str(tmp_path / "run"),
        # two contexts: too few to hold one out (tests/test_splits.py covers the split)
        "data": {"train_file": str(train), "dev_file": str(dev), "validation_share": 0},
        "finetune": {"arch": dict(TINY_ARCH), "max_seq_len": 64, "doc_stride": 24,
                     "max_query_length": 16, "epochs": 2, "batch_size": 4, "learning_rate": 0.001,
                     "save_steps": 4, "logging_steps": 2, "cache_dir": str(tmp_path / "cache"),
                     "progress": False, **finetune},
    }


@pytest.fixture(scope="session")
def teacher_run(tmp_path_factory):
    """A tiny fine-tuned teacher (4 layers so that students can skip layers)."""
    tmp = tmp_path_factory.mktemp("teacher")
    data = write_json(tmp / "tiny.json", TINY)
    doc = tiny_pipeline_doc(tmp, data, data, epochs=3, overlap_types=True)
    doc["finetune"]["arch"]["num_layers"] = 4
    _pipeline().run(doc, only="vocab")
    _pipeline().run(doc, only="finetune")
    return tmp, data, doc


def distill_doc(teacher_run, tmp_path, **distill):
    """``teacher_run``'s pipeline document with a distill section (``distill`` overrides)."""
    _, data, doc = teacher_run
    doc = json.loads(json.dumps(doc))
    doc["distill"] = {"output_dir": str(tmp_path / "distill"), "epochs": 2, "batch_size": 4,
                      "learning_rate": 0.001, "save_steps": 4, "logging_steps": 2, **distill}
    return doc


def _pipeline():
    from paddleqa import pipeline

    return pipeline
