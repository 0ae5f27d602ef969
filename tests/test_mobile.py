"""The MobileNetV2-style student: trains with falling loss, distils, reloads, ignores padding."""
import json

import numpy as np
import paddle
import pytest

from paddleqa import pipeline
from paddleqa.core.config import ConfigError
from paddleqa.models.mobile import MobileQAConfig, MobileQAForQuestionAnswering
from paddleqa.models.build import load_model

CFG = dict(vocab_size=40, hidden_size=16, num_attention_heads=2, intermediate_size=32,
           max_position_embeddings=32, type_vocab_size=4, pad_token_id=0, hidden_dropout_prob=0.0,
           attention_probs_dropout_prob=0.0, conv_blocks=2, expand_ratio=2, kernel_size=3,
           num_transformer_layers=1)


def test_padding_does_not_change_the_logits_of_real_tokens():
    paddle.seed(0)
    model = MobileQAForQuestionAnswering(MobileQAConfig(**CFG))
    model.eval()
    ids = [1, 5, 6, 2, 7, 8, 9, 2]
    short = paddle.to_tensor([ids])
    padded = paddle.to_tensor([ids + [0, 0, 0, 0]])
    s1, _ = model(input_ids=short, token_type_ids=paddle.zeros_like(short))
    s2, _ = model(input_ids=padded, token_type_ids=paddle.zeros_like(padded))
    np.testing.assert_allclose(s1.numpy()[0], s2.numpy()[0, :8], atol=1e-5)


def test_mobile_trains_with_falling_loss_and_reloads(tmp_path):
    paddle.seed(0)
    model = MobileQAForQuestionAnswering(MobileQAConfig(**CFG))
    opt = paddle.optimizer.AdamW(learning_rate=3e-3, parameters=model.parameters())
    rng = np.random.default_rng(0)
    ids = paddle.to_tensor(rng.integers(3, 40, size=(8, 12)))
    types = paddle.zeros_like(ids)
    starts = paddle.to_tensor(rng.integers(1, 6, size=8))
    ends = starts + 2
    model.train()
    losses = []
    for _ in range(30):
        loss = model(input_ids=ids, token_type_ids=types, start_positions=starts, end_positions=ends)[0]
        loss.backward()
        opt.step()
        opt.clear_grad()
        losses.append(float(loss))
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])
    model.save_pretrained(str(tmp_path / "m"))
    again = load_model(str(tmp_path / "m"))
    assert type(again).__name__ == "MobileQAForQuestionAnswering"
    model.eval()
    again.eval()
    a = model(input_ids=ids, token_type_ids=types)[0].numpy()
    b = again(input_ids=ids, token_type_ids=types)[0].numpy()
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_mobile_student_distils_from_the_teacher(teacher_run, tmp_path):
    from paddleqa.models.flops import flops_per_query

    _, data, doc = teacher_run
    doc = json.loads(json.dumps(doc))
    doc["distill"] = {"output_dir": str(tmp_path / "d"), "epochs": 8, "batch_size": 2,
                      "learning_rate": 0.002, "save_steps": 100, "logging_steps": 1,
                      "hidden_weight": 0.5, "noise_prob": 0.5, "noise_std": 0.05,
                      "student": {"kind": "mobilenet", "conv_blocks": 2, "expand_ratio": 2,
                                  "kernel_size": 3, "num_layers": 1}}
    metrics = pipeline.run(doc, only="distill")["distill"]
    student = load_model(str(tmp_path / "d" / "model"))
    assert type(student).__name__ == "MobileQAForQuestionAnswering"
    assert student.config.num_hidden_layers == 3  # 2 conv blocks + 1 transformer layer
    assert metrics["flops_per_query"] == flops_per_query(student.config, metrics["flops_seq_len"])
    assert metrics["flops_per_query"] < metrics["teacher_flops_per_query"]
    losses = [h["loss"] for h in json.loads((tmp_path / "d" / "train_log.json").read_text()) if "loss" in h]
    assert np.mean(losses[-3:]) < np.mean(losses[:3])


def test_mobile_student_refuses_attention_loss(teacher_run, tmp_path):
    _, data, doc = teacher_run
    doc = json.loads(json.dumps(doc))
    doc["distill"] = {"attention_weight": 1.0, "student": {"kind": "mobilenet"}}
    with pytest.raises(ConfigError, match="set attention_weight to 0"):
        pipeline.build_plan(doc)


