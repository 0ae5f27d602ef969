"""autocompress: the space holds only real plans, a budget keeps only plans inside it, an
impossible budget names the closest plan, and on a tiny teacher the search times, trains (with a
labels-only twin of the same steps) and writes a plan YAML that reproduces the chosen student."""
import json

import pytest

from paddleqa import cli, pipeline
from paddleqa.autocompress.budget import inside
from paddleqa.autocompress.search import AutocompressConfig, plan_document, shapes
from paddleqa.autocompress.space import Candidate, SearchSpace, candidates
from paddleqa.core.config import from_dict, read_yaml
from paddleqa.core.errors import PaddleQAError
from paddleqa.stages.runner import training_done

from conftest import tiny_pipeline_doc


def _row(name, latency_ms, mib, speedup, smaller, flops=1, form="fp32", hidden=64):
    plan = Candidate("mobilenet", hidden, 2, 1, 2 * hidden, 1, 2, 16, form)
    return {"name": name, "plan": plan.__dict__ | {}, "latency_ms": latency_ms,
            "file_bytes": int(mib * 2**20), "speedup": speedup, "smaller": smaller, "flops": flops,
            "params": flops}


def test_space_holds_only_real_plans_and_refuses_a_huge_one():
    space = from_dict(SearchSpace, {"kinds": ["mobilenet", "ernie"], "hidden_sizes": [48, 64],
                                    "head_size": 32, "num_layers": [1], "conv_blocks": [0, 1],
                                    "ffn_ratios": [2], "embedding_sizes": [16, 64],
                                    "embedding_forms": ["fp32", "int8"]})
    plans = candidates(space)
    assert plans and all(p.hidden_size % 32 == 0 for p in plans)  # 48 is no multiple of 32
    assert all(p.embedding_size < p.hidden_size for p in plans)  # a 64-wide factorisation of 64: no
    assert all(p.conv_blocks == 0 and p.embedding_size == 0 for p in plans if p.kind == "ernie")
    assert len({p.name for p in plans}) == len(plans)
    assert {p.embeddings for p in candidates(space, embedding_forms=("fp32",))} == {"fp32"}
    with pytest.raises(ValueError, match="max_candidates"):
        candidates(from_dict(SearchSpace, {"hidden_sizes": [32, 64, 96, 128], "max_candidates": 3}))
    with pytest.raises(ValueError, match="valid: mobilenet, ernie"):
        from_dict(SearchSpace, {"kinds": ["bert"]})


def test_a_budget_keeps_only_plans_inside_it():
    cfg = AutocompressConfig(speedup=3.0, size_mib=1.0)
    rows = [_row("fast-small", 2.0, 0.5, 4.0, 10.0), _row("slow", 9.0, 0.5, 1.5, 10.0),
            _row("big", 2.0, 3.0, 4.0, 2.0), _row("edge", 3.0, 1.0, 3.0, 5.0)]
    ok = inside(rows, cfg)
    assert {r["name"] for r in ok} == {"fast-small", "edge"}
    assert all(not r["misses"] for r in ok)
    assert set(next(r for r in rows if r["name"] == "big")["misses"]) == {"size_mib"}
    assert set(next(r for r in rows if r["name"] == "slow")["misses"]) == {"speedup"}
    lat = AutocompressConfig(latency_ms=2.5)
    assert {r["name"] for r in inside(rows, lat)} == {"fast-small", "big"}


def test_an_impossible_budget_names_the_closest_plan():
    rows = [_row("near", 2.0, 0.5, 4.5, 10.0), _row("far", 9.0, 5.0, 1.0, 1.0)]
    with pytest.raises(PaddleQAError, match="closest is near.*speedup by 11%"):
        inside(rows, AutocompressConfig(speedup=5.0))
    with pytest.raises(ValueError, match="speed budget"):
        AutocompressConfig(size_mib=1.0)
    with pytest.raises(ValueError, match="valid: lite, paddle, onnx, onnx-int8, lite-int8"):
        AutocompressConfig(speedup=2.0, backend="tflite")
    with pytest.raises(ValueError, match="sized_on backend 'arm'"):
        AutocompressConfig(speedup=2.0, sized_on="arm")


