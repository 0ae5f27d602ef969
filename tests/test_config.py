"""Configs: strict keys, typed values, overrides, round-trips."""
import pytest

from paddleqa.core.config import expand_env, from_dict, merge, parse_overrides, read_yaml, to_dict
from paddleqa.core.io import write_yaml
from paddleqa.core.errors import ConfigError
from paddleqa.stages.finetune import FinetuneConfig

BASE = {"train_file": "t.json", "output_dir": "out", "tokenizer": "vocab"}


def test_round_trip_through_yaml(tmp_path):
    cfg = from_dict(FinetuneConfig, {**BASE, "epochs": "3", "arch": {"num_layers": 2}})
    assert cfg.epochs == 3.0 and cfg.arch.num_layers == 2 and cfg.arch.hidden_size == 256
    write_yaml(to_dict(cfg), tmp_path / "c.yaml")
    again = from_dict(FinetuneConfig, read_yaml(tmp_path / "c.yaml"))
    assert again == cfg


def test_unknown_keys_list_the_valid_ones():
    with pytest.raises(ConfigError, match=r"unknown key\(s\) finetune.epoch .*valid keys: .*epochs"):
        from_dict(FinetuneConfig, {**BASE, "epoch": 3}, where="finetune")
    with pytest.raises(ConfigError, match=r"arch.layers .*num_layers"):
        from_dict(FinetuneConfig, {**BASE, "arch": {"layers": 2}})


def test_bad_values_are_rejected_with_the_field_name():
    with pytest.raises(ConfigError, match="batch_size must be an integer"):
        from_dict(FinetuneConfig, {**BASE, "batch_size": "many"})
    with pytest.raises(ConfigError, match="num_heads .* must divide"):
        from_dict(FinetuneConfig, {**BASE, "arch": {"hidden_size": 30, "num_heads": 4}})
    with pytest.raises(ConfigError, match="needs a tokenizer"):
        from_dict(FinetuneConfig, {"train_file": "t", "output_dir": "o"})
    with pytest.raises(ConfigError, match="doc_stride"):
        from_dict(FinetuneConfig, {**BASE, "max_seq_len": 128, "doc_stride": 200})


def test_env_expansion(monkeypatch):
    monkeypatch.setenv("PQA_X", "/data")
    assert expand_env("${PQA_X}/a.json") == "/data/a.json"
    monkeypatch.delenv("PQA_X")
    assert expand_env("${PQA_X:-../shared}/a.json") == "../shared/a.json"
    with pytest.raises(ConfigError, match="PQA_X is not set"):
        expand_env("${PQA_X}/a.json")


def test_overrides_merge_into_sections():
    over = parse_overrides(["finetune.epochs=3", "finetune.arch.num_layers=2", "run_dir=x"])
    assert over == {"finetune": {"epochs": 3, "arch": {"num_layers": 2}}, "run_dir": "x"}
    doc = merge({"finetune": {"epochs": 1, "batch_size": 8}}, over)
    assert doc["finetune"] == {"epochs": 3, "batch_size": 8, "arch": {"num_layers": 2}}
    with pytest.raises(ConfigError, match="SECTION.KEY=VALUE"):
        parse_overrides(["nonsense"])


def test_shipped_configs_resolve(monkeypatch):
    from pathlib import Path

    from paddleqa.pipeline import build_plan

    root = Path(__file__).resolve().parent.parent
    for path in sorted((root / "configs").glob("*.yaml")):
        cfg = build_plan(read_yaml(path))
        assert cfg.finetune.output_dir.startswith(str(cfg.run_dir))


def test_pipeline_rejects_unknown_sections():
    from paddleqa.pipeline import build_plan

    with pytest.raises(ConfigError, match="valid keys: run_dir, data, augment, vocab, pretrain, finetune, evaluate"):
        build_plan({"run_dir": "r", "data": {"train_file": "a", "dev_file": "b"}, "distil": {}})


def test_int8_tables_stay_with_the_fp32_export():
    """export.embeddings: int8 re-traces the model, so the quantize stage's int8 graph (exported
    from a given inference model) keeps its tables: the plan builds, and only export has them;
    the teacher's latency and size baseline stays all fp32."""
    from paddleqa.pipeline import build_plan

    doc = {"run_dir": "r", "data": {"train_file": "a", "dev_file": "b"},
           "distill": {}, "quantize": {"method": "ptq"}, "bench": {},
           "export": {"embeddings": "int8", "precisions": ["fp32", "int8"]}}
    cfg = build_plan(doc)
    assert cfg.export.embeddings == "int8" and cfg.export_int8.embeddings == "fp32"
    assert cfg.export_int8.inference_model
    assert cfg.export_teacher is not None and cfg.export_teacher.embeddings == "fp32"
