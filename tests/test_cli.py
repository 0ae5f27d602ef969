"""The CLI surface: help for every subcommand, flags generated from the config dataclasses,
--config/--set on every stage command, clear errors, no tracebacks."""
import argparse
import dataclasses
import json
import subprocess
import sys
import typing

import pytest
import yaml

from conftest import tiny_pipeline_doc
from paddleqa import cli
from paddleqa.cli import commands, reference
from paddleqa.cli.flags import DEST_PREFIX, kind
from paddleqa.core import settings
from paddleqa.stages.data import DataConfig
from paddleqa.runtime.bench import BenchConfig
from paddleqa.runtime.evaluate import EvaluateConfig
from paddleqa.service.serve import ServeConfig
from paddleqa.stages.finetune import TrainSettings
from paddleqa.stages.quantize import QuantizeConfig


LEAVES = reference.subcommands(cli.build_parser())


def test_the_command_list_is_the_parser_s():
    assert {p[0] for p in LEAVES} == set(cli.COMMANDS)
    assert ("data", "check") in LEAVES and ("vocab", "build") in LEAVES and len(LEAVES) >= 16


def test_top_level_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for name in cli.COMMANDS:
        assert name in out


@pytest.mark.parametrize("words", sorted(LEAVES), ids=" ".join)
def test_each_subcommand_help_works_and_shows_its_flags(words, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main([*words, "--help"])
    out = capsys.readouterr().out
    assert exc.value.code == 0 and f"usage: paddleqa {' '.join(words)}" in out
    for action in LEAVES[words]._actions:
        for option in action.option_strings:
            assert option in out, f"{option} missing from `paddleqa {' '.join(words)} --help`"


STAGE_COMMANDS = {**{(k,): v for k, v in commands.STAGE_COMMANDS.items()}, ("vocab", "build"): commands.VOCAB_BUILD}


@pytest.mark.parametrize("words", sorted(STAGE_COMMANDS), ids=" ".join)
def test_flags_are_the_config_fields_with_their_help_and_no_default_of_their_own(words):
    """One argument per field, carrying the field's help; argparse holds no default, so every
    default comes from the dataclass (or from --config)."""
    fmap = STAGE_COMMANDS[words].fields
    actions = {a.dest: a for a in LEAVES[words]._actions if a.dest.startswith(DEST_PREFIX)}
    hints = typing.get_type_hints(fmap.cls)
    for f in dataclasses.fields(fmap.cls):
        action = actions.pop(DEST_PREFIX + f.name, None)
        if f.name in fmap.exclude or kind(hints[f.name]) is None:  # nested configs: --set
            assert action is None
            continue
        assert action is not None, f"{f.name} is not on `paddleqa {' '.join(words)}`"
        assert action.default is argparse.SUPPRESS
        assert f.metadata["help"].replace("%", "%%") in action.help
        if f.name not in fmap.positional:
            assert action.option_strings[0] == "--" + fmap.spelling(f.name).replace("_", "-")
    assert not actions, f"arguments that are not fields: {sorted(actions)}"


def test_a_flag_s_default_and_help_come_from_the_dataclass_field(capsys, monkeypatch):
    """Change the field and the CLI follows: nothing about --n-best is written in the CLI."""
    field = {f.name: f for f in dataclasses.fields(EvaluateConfig)}["n_best"]
    assert field is {f.name: f for f in dataclasses.fields(settings.InferenceSettings)}["n_best"]
    monkeypatch.setattr(field, "default", 7)
    monkeypatch.setattr(field, "metadata", {"help": "spans kept, 100% made up"})
    with pytest.raises(SystemExit):
        cli.main(["evaluate", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--n-best N spans kept, 100% made up (default: 7)" in help_text
    args = cli.build_parser().parse_args(["evaluate", "M", "D", "--out", "O"])
    cfg = commands.build_config(commands.STAGE_COMMANDS["evaluate"], args)
    assert cfg == EvaluateConfig(model="M", data_file="D", out_dir="O")


@pytest.mark.parametrize("argv, expected", [
    (["evaluate", "M", "D", "--out", "O", "--n-best", "5", "--no-progress"],
     {"model": "M", "data_file": "D", "out_dir": "O", "n_best": 5, "progress": False}),
    (["export", "M", "--out", "O", "--precision", "fp32,int8", "--onnx"],
     {"precisions": ["fp32", "int8"], "onnx": True, "targets": ["arm", "x86"]}),
    (["quantize", "M", "--out", "O", "--method", "ptq", "--calib", "F", "--bits", "8"],
     {"method": "ptq", "calib_file": "F", "weight_bits": 8}),
    (["bench", "A", "B", "--seq-len", "128,384", "--threads", "1,2"],
     {"artifacts": ["A", "B"], "seq_lens": [128, 384], "threads": [1, 2]}),
    (["augment", "IN", "--out", "OUT", "--no-original"],
     {"input_file": "IN", "output_file": "OUT", "keep_original": False}),
    (["serve", "ART", "--kb", "DIR", "--timeout", "10"], {"kb": "DIR", "timeout_seconds": 10.0}),
    (["ask", "ART", "--top-k", "2"], {"artifact": "ART", "top_k": 2}),
    (["vocab", "build", "D1", "D2", "--out", "DIR"], {"data_files": ["D1", "D2"], "out_dir": "DIR"}),
    (["report", "RUN"], {"run_dir": "RUN", "out_dir": ""}),
])
def test_existing_spellings_still_work(argv, expected):
    args = cli.build_parser().parse_args(argv)
    cfg = commands.build_config(args.func.args[0], args)
    assert {k: getattr(cfg, k) for k in expected} == expected


def test_a_missing_argument_is_named(capsys):
    assert cli.main(["evaluate", "M"]) == 2
    err = capsys.readouterr().err
    assert "required: data, --out" in err and "--config" in err
    with pytest.raises(SystemExit) as exc:  # no --config on vocab build: argparse says it
        cli.main(["vocab", "build", "x.json"])
    assert exc.value.code == 2 and "--out" in capsys.readouterr().err


def test_config_and_set_work_for_a_stage_that_did_not_take_them(tmp_path, tiny_json, monkeypatch, capsys):
    doc = tiny_pipeline_doc(tmp_path, tiny_json, tiny_json)
    doc["distill"] = {}
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(yaml.safe_dump(doc), encoding="utf-8")
    seen = []
    monkeypatch.setattr("paddleqa.stages.quantize.run", lambda c: seen.append(c) or {"ok": True})
    code = cli.main(["-q", "quantize", "--config", str(cfg_file), "--set", "quantize.method=kmeans",
                     "--bits", "4"])
    assert code == 0 and json.loads(capsys.readouterr().out) == {"ok": True}
    (q,) = seen
    run = tmp_path / "run"
    # wired as `paddleqa run` wires it: the distilled student, the run's folders and data files
    assert (q.model, q.out_dir, q.calib_file) == (str(run / "distill" / "model"), str(run / "quantize"),
                                                   str(tiny_json))
    assert (q.method, q.weight_bits, q.cache_dir, q.progress) == ("kmeans", 4, str(tmp_path / "cache"), False)
    # an explicit positional beats the wiring; --set without --config only for the stage's section
    args = cli.build_parser().parse_args(["evaluate", "OTHER", "--config", str(cfg_file)])
    ev = commands.build_config(commands.STAGE_COMMANDS["evaluate"], args)
    assert (ev.model, ev.out_dir, ev.data_file) == ("OTHER", str(run / "evaluate"), str(tiny_json))
    assert cli.main(["quantize", "M", "--out", "O", "--set", "finetune.epochs=1"]) == 2
    assert "needs --config" in capsys.readouterr().err


def test_shared_settings_are_declared_once():
    """Every config with a shared knob inherits it from core/settings.py (same Field object);
    the only redeclarations are the documented ones."""
    base = {f.name: f for f in dataclasses.fields(settings.InferenceSettings)}
    overridden = {(ServeConfig, "threads"), (BenchConfig, "threads")}
    for cls in (EvaluateConfig, TrainSettings, QuantizeConfig, BenchConfig, ServeConfig, DataConfig):
        for f in dataclasses.fields(cls):
            if f.name in base and (cls, f.name) not in overridden:
                assert f is base[f.name], f"{cls.__name__}.{f.name} redeclares a shared setting"


def test_console_script_help_is_quick_and_imports_no_paddle():
    code = "import sys, paddleqa.cli as c; c.build_parser(); print('paddle' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_score_errors_are_clear(tmp_path, tiny_json, capsys):
    bad = tmp_path / "pred.json"
    bad.write_text('["not", "a", "dict"]', encoding="utf-8")
    assert cli.main(["score", str(tiny_json), str(bad)]) == 2
    assert "leaderboard format" in capsys.readouterr().err
    bad.write_text("{oops", encoding="utf-8")
    assert cli.main(["score", str(tiny_json), str(bad)]) == 2
    assert "malformed JSON at line 1" in capsys.readouterr().err


def test_score_counts_missing_predictions(tmp_path, tiny_json, capsys):
    pred = tmp_path / "pred.json"
    pred.write_text(json.dumps({"q1": "7天", "q2": "3个工作日"}, ensure_ascii=False), encoding="utf-8")
    assert cli.main(["-q", "score", str(tiny_json), str(pred)]) == 0
    s = json.loads(capsys.readouterr().out)
    intervals = {k: s.pop(k) for k in ("em_ci95", "f1_ci95", "ci_resamples")}
    assert s == {"em": pytest.approx(66.667), "f1": pytest.approx(66.667), "average": pytest.approx(66.667),
                 "total": 3, "missing": 1, "extra": 0}
    # 3 questions, 2 right: resamples range from none to all right
    assert intervals == {"em_ci95": [0.0, 100.0], "f1_ci95": [0.0, 100.0], "ci_resamples": 1000}


def test_bad_config_key_is_reported(tmp_path, tiny_json, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"run_dir: {tmp_path}/r\ndata: {{train_file: {tiny_json}, dev_file: {tiny_json}}}\n"
                   "finetune: {epoch: 3}\n", encoding="utf-8")
    assert cli.main(["run", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "finetune.epoch" in err and "valid keys" in err and "Traceback" not in err


def test_docs_cli_md_is_the_current_help():
    """docs/cli.md is generated from --help; regenerate it when a flag or its help changes."""
    from pathlib import Path

    doc = Path(__file__).resolve().parent.parent / "docs" / "cli.md"
    assert doc.read_text(encoding="utf-8") == reference.render(), (
        "docs/cli.md is out of date: run `python -m paddleqa.cli.reference > docs/cli.md`")