def test_a_shape_is_trained_once_with_fp32_tables_where_the_budget_allows():
    rows = [_row("a-int8", 2.0, 0.5, 4.0, 10.0, flops=5, form="int8"),
            _row("a-fp32", 2.0, 0.9, 4.0, 6.0, flops=5, form="fp32"),
            _row("b-int8", 1.0, 0.3, 8.0, 12.0, flops=9, form="int8", hidden=96)]
    ranked = shapes(rows)
    assert [r["name"] for r in ranked] == ["b-int8", "a-fp32"]  # most FLOPs first, one per shape


def test_the_plan_yaml_reproduces_the_chosen_student(tmp_path):
    data = tmp_path / "d.json"
    data.write_text("{}", encoding="utf-8")
    doc = tiny_pipeline_doc(tmp_path, data, data)
    doc["distill"] = {"student": {"kind": "ernie", "num_layers": 1}, "max_steps": 9}
    row = _row("x", 1, 1, 1, 1, form="int8", hidden=96)
    written = tmp_path / "plan.yaml"
    from paddleqa.core.io import write_yaml

    write_yaml(plan_document(doc, row, 40, "lite"), written)
    plan = pipeline.build_plan(read_yaml(written), enable=("distill", "export"))
    s = plan.distill.student
    assert (s.kind, s.hidden_size, s.num_heads, s.num_layers, s.intermediate_size, s.conv_blocks,
            s.embedding_size) == ("mobilenet", 96, 2, 1, 192, 1, 16)
    assert plan.distill.max_steps == 40 and plan.export.embeddings == "int8"


def test_plans_of_a_run_that_prunes_carry_the_share_and_keep_old_keys():
    space = SearchSpace(kinds=["mobilenet", "ernie"], hidden_sizes=[64], num_layers=[1],
                        conv_blocks=[0, 1], ffn_ratios=[2], embedding_sizes=[16],
                        embedding_forms=["fp32"])
    plain = candidates(space)
    pruned = candidates(space, pruned_flops=0.85)
    # the ernie plan and the mobilenet plan without conv blocks have nothing the chain can prune
    assert len(plain) == 3 and [p.conv_blocks for p in pruned] == [1]
    p = pruned[0]
    assert p.pruned_flops == 0.85 and p.name.endswith("-p85") and p.student() == plain[-1].student()
    assert p.shape_key() != plain[-1].shape_key()
    # a plan as trained hashes as before the field existed: this machine's latency table holds
    import dataclasses, hashlib
    old = {k: v for k, v in dataclasses.asdict(plain[-1]).items() if k != "pruned_flops"}
    assert plain[-1].shape_key() == hashlib.sha256(json.dumps(old, sort_keys=True).encode()).hexdigest()[:16]
    # a space of which nothing can go through the run's pruning: a clear error, not an empty search
    from paddleqa.autocompress.timing import deployable
    from paddleqa.core.errors import ConfigError

    assert candidates(dataclasses.replace(space, conv_blocks=[0]), pruned_flops=0.85) == []
    with pytest.raises(ConfigError, match="prune.flops_ratio"):
        deployable([], None, 64)


def test_uniform_channels_meet_the_flops_share_or_refuse():
    from paddleqa.models.flops import flops_per_query
    from paddleqa.models.mobile import MobileQAConfig
    from paddleqa.stages.channels import uniform_channels

    import copy

    cfg = MobileQAConfig(vocab_size=500, hidden_size=32, num_attention_heads=2, num_hidden_layers=3,
                         num_transformer_layers=1, intermediate_size=64, conv_blocks=2, expand_ratio=4)
    full = flops_per_query(cfg, 128)
    widths = uniform_channels(cfg, 0.9, 128)
    assert len(widths) == 2 and all(w < 128 for w in widths)
    cfg_p, wider = copy.copy(cfg), copy.copy(cfg)
    cfg_p.block_channels, wider.block_channels = widths, [w + 1 for w in widths]
    assert flops_per_query(cfg_p, 128) <= 0.9 * full
    assert flops_per_query(wider, 128) > 0.9 * full  # the least pruning that meets the share
    assert uniform_channels(cfg, 0.05, 128) is None  # the attention layer alone is more than that


