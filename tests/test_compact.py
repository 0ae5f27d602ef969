"""The compact (per-layer heads/FFN) ERNIE: exact conversion, exact slicing, save/load."""
import numpy as np
import paddle
import pytest

from paddleqa.models.flops import flops_per_query
from paddleqa.models.compact import from_ernie, select
from paddleqa.models.build import ArchConfig, build_from_scratch, count_params, load_model

ARCH = ArchConfig(num_layers=3, hidden_size=32, num_heads=4, intermediate_size=48,
                  max_position_embeddings=64, dropout=0.0)


@pytest.fixture(scope="module")
def ernie():
    paddle.seed(0)
    model = build_from_scratch(ARCH, vocab_size=60)
    model.eval()
    return model


IDS = paddle.to_tensor([[1, 8, 9, 2, 10, 11, 12, 13, 2, 0, 0], [1, 14, 2, 15, 16, 17, 18, 19, 20, 21, 2]])
TYPES = paddle.to_tensor([[0, 0, 0, 0, 1, 2, 1, 1, 1, 0, 0], [0, 3, 0, 1, 1, 1, 2, 1, 1, 1, 1]])


def _logits(model):
    model.eval()
    with paddle.no_grad():
        s, e = model(input_ids=IDS, token_type_ids=TYPES)
    real = (IDS != 0).numpy()
    return s.numpy()[real], e.numpy()[real]


def test_conversion_keeps_every_output(ernie):
    compact = from_ernie(ernie)
    for a, b in zip(_logits(ernie), _logits(compact)):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_keeping_all_heads_and_neurons_in_any_order_keeps_outputs(ernie):
    compact = from_ernie(ernie)
    rng = np.random.default_rng(0)
    perm = select(compact, [0, 1, 2], [rng.permutation(4).tolist() for _ in range(3)],
                  [rng.permutation(48).tolist() for _ in range(3)])
    for a, b in zip(_logits(compact), _logits(perm)):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_pruned_model_is_smaller_and_reloads_identically(ernie, tmp_path):
    compact = from_ernie(ernie)
    small = select(compact, [0, 2], [[3, 1], [0, 1, 2]], [list(range(20)), list(range(30, 40))])
    assert small.config.layer_heads == [2, 3] and small.config.layer_ffn == [20, 10]
    assert count_params(small)["non_embedding_params"] < count_params(compact)["non_embedding_params"]
    assert flops_per_query(small.config, 384) < flops_per_query(compact.config, 384)
    assert flops_per_query(compact.config, 384) == flops_per_query(ernie.config, 384)
    small.save_pretrained(str(tmp_path / "m"))
    again = load_model(str(tmp_path / "m"))
    assert type(again).__name__ == "CompactErnieForQuestionAnswering"
    for a, b in zip(_logits(small), _logits(again)):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_head_mask_zero_equals_removing_the_head(ernie):
    compact = from_ernie(ernie)
    mask = paddle.ones([3, 4])
    mask[1, 2] = 0.0
    with paddle.no_grad():
        s_masked, _ = compact(input_ids=IDS, token_type_ids=TYPES, head_mask=mask)
    removed = select(compact, [0, 1, 2], [[0, 1, 2, 3], [0, 1, 3], [0, 1, 2, 3]], [list(range(48))] * 3)
    s_removed, _ = _logits(removed)
    np.testing.assert_allclose(s_masked.numpy()[(IDS != 0).numpy()], s_removed, atol=1e-5)


def test_flops_count_matches_a_hand_computation():
    from paddleqa.models.compact import CompactErnieConfig

    cfg = CompactErnieConfig(hidden_size=8, num_attention_heads=2, num_hidden_layers=1,
                             intermediate_size=16, layer_heads=[2], layer_ffn=[16], head_dim=4)
    L, H, inner, F = 10, 8, 8, 16
    macs = 3 * L * H * inner + 2 * L * L * inner + L * inner * H + 2 * L * H * F + 2 * L * H
    assert flops_per_query(cfg, L) == 2 * macs