def test_factorised_embeddings_start_as_the_teachers_best_rank_k_approximation(teacher_run):
    """With the teacher's width, word table @ projection is the truncated SVD of the teacher's
    word table: its error is exactly the discarded singular values (Eckart-Young), below any
    other rank-k factorisation tried; the tables shrink by H/k."""
    from paddleqa.stages.distill import StudentConfig
    from paddleqa.models.students import build_mobile_student
    from paddleqa.models.flops import mobile_flops

    tmp, _, doc = teacher_run
    teacher = load_model(f"{doc['run_dir']}/teacher/model")
    H = teacher.config.hidden_size
    k = H // 4
    spec = StudentConfig(kind="mobilenet", conv_blocks=1, expand_ratio=2, kernel_size=3,
                         num_layers=1, embedding_size=k)
    student, _ = build_mobile_student(teacher, spec)
    w = teacher.ernie.embeddings.word_embeddings.weight.numpy().astype(np.float64)
    table = student.mobile.embeddings.word_embeddings.weight.numpy().astype(np.float64)
    proj = student.mobile.embeddings_project.weight.numpy().astype(np.float64)
    assert table.shape == (w.shape[0], k) and proj.shape == (k, H)
    sv = np.linalg.svd(w, compute_uv=False)
    err = np.linalg.norm(table @ proj - w)
    np.testing.assert_allclose(err, np.sqrt((sv[k:] ** 2).sum()), rtol=1e-4)
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(H, k)))  # another rank-k projection does worse
    assert err < np.linalg.norm(w @ q @ q.T - w)
    full, _ = build_mobile_student(teacher, StudentConfig(kind="mobilenet", conv_blocks=1,
                                                          expand_ratio=2, kernel_size=3, num_layers=1))
    from paddleqa.models.build import count_params

    small, big = count_params(student), count_params(full)
    assert small["embedding_params"] < big["embedding_params"] / 2
    assert small["non_embedding_params"] == big["non_embedding_params"]
    assert mobile_flops(student.config, 384) > mobile_flops(full.config, 384)  # + the projection
    # the factorised student runs, and ignores padding like the plain one
    student.eval()
    ids = paddle.to_tensor([[1, 5, 6, 2, 7, 8, 2]])
    s, _ = student(input_ids=ids, token_type_ids=paddle.zeros_like(ids))
    assert np.isfinite(s.numpy()).all()


def test_factorised_embeddings_are_for_the_mobile_student_only():
    from paddleqa.stages.distill import StudentConfig

    with pytest.raises(ValueError, match="embedding_size"):
        StudentConfig(kind="ernie", embedding_size=16)


def test_mobile_student_starts_from_a_hybrid_teachers_layers():
    """A hybrid (mobile) teacher: the student's conv block and attention layer copy the teacher
    layers they map to (conv to conv, attention to the top attention layer), its factorised
    embeddings start from the teacher's by SVD, and a layer of the other kind is not copied."""
    from paddleqa.models.students import build_mobile_student
    from paddleqa.stages.distill import StudentConfig

    paddle.seed(1)
    teacher = MobileQAForQuestionAnswering(MobileQAConfig(**{**CFG, "num_transformer_layers": 2}))
    spec = StudentConfig(kind="mobilenet", conv_blocks=1, expand_ratio=2, kernel_size=3,
                         num_layers=1, embedding_size=4)
    student, layers = build_mobile_student(teacher, spec)
    assert layers == [2, 4]  # student conv -> teacher conv block 2, attention -> the top layer
    t, s = teacher.state_dict(), student.state_dict()
    np.testing.assert_array_equal(s["mobile.blocks.0.expand.weight"].numpy(),
                                  t["mobile.blocks.1.expand.weight"].numpy())
    np.testing.assert_array_equal(s["mobile.layers.0.linear1.weight"].numpy(),
                                  t["mobile.layers.1.linear1.weight"].numpy())
    assert not np.array_equal(s["mobile.layers.0.linear1.weight"].numpy(),
                              t["mobile.layers.0.linear1.weight"].numpy())
    w = t["mobile.embeddings.word_embeddings.weight"].numpy().astype(np.float64)
    approx = (s["mobile.embeddings.word_embeddings.weight"].numpy()
              @ s["mobile.embeddings_project.weight"].numpy())
    sv = np.linalg.svd(w, compute_uv=False)
    np.testing.assert_allclose(np.linalg.norm(approx - w), np.sqrt((sv[4:] ** 2).sum()), rtol=1e-4)
    # a student whose first layer maps onto a teacher attention layer keeps a random conv block
    deep = MobileQAForQuestionAnswering(MobileQAConfig(**{**CFG, "conv_blocks": 1,
                                                          "num_transformer_layers": 3}))
    student2, layers2 = build_mobile_student(deep, spec)
    assert layers2 == [2, 4]
    s2, d = student2.state_dict(), deep.state_dict()
    assert s2["mobile.blocks.0.expand.weight"].shape == d["mobile.blocks.0.expand.weight"].shape
    assert not np.array_equal(s2["mobile.blocks.0.expand.weight"].numpy(),
                              d["mobile.blocks.0.expand.weight"].numpy())
    np.testing.assert_array_equal(s2["mobile.layers.0.linear1.weight"].numpy(),
                                  d["mobile.layers.2.linear1.weight"].numpy())