def test_search_on_a_tiny_teacher(teacher_run, tmp_path, capsys):
    tmp, data, doc = teacher_run
    doc = json.loads(json.dumps(doc))
    doc["distill"] = {"validation_file": str(data), "batch_size": 4, "learning_rate": 0.001,
                      "save_steps": 50, "logging_steps": 2, "eval_each_epoch": False}
    doc["autocompress"] = {"space": {"hidden_sizes": [16, 32], "head_size": 16, "num_layers": [1],
                                     "conv_blocks": [1], "ffn_ratios": [2], "embedding_sizes": [8],
                                     "embedding_forms": ["fp32", "int8"]},
                           "shortlist": 1, "short_steps": 2, "full_trials": 1, "full_steps": 4,
                           "repeats": 2, "max_f1_drop": 100.0,
                           "latency_cache": str(tmp_path / "cache"), "out_dir": str(tmp_path / "ac")}
    doc["prune"] = {"method": "l1norm", "flops_ratio": 0.9}  # the chain prunes: plans timed pruned
    config = tmp_path / "run.yaml"
    from paddleqa.core.io import write_yaml

    write_yaml(doc, config)
    out = tmp_path / "ac"
    # --time-only: every plan timed and the budget applied, nothing trained
    assert cli.main(["autocompress", str(config), "--speedup", "0.01", "--time-only"]) == 0
    timed = json.loads(capsys.readouterr().out)
    assert timed["time_only"] and timed["plans"] == 4 and not (out / "trials").exists()
    assert len(timed["shapes"]) == 2 and not (out / "plan.yaml").exists()  # 2 widths; a shape once, whatever its tables
    assert all(s in (out / "frontier.md").read_text() for s in timed["shapes"])
    # timed on ONNX int8, sized as the ARM .nb with int8 weights the headline ships: each size is
    # that file, and both table forms of a shape share one timing (ONNX keeps its own tables)
    assert cli.main(["autocompress", str(config), "--speedup", "0.01", "--time-only",
                     "--backend", "onnx-int8", "--sized-on", "lite-int8"]) == 0
    assert "(file: lite-int8)" in json.loads(capsys.readouterr().out)["budget"]
    rows = json.loads((out / "frontier.json").read_text(encoding="utf-8"))["rows"]
    for r in rows:
        nb = out / "plans" / r["name"] / "export-lite-int8" / "arm-int8" / "model.nb"
        assert r["file_bytes"] == nb.stat().st_size
    by = {r["name"]: r for r in rows}
    fp32, int8 = by["m-h32-l1-c1-f64-e8-fp32-p90"], by["m-h32-l1-c1-f64-e8-int8-p90"]
    # (at this size the dequantising ops outweigh the 4,000-entry table; the real student's shrinks)
    assert int8["file_bytes"] != fp32["file_bytes"] and int8["latency_ms"] == fp32["latency_ms"]
    assert cli.main(["autocompress", str(config), "--speedup", "0.01"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    record = json.loads((out / "frontier.json").read_text(encoding="utf-8"))
    assert len(record["rows"]) == 4 and all(r["latency_ms"] > 0 for r in record["rows"])
    # sizes are the shipped files: each plan's exported ARM .nb (int8 tables: a graph of its own)
    size = {r["name"]: r["file_bytes"] for r in record["rows"]}
    for name, n in size.items():
        assert n == (out / "plans" / name / "export-lite" / "arm-fp32" / "model.nb").stat().st_size
    assert size["m-h32-l1-c1-f64-e8-int8-p90"] != size["m-h32-l1-c1-f64-e8-fp32-p90"]
    # "smaller" is against the teacher's smallest fp32 file of any format, as the headline judges
    t_dir = next((out / "exports").glob("teacher-*"))
    t_files = {"lite": t_dir / "arm-fp32" / "model.nb", "onnx": t_dir / "onnx" / "model.onnx",
               "paddle": t_dir / "inference" / "model.pdiparams"}
    smallest = min(f.stat().st_size + (f.with_suffix(".pdmodel").stat().st_size if f.suffix == ".pdiparams" else 0)
                   for f in t_files.values())
    assert record["teacher"]["file_bytes"] == smallest
    assert all(abs(r["smaller"] - smallest / r["file_bytes"]) < 1e-2 for r in record["rows"])
    # each plan is timed as the chain deploys it: its conv block pruned to 90% of its FLOPs
    from paddleqa.models.build import load_model
    from paddleqa.models.flops import flops_per_query

    for r in record["rows"]:
        timed = load_model(str(out / "plans" / r["name"] / "model")).config
        assert timed.block_channels[0] < 2 * r["plan"]["hidden_size"]
        assert flops_per_query(timed, 64) <= 0.9 * flops_per_query(  # 64: the windows
            _student_config(r["plan"], timed), 64)
    assert metrics["chosen"] in size and metrics["criterion_met"] is True
    trained = record["trained"][metrics["chosen"]]
    kd, twin = trained["full"], trained["labels_only"]
    kd_m = json.loads((tmp_path / kd["folder"] / "metrics.json").read_text(encoding="utf-8"))
    twin_m = json.loads((tmp_path / twin["folder"] / "metrics.json").read_text(encoding="utf-8"))
    assert kd_m["global_step"] == twin_m["global_step"] == 4
    twin_cfg = json.loads((tmp_path / twin["folder"] / "manifest.json").read_text(encoding="utf-8"))["config"]
    assert twin_cfg["alpha"] == 1.0 and twin_cfg["hidden_weight"] == 0.0
    assert trained["kd_gain"]["delta"] is not None
    # the plan YAML distils the chosen student with the full trial's steps
    plan = pipeline.build_plan(read_yaml(out / "plan.yaml"), enable=("distill",))
    chosen = Candidate(**metrics["plan"])
    assert {k: getattr(plan.distill.student, k) for k in chosen.student()} == chosen.student()
    assert plan.distill.max_steps == 4
    # ... and is the full trial itself: `paddleqa run plan.yaml` does not train the student again
    assert plan.distill.output_dir == kd["folder"] and training_done(plan.distill)
    assert (out / "pareto.png").stat().st_size > 0 and "| teacher |" in (out / "frontier.md").read_text()
    # a second search on this machine times nothing again and trains nothing again
    tables = list((tmp_path / "cache").glob("latency-*.json"))
    before = json.loads(tables[0].read_text())["batches"]
    assert cli.main(["autocompress", str(config), "--speedup", "0.01"]) == 0
    assert json.loads(tables[0].read_text())["batches"] == before
    assert json.loads(capsys.readouterr().out)["chosen"] == metrics["chosen"]


def _student_config(plan, pruned):
    import copy

    cfg = copy.copy(pruned)
    cfg.block_channels = [plan["hidden_size"] * plan["expand_ratio"]] * plan["conv_blocks"]
    return cfg


def test_machine_key_follows_the_vector_extensions(monkeypatch):
    # two hosts with the same CPU name but different int8 hardware get different latency tables
    from paddleqa.autocompress import latency
    from paddleqa.core import manifest

    assert set(manifest.cpu_isa()) <= set(manifest.ISA_FLAGS)
    monkeypatch.setattr(latency, "cpu_isa", lambda: ["avx2"])
    avx2 = latency.machine_key()
    monkeypatch.setattr(latency, "cpu_isa", lambda: ["avx2", "avx512f", "avx512_vnni"])
    assert latency.machine_key() != avx2
