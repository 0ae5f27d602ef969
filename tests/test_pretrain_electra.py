"""paddleqa pretrain --objective electra: the objective is chosen by name, the generator is smaller
and shares the embeddings, replaced tokens are seeded by the batch, the RTD probe loss falls, the
discriminator's folder fine-tunes through finetune.model, and a killed run resumes exactly."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import (CONTEXT_1, CONTEXT_2, KILL_AT_STEP, TINY, TINY_ARCH, assert_resumed_as_straight,
                      write_json)
from paddleqa import pipeline
from paddleqa.core.config import from_dict
from paddleqa.core.errors import ConfigError
from paddleqa.stages.pretrain import PretrainConfig

REPO = Path(__file__).resolve().parent.parent
KB = "会员积分可以在个人中心查看，积分有效期为一年。\n\n订单发货后，物流信息会在24小时内更新。\n"


def _corpus(tmp_path: Path) -> list[str]:
    kb = tmp_path / "kb"
    kb.mkdir()
    (kb / "faq.txt").write_text(KB, encoding="utf-8")
    (kb / "policy.txt").write_text(CONTEXT_1 + "\n\n" + CONTEXT_2 + "\n", encoding="utf-8")
    return [str(kb)]


def _dev(tmp_path: Path) -> Path:
    """A dev file with a context that is not in the corpus (the corpus of a set scored is refused)."""
    ctx = "售后服务时间为每天8:00至20:00，节假日照常服务。"
    dev = {**TINY, "data": [{"id": "d", "title": "售后", "paragraphs": [{"id": "pd", "context": ctx, "qas": [
        {"id": "dq", "question": "售后几点开始？", "answers": [{"text": "8:00", "answer_start": ctx.index("8:00")}]}]}]}]}
    return write_json(tmp_path / "dev.json", dev)


def _config(tmp_path: Path, corpus: list[str], tokenizer: Path, name: str, **over) -> dict:
    return {"corpus": corpus, "output_dir": str(tmp_path / name), "cache_dir": str(tmp_path / "cache"),
            "tokenizer": str(tokenizer), "arch": dict(TINY_ARCH), "max_seq_len": 24,
            "objective": "electra", "progress": False, **over}


def test_objective_and_knobs_are_checked_by_name(tmp_path):
    base = {"corpus": ["x.txt"], "output_dir": str(tmp_path), "tokenizer": str(tmp_path)}
    assert from_dict(PretrainConfig, base).objective == "mlm"  # the default stays masked-LM
    with pytest.raises(ConfigError) as exc:
        from_dict(PretrainConfig, {**base, "objective": "bert"})
    assert "'bert' is unknown" in str(exc.value) and "mlm, electra" in str(exc.value)
    for key, bad in (("generator_size", 0.0), ("generator_size", 1.5), ("rtd_weight", 0.0)):
        with pytest.raises(ConfigError, match=key):
            from_dict(PretrainConfig, {**base, "objective": "electra", key: bad})


@pytest.mark.parametrize("kind", ["ernie", "mobilenet"])
def test_the_generator_is_smaller_shares_the_embeddings_and_samples_by_seed(kind):
    import paddle

    from paddleqa.models.build import ArchConfig
    from paddleqa.models.electra import build_electra, electra_sizes

    arch = ArchConfig(**{**TINY_ARCH, "kind": kind, "conv_blocks": 1, "dropout": 0.0})
    paddle.seed(3)
    model = build_electra(arch, 60, 0, 0.25, 50.0)
    sizes = electra_sizes(model)
    assert sizes["generator_params"] < sizes["non_embedding_params"] / 4  # a quarter wide, same depth
    table = model.encoder.embeddings.word_embeddings.weight
    assert model.generator.get_input_embeddings().weight is table  # ELECTRA's tied embeddings
    ids = paddle.to_tensor(np.random.RandomState(0).randint(5, 60, (3, 12)).astype("int64"))
    labels = np.full((3, 12), -100, dtype=np.int64)
    labels[:, [2, 5, 9]] = ids.numpy()[:, [2, 5, 9]]
    model.eval()
    runs = [model(ids, paddle.to_tensor(labels), paddle.to_tensor([s])) for s in (1, 1, 2, 3, 4)]
    assert float(runs[0]["rtd_loss"]) == float(runs[1]["rtd_loss"])  # the seed decides the samples,
    assert len({float(r["rtd_loss"]) for r in runs[1:]}) > 1  # which are drawn, not argmax
    assert float(runs[0]["masked"]) == 9 and float(runs[0]["tokens"]) == 36
    assert 0 < float(runs[0]["replaced"]) <= 9  # only masked positions can change
    out = runs[0]
    out["loss"].backward()
    assert table.grad is not None  # both losses reach the shared table
    head = [p for p in model.discriminator.parameters() if p.stop_gradient]
    assert head and all(p.grad is None for p in head)  # the discriminator's unused MLM head: frozen


def test_electra_learns_and_its_folder_fine_tunes_through_finetune_model(tmp_path):
    corpus = _corpus(tmp_path)
    train = write_json(tmp_path / "train.json", TINY)
    doc = {"run_dir": str(tmp_path / "run"),
           "data": {"train_file": str(train), "dev_file": str(_dev(tmp_path)), "validation_share": 0},
           "pretrain": {"corpus": corpus + [str(train)], "objective": "electra", "epochs": 30, "batch_size": 4,
                        "learning_rate": 0.005, "logging_steps": 5, "save_steps": 1000},
           "finetune": {"arch": dict(TINY_ARCH), "max_seq_len": 64, "doc_stride": 24, "max_query_length": 16,
                        "epochs": 1, "batch_size": 4, "learning_rate": 0.001, "logging_steps": 2,
                        "eval_each_epoch": False, "cache_dir": str(tmp_path / "cache"), "progress": False}}
    for stage in ("data", "vocab", "pretrain", "finetune"):
        results = pipeline.run(doc, only=stage)
    pre = tmp_path / "run" / "pretrain"
    m = json.loads((pre / "metrics.json").read_text(encoding="utf-8"))
    assert m["objective"] == "electra" and m["rtd_weight"] == 50.0
    assert m["probe_rtd_loss_after"] < m["probe_rtd_loss_before"]  # on the same rows, masks, seeds
    assert m["probe_loss_after"] < m["probe_loss_before"]  # the generator learns too
    assert 0 < m["probe_replaced_share_before"] < 0.5 and m["probe_rtd_accuracy_after"] > 0.5
    losses = [p["loss"] for p in m["loss_curve"]]
    assert len(losses) >= 4 and np.mean(losses[-2:]) < np.mean(losses[:2])
    assert m["generator_params"] < m["non_embedding_params"]
    folder = pre / "model"
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    assert config["architectures"] == ["ErnieForMaskedLM"] and config["hidden_size"] == TINY_ARCH["hidden_size"]
    import paddle

    saved = paddle.load(str(folder / "model_state.pdparams"))
    assert not any(k.startswith(("generator", "rtd")) for k in saved)  # the discriminator only
    teacher = tmp_path / "run" / "teacher"
    manifest = json.loads((teacher / "manifest.json").read_text(encoding="utf-8"))
    recorded = json.loads((pre / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["inputs"]["model"]["sha256"] == recorded["outputs"]["model"]["sha256"]  # safe load passed
    assert results["finetune"]["params"] < m["params"]  # the span head replaced the MLM head


KILLER = KILL_AT_STEP + r"""
import json
from paddleqa.core.config import from_dict
from paddleqa.stages import pretrain

