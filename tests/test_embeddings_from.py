"""Word embeddings started from a trained table: in a from-scratch teacher, the pre-trained
encoder (tied MLM decoder), a factorised mobile student, and through a pipeline's records."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import TINY_ARCH, tiny_pipeline_doc
from paddleqa import cli
from paddleqa.core.errors import ConfigError, DataError
from paddleqa.models.build import ArchConfig, build_from_scratch, build_mlm_from_scratch
from paddleqa.models.tables import seed_embeddings
from paddleqa.text.features import TRAINING_INFO
from paddleqa.text.tokenizer import load_tokenizer, token_counts, vocab_tokens


def _table(path: Path, tokens, width: int, seed: int = 0) -> tuple[Path, dict[str, np.ndarray]]:
    """A word2vec text table over ``tokens``; every value > 0.1 in size (trained-looking rows)."""
    rng = np.random.default_rng(seed)
    rows = rng.uniform(0.2, 1.0, (len(tokens), width)) * rng.choice([-1, 1], (len(tokens), width))
    lines = [f"{len(tokens)} {width}"] + [t + " " + " ".join(f"{x:.6f}" for x in r)
                                          for t, r in zip(tokens, rows)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path, {t: np.asarray([float(f"{x:.6f}") for x in r]) for t, r in zip(tokens, rows)}


def _chars(tokenizer) -> list[str]:
    return [t for t in vocab_tokens(tokenizer) if not t.startswith("[") and len(t) == 1][:20]


def test_covered_rows_equal_the_table_and_uncovered_rows_are_filled(tmp_path, tiny_tokenizer_dir):
    tok = load_tokenizer(str(tiny_tokenizer_dir))
    chars = _chars(tok)
    path, rows = _table(tmp_path / "t.txt", chars[:12], TINY_ARCH["hidden_size"])
    model = build_from_scratch(ArchConfig(**TINY_ARCH), len(tok), tok.pad_token_id)
    ids = np.asarray([tok.convert_tokens_to_ids(chars[:15])])
    report = seed_embeddings(model, str(path), vocab_tokens(tok), counts=token_counts(tok, ids),
                             std="table")
    weight = model.get_input_embeddings().weight.numpy()
    for t in chars[:12]:
        np.testing.assert_allclose(weight[tok.convert_tokens_to_ids(t)], rows[t], rtol=1e-5)
    pieces = [t.removeprefix("##") for t in vocab_tokens(tok)]
    assert report["coverage"]["covered"] == sum(p in chars[:12] for p in pieces)  # ##x as x
    assert report["projection"] == "identity"
    assert report["coverage"]["token_share"] == pytest.approx(12 / 15)
    assert not np.any(weight[tok.pad_token_id])  # the pad row is zero
    assert np.all(np.abs(weight[tok.convert_tokens_to_ids(chars[13])]) > 0)  # filled, not zero
    assert report["sha256"][str(path)]


def test_a_narrower_table_is_projected_keeping_distances(tmp_path, tiny_tokenizer_dir):
    """A 8-wide table into 32-wide embeddings: a map with orthonormal rows keeps the table's
    geometry (the tied masked-LM decoder of a pre-training model starts from it too)."""
    tok = load_tokenizer(str(tiny_tokenizer_dir))
    chars = _chars(tok)[:10]
    path, rows = _table(tmp_path / "t.txt", chars, 8)
    model = build_mlm_from_scratch(ArchConfig(**TINY_ARCH), len(tok), tok.pad_token_id)
    report = seed_embeddings(model, str(path), vocab_tokens(tok), std="table")
    assert report["projection"] == "random-orthogonal" and report["width"] == 32
    weight = model.get_input_embeddings().weight.numpy()
    got = np.stack([weight[tok.convert_tokens_to_ids(t)] for t in chars])
    want = np.stack([rows[t] for t in chars])
    np.testing.assert_allclose(got @ got.T, want @ want.T, rtol=1e-4, atol=1e-4)
    decoder = [p for n, p in model.named_parameters() if "word_embeddings" in n]
    assert len(decoder) == 1  # one parameter: the decoder is tied to it, no second copy


def test_a_factorised_mobile_student_starts_from_the_table(tmp_path, teacher_run):
    from paddleqa.models.build import load_model
    from paddleqa.models.students import build_mobile_student
    from paddleqa.stages.distill import StudentConfig

    tmp, _, _ = teacher_run
    teacher_dir = tmp / "run" / "teacher" / "model"
    tok = load_tokenizer(str(teacher_dir))
    chars = _chars(tok)
    path, rows = _table(tmp_path / "t.txt", chars, 16)
    spec = StudentConfig(kind="mobilenet", embedding_size=16, conv_blocks=1, embeddings_from=str(path),
                         embeddings_std="table")
    student, _ = build_mobile_student(load_model(str(teacher_dir)), spec)
    seed_embeddings(student, str(path), vocab_tokens(tok), std=spec.embeddings_std)
    weight = student.get_input_embeddings().weight.numpy()
    assert weight.shape[1] == 16
    np.testing.assert_allclose(weight[tok.convert_tokens_to_ids(chars[0])], rows[chars[0]], rtol=1e-5)


def test_bad_tables_and_settings_are_clear_errors(tmp_path, tiny_tokenizer_dir):
    tok = load_tokenizer(str(tiny_tokenizer_dir))
    model = build_from_scratch(ArchConfig(**TINY_ARCH), len(tok), tok.pad_token_id)
    bad = tmp_path / "bad.txt"
    bad.write_text("3 4\n中 0.1 0.2\n", encoding="utf-8")
    with pytest.raises(DataError, match="bad.txt"):
        seed_embeddings(model, str(bad), vocab_tokens(tok))
    with pytest.raises(ConfigError, match="jieba-lac"):  # the error lists the registered names
        seed_embeddings(model, "no-such-table", vocab_tokens(tok))
    with pytest.raises(ValueError, match="embeddings_std"):
        ArchConfig(embeddings_std="big")


def test_a_pipeline_records_the_table_and_redoes_the_teacher_when_it_changes(
        tmp_path, tiny_json, tiny_tokenizer_dir, capsys):
    tok = load_tokenizer(str(tiny_tokenizer_dir))
    path, _ = _table(tmp_path / "table.txt", _chars(tok), 32)
    doc = tiny_pipeline_doc(tmp_path, tiny_json, tiny_json, epochs=1)
    doc["finetune"]["arch"]["embeddings_from"] = str(path)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    assert cli.main(["-q", "run", str(cfg), "--only", "vocab"]) == 0
    assert cli.main(["-q", "run", str(cfg), "--only", "finetune"]) == 0
    teacher = tmp_path / "run" / "teacher"
    manifest = json.loads((teacher / "manifest.json").read_text(encoding="utf-8"))
    table = manifest["metrics"]["embeddings_from"]
    assert table["source"] == "table.txt" and 0 < table["coverage"]["token_share"] <= 1
    assert manifest["inputs"]["embeddings_from"]["sha256"] == table["sha256"][str(path)]
    info = json.loads((teacher / "model" / TRAINING_INFO).read_text(encoding="utf-8"))
    assert info["embeddings_from"]["source"] == "table.txt"
    stamp = (teacher / "manifest.json").stat().st_mtime_ns
    assert cli.main(["-q", "run", str(cfg), "--only", "finetune"]) == 0  # up to date: skipped
    assert (teacher / "manifest.json").stat().st_mtime_ns == stamp
    _table(path, _chars(tok), 32, seed=1)  # the same file, other vectors: trained afresh
    assert cli.main(["-q", "run", str(cfg), "--only", "finetune"]) == 0
    assert (teacher / "manifest.json").stat().st_mtime_ns != stamp
    capsys.readouterr()


@pytest.mark.parametrize("objective", ["mlm", "electra"])
def test_pretraining_starts_from_the_table_and_records_it(tmp_path, tiny_tokenizer_dir, tiny_json,
                                                          objective):
    """Zero steps of pre-training: the saved encoder's embeddings are the table's rows (under
    ELECTRA the discriminator's, which the generator shares), and the record names the table."""
    from paddleqa.core.config import from_dict
    import paddle

    from paddleqa.core.safeload import verify_model_folder
    from paddleqa.stages import pretrain

    tok = load_tokenizer(str(tiny_tokenizer_dir))
    chars = _chars(tok)
    path, rows = _table(tmp_path / "t.txt", chars, TINY_ARCH["hidden_size"])
    cfg = from_dict(pretrain.PretrainConfig, {
        "corpus": [str(tiny_json)], "output_dir": str(tmp_path / "pre"), "tokenizer": str(tiny_tokenizer_dir),
        "cache_dir": str(tmp_path / "cache"), "max_seq_len": 24, "objective": objective,
        "arch": {**TINY_ARCH, "embeddings_from": str(path), "embeddings_std": "table"},
        "max_steps": 1, "learning_rate": 1e-12, "batch_size": 2, "progress": False})
    metrics = pretrain.run(cfg)
    assert metrics["embeddings_from"]["source"] == "t.txt"
    manifest = json.loads((tmp_path / "pre" / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["inputs"]["embeddings_from"]["sha256"] == metrics["embeddings_from"]["sha256"][str(path)]
    verify_model_folder(tmp_path / "pre" / "model")  # ours: hashes match, arrays only
    state = paddle.load(str(tmp_path / "pre" / "model" / "model_state.pdparams"))
    (name,) = [k for k in state if k.endswith("word_embeddings.weight")]
    row = state[name].numpy()[tok.convert_tokens_to_ids(chars[0])]
    np.testing.assert_allclose(row, rows[chars[0]], atol=1e-4)  # one step at lr 1e-12
