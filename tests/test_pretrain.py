"""paddleqa pretrain: whole-word masking, clear corpus errors, the loss falls, the folder fine-tunes
through finetune.model, and a run killed by SIGKILL resumes to the same weights."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import (CONTEXT_1, CONTEXT_2, KILL_AT_STEP, TINY, TINY_ARCH, assert_resumed_as_straight,
                      write_json)
from paddleqa import cli, pipeline
from paddleqa.core.errors import DataError
from paddleqa.text.corpus import pack_sequences, read_corpus

REPO = Path(__file__).resolve().parent.parent
KB = ("# 常见问题\n\n会员积分可以在个人中心查看，积分有效期为一年。\n\n"
      "- 订单发货后，物流信息会在24小时内更新。\n- [联系客服](https://example.com)获取帮助。\n")


def _corpus(tmp_path: Path) -> tuple[Path, Path]:
    """A knowledge-base folder (.md) and a training file; the dev file holds other contexts."""
    kb = tmp_path / "kb"
    kb.mkdir()
    (kb / "faq.md").write_text(KB, encoding="utf-8")
    (kb / "policy.txt").write_text(CONTEXT_1 + "\n\n" + CONTEXT_2 + "\n", encoding="utf-8")
    train = write_json(tmp_path / "train.json", TINY)
    return kb, train


def _dev(tmp_path: Path) -> Path:
    dev = json.loads(json.dumps(TINY))
    ctx = "售后服务时间为每天8:00至20:00，节假日照常服务。"
    dev["data"] = [{"id": "d", "title": "售后", "paragraphs": [{"id": "pd", "context": ctx, "qas": [
        {"id": "dq", "question": "售后几点开始？", "answers": [{"text": "8:00", "answer_start": ctx.index("8:00")}]}]}]}]
    return write_json(tmp_path / "dev.json", dev)


def test_whole_word_masking_masks_every_character_of_a_word_together(tmp_path, tiny_tokenizer_dir):
    from paddleqa.stages.mlm import RowPacker, SeededWholeWordMask, SequenceDataset, unpack_rows
    from paddleqa.text.tokenizer import load_tokenizer

    tok = load_tokenizer(str(tiny_tokenizer_dir))
    corpus = read_corpus([str(p) for p in _corpus(tmp_path)])
    assert corpus.duplicates == 2  # policy.txt repeats the training file's two contexts
    seqs, stats = pack_sequences(corpus.documents, tok, 24)
    assert stats["whole_word_continuations"] > 0 and stats["sequences"] == len(seqs)
    for i in range(len(seqs)):
        ids, refs = seqs.row(i)
        assert len(ids) <= 24 and ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id
        assert 1 not in refs  # a row never starts inside a word
    data, collate = SequenceDataset(seqs), SeededWholeWordMask(tok, 0.3, seed=7)
    whole_words = 0
    for epoch in range(20):
        rows = [data[epoch * len(data) + i] for i in range(len(data))]
        batch = collate(rows)
        again = collate(rows)
        assert all(np.array_equal(batch[k], again[k]) for k in batch)  # a function of the batch
        # padded in the DataLoader thread, unpacked and masked on the training thread: the same masks
        packed = collate(unpack_rows(RowPacker(tok.pad_token_id)(rows)))
        assert all(np.array_equal(batch[k], packed[k]) for k in batch)
        for k, r in enumerate(rows):
            masked = set(np.flatnonzero(batch["labels"][k] != -100))
            assert masked, "every row has something to predict"
            starts = [j for j in range(len(r["input_ids"])) if j not in set(r["chinese_ref"])]
            for a, b in zip(starts, starts[1:] + [len(r["input_ids"])]):
                word = set(range(a, b))
                assert not (word & masked) or word <= masked, f"word {a}:{b} partly masked"
                whole_words += len(word) > 1 and word <= masked
    assert whole_words > 10  # multi-character words were masked, all characters at once
    other = collate([data[len(data) + i] for i in range(len(data))])  # next epoch: fresh masks
    assert not np.array_equal(other["labels"], collate([data[i] for i in range(len(data))])["labels"])


def test_bad_corpus_input_is_refused_with_a_clear_error(tmp_path, tiny_tokenizer_dir, capsys):
    kb, train = _corpus(tmp_path)
    (tmp_path / "gbk.txt").write_bytes("退货政策".encode("gb18030"))
    (tmp_path / "empty.md").write_text("#\n\n   \n", encoding="utf-8")
    (tmp_path / "table.csv").write_text("a,b\n", encoding="utf-8")
    (tmp_path / "nodata.json").write_text('{"version": "1"}', encoding="utf-8")
    (tmp_path / "void").mkdir()
    cases = {"missing.txt": "no such file", "void": "holds no .txt or .md", "table.csv": "unsupported file type",
             "gbk.txt": "not UTF-8", "empty.md": "holds no text", "nodata.json": "expected an object with a 'data' list"}
    for name, words in cases.items():
        with pytest.raises(DataError) as exc:
            read_corpus([str(kb), str(tmp_path / name)])
        assert str(exc.value).startswith(str(tmp_path / name)) and words in str(exc.value)
    # the dev file, a copy of it, or a text file holding one of its contexts: refused, file named
    dev = write_json(tmp_path / "dev.json", TINY)
    shutil.copy(dev, tmp_path / "copy.json")
    for corpus, words in ((dev, "a file this run reports scores on"), (tmp_path / "copy.json", "a copy of"),
                          (kb / "policy.txt", "2 of its texts are contexts of")):
        code = cli.main(["-q", "pretrain", str(corpus), "--exclude-files", str(dev), "--output-dir",
                         str(tmp_path / "out"), "--tokenizer", str(tiny_tokenizer_dir)])
        err = capsys.readouterr().err
        assert code == 2 and f"error: {corpus}: refused" in err and words in err and "pretrain.corpus" in err
    assert read_corpus([str(kb / "faq.md")], exclude=[str(dev)]).documents  # other text is fine


def test_pipeline_pretrains_then_finetunes_from_the_pretrained_folder(tmp_path):
    kb, train = _corpus(tmp_path)
    dev = _dev(tmp_path)
    doc = {"run_dir": str(tmp_path / "run"),
           "data": {"train_file": str(train), "dev_file": str(dev), "validation_share": 0},
           "pretrain": {"corpus": [str(kb), str(train)], "epochs": 40, "batch_size": 4, "learning_rate": 0.005,
                        "logging_steps": 5, "save_steps": 50},
           "finetune": {"arch": dict(TINY_ARCH), "max_seq_len": 64, "doc_stride": 24, "max_query_length": 16,
                        "epochs": 2, "batch_size": 4, "learning_rate": 0.001, "logging_steps": 2,
                        "eval_each_epoch": False, "cache_dir": str(tmp_path / "cache"), "progress": False}}
    cfg = pipeline.build_plan(doc)
    pre, ft = cfg.pretrain, cfg.finetune
    assert ft.model == str(Path(pre.output_dir) / "model") and not ft.tokenizer  # loads as a hub folder
    assert pre.tokenizer == str(tmp_path / "run" / "vocab") and cfg.vocab is not None
    assert pre.exclude_files == [str(dev)] and (pre.arch.num_layers, pre.arch.hidden_size, pre.max_seq_len) == (2, 32, 64)
    for stage in ("data", "vocab", "pretrain", "finetune"):
        results = pipeline.run(doc, only=stage)
    m = json.loads((Path(pre.output_dir) / "metrics.json").read_text(encoding="utf-8"))
    losses = [p["loss"] for p in m["loss_curve"]]
    assert len(losses) >= 4 and np.mean(losses[-2:]) < np.mean(losses[:2])  # the MLM loss falls
    assert m["probe_loss_after"] < m["probe_loss_before"]  # on the same masked sequences
    model = Path(pre.output_dir) / "model"
    assert {"config.json", "model_state.pdparams", "vocab.txt", "tokenizer_config.json"} <= {p.name for p in model.iterdir()}
    assert (model / "vocab.txt").read_bytes() == (tmp_path / "run" / "vocab" / "vocab.txt").read_bytes()
    teacher = tmp_path / "run" / "teacher"
    manifest = json.loads((teacher / "manifest.json").read_text(encoding="utf-8"))
    recorded = json.loads((Path(pre.output_dir) / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["inputs"]["model"]["sha256"] == recorded["outputs"]["model"]["sha256"]
    assert (teacher / "model" / "vocab.txt").read_bytes() == (model / "vocab.txt").read_bytes()
    assert results["finetune"]["params"] < m["params"]  # QA head instead of the MLM head, same encoder
    stamp = (Path(pre.output_dir) / "manifest.json").stat().st_mtime_ns
    pipeline.run(doc, only="pretrain")  # done: skipped, not trained again
    assert (Path(pre.output_dir) / "manifest.json").stat().st_mtime_ns == stamp
    # the dev file in the corpus is refused before anything trains
    bad = {**doc, "run_dir": str(tmp_path / "bad"), "pretrain": {**doc["pretrain"], "corpus": [str(dev)]}}
    with pytest.raises(DataError, match="refused"):
        pipeline.run(bad, only="pretrain")


KILLER = KILL_AT_STEP + r"""
import json
from paddleqa.core.config import from_dict
from paddleqa.stages import pretrain