cfg = from_dict(pretrain.PretrainConfig, json.loads(sys.argv[1]))
pretrain.run(cfg, resume=sys.argv[3] == "resume", callbacks=[KillAtStep(int(sys.argv[2]))])
"""


def test_kill_9_mid_run_and_resume_ends_as_an_uninterrupted_run(tmp_path, tiny_tokenizer_dir):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    corpus = _corpus(tmp_path)
    runs = {name: json.dumps(_config(tmp_path, corpus, tiny_tokenizer_dir, name, epochs=4, batch_size=2,
                                     logging_steps=1, save_steps=6))
            for name in ("straight", "killed")}  # dropout on: masks, samples and dropout replayed
    run = [sys.executable, "-c", KILLER]
    subprocess.run(run + [runs["straight"], "0", "fresh"], env=env, cwd=REPO, check=True, capture_output=True)
    proc = subprocess.run(run + [runs["killed"], "9", "fresh"], env=env, cwd=REPO, capture_output=True)
    assert proc.returncode == -9
    assert sorted(p.name for p in (tmp_path / "killed" / "checkpoints").iterdir()) == ["checkpoint-6"]
    subprocess.run(run + [runs["killed"], "0", "resume"], env=env, cwd=REPO, check=True, capture_output=True)
    assert_resumed_as_straight(tmp_path / "straight", tmp_path / "killed", 6)


def test_the_hybrid_discriminator_folder_loads_as_the_qa_model(tmp_path, tiny_tokenizer_dir):
    import paddle

    from paddleqa.models.build import load_model
    from paddleqa.stages import pretrain

    arch = {**TINY_ARCH, "kind": "mobilenet", "conv_blocks": 1, "num_layers": 1}
    cfg = from_dict(PretrainConfig, _config(tmp_path, _corpus(tmp_path), tiny_tokenizer_dir, "pre", arch=arch,
                                            max_steps=4, batch_size=2, save_steps=1000))
    m = pretrain.run(cfg)
    assert m["objective"] == "electra" and m["global_step"] == 4 and m["generator_params"] < m["params"]
    folder = tmp_path / "pre" / "model"
    assert json.loads((folder / "config.json").read_text(encoding="utf-8"))["architectures"] == ["MobileQAForMaskedLM"]
    qa = load_model(str(folder))  # hash-checked against pretrain's manifest, then loaded
    saved = paddle.load(str(folder / "model_state.pdparams"))
    mine = qa.state_dict()
    encoder = [k for k in saved if k.startswith("mobile.")]
    assert encoder and all(np.array_equal(mine[k].numpy(), saved[k].numpy()) for k in encoder)
