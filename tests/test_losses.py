"""Distillation losses: zero exactly when student = teacher, padding ignored, clear registry errors."""
import numpy as np
import paddle
import pytest

from paddleqa.models import losses


def _logits(seed, shape=(3, 7)):
    return paddle.to_tensor(np.random.default_rng(seed).normal(size=shape).astype("float32") * 3)


MASK = paddle.to_tensor(np.array([[1] * 7, [1] * 5 + [0] * 2, [1] * 3 + [0] * 4], dtype="int64"))


@pytest.mark.parametrize("name", list(losses.PREDICTION_LOSSES))
@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_prediction_loss_is_zero_iff_student_equals_teacher(name, temperature):
    fn = losses.PREDICTION_LOSSES[name]
    t = (_logits(0), _logits(1))
    same = fn(t, t, MASK, temperature=temperature)
    assert abs(float(same)) < 1e-6
    other = fn((_logits(2), _logits(3)), t, MASK, temperature=temperature)
    assert float(other) > 1e-3


def test_padding_logits_do_not_matter():
    t, s = (_logits(0), _logits(1)), (_logits(2), _logits(3))
    noisy = tuple(x + paddle.to_tensor((1 - MASK.numpy()) * 50.0, dtype="float32") for x in s)
    for fn in losses.PREDICTION_LOSSES.values():
        assert np.isclose(float(fn(s, t, MASK, temperature=2.0)),
                          float(fn(noisy, t, MASK, temperature=2.0)), rtol=1e-5)


def test_span_kd_matches_a_numpy_kl_with_t_squared():
    t, s, T = (_logits(4),), (_logits(5),), 3.0
    got = float(losses.span_kd(s, t, MASK, temperature=T))
    want = []
    for row in range(3):
        n = int(MASK.numpy()[row].sum())
        pt = np.exp(t[0].numpy()[row, :n] / T); pt /= pt.sum()
        ps = np.exp(s[0].numpy()[row, :n] / T); ps /= ps.sum()
        want.append((pt * np.log(pt / ps)).sum())
    assert np.isclose(got, np.mean(want) * T * T, rtol=1e-4)


def test_span_ce_is_the_gold_cross_entropy_on_real_tokens():
    s, e = _logits(6), _logits(7)
    sp, ep = paddle.to_tensor([3, 4, 0]), paddle.to_tensor([5, 4, 2])
    got = float(losses.span_ce(s, e, sp, ep, MASK))
    want = []
    for logits, pos in ((s, sp), (e, ep)):
        for row in range(3):
            n = int(MASK.numpy()[row].sum())
            z = logits.numpy()[row, :n]
            want.append(np.log(np.exp(z).sum()) - z[int(pos.numpy()[row])])
    assert np.isclose(got, np.mean(want), rtol=1e-4)


def test_intermediate_losses_zero_for_identical_states_and_handle_widths_and_heads():
    rng = np.random.default_rng(0)
    hs = [paddle.to_tensor(rng.normal(size=(3, 7, 8)).astype("float32")) for _ in range(3)]
    assert float(losses.hidden_mse(hs, hs, [(0, 0), (2, 2)], MASK)) == 0.0
    assert float(losses.hidden_mse(hs, hs, [(1, 2)], MASK)) > 0
    narrow = [paddle.to_tensor(rng.normal(size=(3, 7, 4)).astype("float32")) for _ in range(2)]
    proj = [paddle.nn.Linear(4, 8), paddle.nn.Linear(4, 8)]
    assert float(losses.hidden_mse(narrow, hs, [(0, 0), (1, 2)], MASK, proj)) > 0
    attn = [paddle.nn.functional.softmax(paddle.to_tensor(rng.normal(size=(3, 4, 7, 7)).astype("float32")))
            for _ in range(2)]
    assert float(losses.attention_mse(attn, attn, [(1, 1), (2, 2)], MASK)) == 0.0
    two_heads = [a[:, :2] for a in attn]  # fewer heads: compared after averaging over heads
    assert float(losses.attention_mse(two_heads, attn, [(1, 2)], MASK)) > 0


def test_unknown_loss_names_list_the_valid_ones():
    with pytest.raises(ValueError, match="valid: span_kd, span_mse"):
        losses.lookup(losses.PREDICTION_LOSSES, "kl", "prediction loss")
