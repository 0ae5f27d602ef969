"""The CLI surface: help for every subcommand, clear errors, no tracebacks."""
import json
import subprocess
import sys

import pytest

from paddleqa import cli

SUBCOMMANDS = [["data", "check"], ["vocab", "build"], ["finetune"], ["evaluate"], ["score"], ["run"], ["augment"], ["distill"], ["prune"]]


def test_top_level_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for name in cli.COMMANDS:
        assert name in out


@pytest.mark.parametrize("cmd", SUBCOMMANDS, ids=lambda c: " ".join(c))
def test_each_subcommand_has_help(cmd, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main([*cmd, "--help"])
    assert exc.value.code == 0 and "usage: paddleqa" in capsys.readouterr().out


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
    assert s == {"em": pytest.approx(66.667), "f1": pytest.approx(66.667), "average": pytest.approx(66.667),
                 "total": 3, "missing": 1, "extra": 0}


def test_bad_config_key_is_reported(tmp_path, tiny_json, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"run_dir: {tmp_path}/r\ndata: {{train_file: {tiny_json}, dev_file: {tiny_json}}}\n"
                   "finetune: {epoch: 3}\n", encoding="utf-8")
    assert cli.main(["run", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "finetune.epoch" in err and "valid keys" in err and "Traceback" not in err
