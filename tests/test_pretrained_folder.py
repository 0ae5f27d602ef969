"""The path of a user with `ernie-3.0-medium-zh` on disk: a local pretrained folder (as
save_pretrained and a hub download leave it: config, weights, tokenizer, no paddleqa manifest)
through finetune.model, then distill, prune, int8 PTQ and export, in one `paddleqa run`."""
from __future__ import annotations

import json

from conftest import write_json, TINY
from paddleqa import pipeline


def _pretrained_folder(tmp_path, tiny_tokenizer_dir):
    """A tiny ERNIE encoder with an MLM head, saved the way a hub download looks."""
    from paddlenlp.transformers import ErnieConfig, ErnieForMaskedLM

    from paddleqa.text.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(str(tiny_tokenizer_dir))
    folder = tmp_path / "ernie-tiny-zh"
    model = ErnieForMaskedLM(ErnieConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=128, type_vocab_size=4,
        pad_token_id=tokenizer.pad_token_id or 0))
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder


def test_a_local_pretrained_folder_goes_through_the_whole_chain(tmp_path, tiny_tokenizer_dir):
    folder = _pretrained_folder(tmp_path, tiny_tokenizer_dir)
    assert not (folder / "manifest.json").exists()  # not ours: loaded through the pickle check only
    data = write_json(tmp_path / "tiny.json", TINY)
    doc = {
        "run_dir": str(tmp_path / "run"),
        "data": {"train_file": str(data), "dev_file": str(data), "validation_share": 0},
        "finetune": {"model": str(folder), "max_seq_len": 64, "doc_stride": 24, "max_query_length": 16,
                     "epochs": 1, "batch_size": 4, "save_steps": 100, "logging_steps": 2,
                     "cache_dir": str(tmp_path / "cache"), "progress": False},
        "distill": {"student": {"num_layers": 1}, "max_steps": 2, "eval_each_epoch": False},
        "prune": {"width_mult": 0.5, "max_steps": 2, "importance_windows": 8, "eval_each_epoch": False},
        "quantize": {"method": "ptq", "calib_windows": 8},
        "export": {"targets": ["arm", "x86"], "precisions": ["fp32"]},
    }
    results = pipeline.run(doc)
    assert "vocab" not in results  # the folder's own tokenizer is used
    teacher = json.loads((tmp_path / "run" / "teacher" / "model" / "config.json").read_text(encoding="utf-8"))
    assert teacher["num_hidden_layers"] == 2 and teacher["vocab_size"] > 0
    assert results["distill"]["params"] < results["finetune"]["params"]
    assert results["prune"]["pruned_params"] < results["finetune"]["params"]
    assert results["quantize"]["method"] == "ptq" and "quantized_f1" in results["quantize"]
    assert set(results["export"]["bundles"]) == {"arm-fp32", "x86-fp32"}
    assert set(results["export_int8"]["bundles"]) >= {"arm-int8"}
    assert (tmp_path / "run" / "export" / "x86-fp32" / "model.nb").stat().st_size > 0