cfg = from_dict(pretrain.PretrainConfig, json.loads(sys.argv[1]))
pretrain.run(cfg, resume=sys.argv[3] == "resume", callbacks=[KillAtStep(int(sys.argv[2]))])
"""


def test_kill_9_mid_run_and_resume_ends_as_an_uninterrupted_run(tmp_path, tiny_tokenizer_dir):
    kb, train = _corpus(tmp_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    runs = {}
    for name in ("straight", "killed"):  # dropout on: the resumed run must replay batches, masks, dropout
        values = {"corpus": [str(kb), str(train)], "output_dir": str(tmp_path / name), "cache_dir": str(tmp_path / "cache"),
                  "tokenizer": str(tiny_tokenizer_dir), "arch": dict(TINY_ARCH), "max_seq_len": 24, "epochs": 4,
                  "batch_size": 2, "logging_steps": 1, "save_steps": 6, "progress": False}
        runs[name] = json.dumps(values)
    run = [sys.executable, "-c", KILLER]
    subprocess.run(run + [runs["straight"], "0", "fresh"], env=env, cwd=REPO, check=True, capture_output=True)
    proc = subprocess.run(run + [runs["killed"], "9", "fresh"], env=env, cwd=REPO, capture_output=True)
    assert proc.returncode == -9  # really killed by SIGKILL mid-training
    killed = tmp_path / "killed"
    assert sorted(p.name for p in (killed / "checkpoints").iterdir()) == ["checkpoint-6"]
    assert not (killed / "model").exists()
    subprocess.run(run + [runs["killed"], "0", "resume"], env=env, cwd=REPO, check=True, capture_output=True)
    assert_resumed_as_straight(tmp_path / "straight", killed, 6)


def test_the_hybrid_pretrains_and_its_folder_loads_as_the_qa_model(tmp_path, tiny_tokenizer_dir):
    import paddle

    from paddleqa.core.config import from_dict
    from paddleqa.models.build import load_model
    from paddleqa.stages import pretrain

    kb, train = _corpus(tmp_path)
    arch = {**TINY_ARCH, "kind": "mobilenet", "conv_blocks": 1, "num_layers": 1, "dropout": 0.0}
    cfg = from_dict(pretrain.PretrainConfig, {
        "corpus": [str(kb), str(train)], "output_dir": str(tmp_path / "pre"), "cache_dir": str(tmp_path / "cache"),
        "tokenizer": str(tiny_tokenizer_dir), "arch": arch, "max_seq_len": 24, "epochs": 30, "batch_size": 4,
        "learning_rate": 0.005, "logging_steps": 5, "save_steps": 1000, "progress": False})
    m = pretrain.run(cfg)
    losses = [p["loss"] for p in m["loss_curve"]]
    assert len(losses) >= 4 and np.mean(losses[-2:]) < np.mean(losses[:2])  # the MLM loss falls
    assert m["probe_loss_after"] < m["probe_loss_before"]
    folder = tmp_path / "pre" / "model"
    assert json.loads((folder / "config.json").read_text(encoding="utf-8"))["architectures"] == ["MobileQAForMaskedLM"]
    qa = load_model(str(folder))  # hash-checked against pretrain's manifest, then loaded
    assert type(qa).__name__ == "MobileQAForQuestionAnswering"
    saved = paddle.load(str(folder / "model_state.pdparams"))
    encoder = {k: v for k, v in saved.items() if k.startswith("mobile.")}
    assert encoder and not any(k.startswith("classifier") for k in saved)
    mine = qa.state_dict()
    for k, v in encoder.items():  # the whole encoder arrives; the span head starts fresh
        np.testing.assert_array_equal(mine[k].numpy(), v.numpy(), err_msg=k)
    ids = paddle.to_tensor([[2, 5, 6, 7, 3]])
    start, end = qa(ids)[:2]
    assert start.shape == [1, 5] and end.shape == [1, 5]
