"""Offline tokenizer building and clear errors for unreachable hub names."""
import json

import pytest

from conftest import CONTEXT_2
from paddleqa import cli
from paddleqa.core.errors import PaddleQAError


def test_built_vocab_loads_with_auto_tokenizer(tiny_tokenizer_dir):
    from paddlenlp.transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_tokenizer_dir))
    ids = tok(CONTEXT_2)["input_ids"]
    assert tok.unk_token_id not in ids  # every character of the data is in the vocab
    # unseen English words and digits are still spelled, not [UNK]
    assert tok.unk_token_id not in tok("Zebra 2024 xyz")["input_ids"]
    metrics = json.loads((tiny_tokenizer_dir / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["unk_rate_on_sample"] == 0.0 and metrics["vocab_size"] == len(tok)


def test_vocab_build_cli(tmp_path, tiny_json, capsys):
    assert cli.main(["-q", "vocab", "build", str(tiny_json), "--out", str(tmp_path / "v")]) == 0
    assert json.loads(capsys.readouterr().out)["vocab_size"] > 100
    assert (tmp_path / "v" / "vocab.txt").exists() and (tmp_path / "v" / "manifest.json").exists()


def test_unreachable_hub_name_fails_fast_with_advice():
    from paddleqa.text.tokenizer import load_tokenizer

    with pytest.raises(PaddleQAError, match="pass a local directory"):
        load_tokenizer("ernie-3.0-medium-zh")


def test_unreachable_model_name(capsys, tmp_path, tiny_json):
    from paddleqa.models.build import load_model

    with pytest.raises(PaddleQAError, match="Pass a local model folder"):
        load_model("no-such-model-zh")
    (tmp_path / "empty").mkdir()
    code = cli.main(["-q", "evaluate", str(tmp_path / "empty"), str(tiny_json), "--out", str(tmp_path / "o")])
    assert code == 2 and "holds no model" in capsys.readouterr().err
    code = cli.main(["-q", "evaluate", "no-such-model-zh", str(tiny_json), "--out", str(tmp_path / "o")])
    assert code == 2 and "Pass a local model folder" in capsys.readouterr().err


def test_missing_model_folder_is_named(tmp_path, tiny_json, capsys):
    code = cli.main(["-q", "evaluate", str(tmp_path / "nope"), str(tiny_json), "--out", str(tmp_path / "o")])
    assert code == 2 and "nope does not exist" in capsys.readouterr().err


def test_a_folder_without_vocab_txt_names_the_missing_file(tiny_tokenizer_dir, tmp_path):
    import shutil

    import pytest

    from paddleqa.core.errors import PaddleQAError
    from paddleqa.text.tokenizer import load_tokenizer

    folder = tmp_path / "tok"
    shutil.copytree(tiny_tokenizer_dir, folder)
    (folder / "vocab.txt").unlink()
    with pytest.raises(PaddleQAError, match=r"tok/vocab.txt is missing"):
        load_tokenizer(str(folder))
