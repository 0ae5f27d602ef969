"""`paddleqa cache list/clean`: every cache the stages write is listed with its size and last
use, clean removes only those files (and none in use), and a removed cache is rebuilt."""
import json
import os
import time

import numpy as np
import pytest

from paddleqa.cli import main
from paddleqa.models.teachercache import open_cache
from paddleqa.runtime import caches
from paddleqa.text.dataset import load_examples
from paddleqa.text.features import FeatureParams, cached_features

PARAMS = FeatureParams(max_seq_len=48, doc_stride=16, max_query_length=16)


@pytest.fixture
def filled(tmp_path, tiny_json, tiny_tokenizer_dir):
    """A cache folder as the stages leave it: features, a teacher cache with 2 of 5 windows
    cached (still open), and a file that is not ours."""
    from paddleqa.text.tokenizer import load_tokenizer

    root = tmp_path / "cache"
    examples, _ = load_examples(tiny_json)
    cached_features(examples, load_tokenizer(str(tiny_tokenizer_dir)), PARAMS, train=True,
                    cache_dir=str(root), progress=False)
    teacher = tmp_path / "teacher"
    teacher.mkdir()
    (teacher / "model_state.pdparams").write_bytes(b"weights")
    rng = np.random.RandomState(0)
    feats = {"input_ids": rng.randint(1, 20, (5, 8)), "token_type_ids": np.zeros((5, 8), int),
             "length": np.full(5, 8)}
    cache = open_cache(root / "teacher-outputs", teacher, feats, [1], 4)
    z = np.ones((2, 8), np.float32)
    cache.put(np.array([0, 3]), np.array([8, 8]), z, z, {1: np.ones((2, 8, 4), np.float32)})
    (root / "notes.txt").write_text("mine")
    return root, cache


def _cli(capsys, *argv):
    assert main(list(argv)) == 0
    return json.loads(capsys.readouterr().out)


def test_list_names_every_cache_with_its_size_and_fill(filled, capsys):
    root, _ = filled
    out = _cli(capsys, "cache", "list", "--cache-dir", str(root))
    kinds = sorted(e["kind"] for e in out["entries"])
    assert kinds == ["features", "teacher-outputs"]  # notes.txt is not a cache entry
    teacher = next(e for e in out["entries"] if e["kind"] == "teacher-outputs")
    assert (teacher["windows"], teacher["cached_windows"]) == (5, 2)
    assert all(e["disk_bytes"] > 0 for e in out["entries"])
    assert out["total_bytes"] == sum(e["disk_bytes"] for e in out["entries"])


def test_clean_keeps_what_is_in_use_and_what_is_not_ours(filled, capsys):
    root, cache = filled
    out = _cli(capsys, "cache", "clean", "--cache-dir", str(root))
    assert out["in_use"] == [str(cache.folder)] and cache.folder.exists()
    assert len(out["removed"]) == 1 and not list(root.glob("train-*.npz"))
    assert (root / "notes.txt").read_text() == "mine"
    cache.close()
    out = _cli(capsys, "cache", "clean", "--cache-dir", str(root))
    assert out["removed"] == [str(cache.folder)] and not cache.folder.exists()
    assert (root / "notes.txt").exists()


def test_dry_run_kind_and_age_filters_remove_nothing_they_should_not(filled, capsys):
    root, cache = filled
    cache.close()
    before = sorted(p for p in root.rglob("*") if p.is_file())
    out = _cli(capsys, "cache", "clean", "--cache-dir", str(root), "--dry-run")
    assert len(out["removed"]) == 2 and out["freed_bytes"] > 0
    out = _cli(capsys, "cache", "clean", "--cache-dir", str(root), "--older-than", "1")
    assert out["removed"] == []  # everything was used just now
    assert sorted(p for p in root.rglob("*") if p.is_file()) == before
    old = time.time() - 3 * 86400
    feature_file = next(root.glob("train-*.npz"))
    os.utime(feature_file, (old, old))
    out = _cli(capsys, "cache", "clean", "--cache-dir", str(root), "--older-than", "2",
               "--kind", "features")
    assert out["removed"] == [str(feature_file)] and cache.folder.exists()


def test_a_cache_hit_counts_as_a_use(tmp_path, tiny_json, tiny_tokenizer_dir):
    from paddleqa.text.tokenizer import load_tokenizer

    examples, _ = load_examples(tiny_json)
    tok = load_tokenizer(str(tiny_tokenizer_dir))
    cached_features(examples, tok, PARAMS, train=False, cache_dir=str(tmp_path), progress=False)
    path = next(tmp_path.glob("eval-*.npz"))
    os.utime(path, (1e9, 1e9))
    cached_features(examples, tok, PARAMS, train=False, cache_dir=str(tmp_path), progress=False)
    assert time.time() - caches.entries(tmp_path)[0].last_used < 3600


def test_clean_rejects_an_unknown_kind(tmp_path):
    with pytest.raises(ValueError, match="valid"):
        caches.clean(tmp_path, kinds=("weights",))
