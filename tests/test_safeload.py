"""Loading a model folder never runs code from its weights, and a stage's output that changed
since its manifest was written is refused."""
from __future__ import annotations

import os
import pickle
import shutil

import pytest

from paddleqa.core.errors import PaddleQAError
from paddleqa.core.safeload import TRUST_ENV, UnsafePickle, check_pickle, verify_model_folder
from paddleqa.models.build import load_model


class _Payload:
    """Unpickling this calls os.system: what a crafted .pdparams does."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _model_copy(teacher_run, tmp_path):
    tmp, _, doc = teacher_run
    src = tmp / "run" / "teacher"
    dst = tmp_path / "teacher"
    shutil.copytree(src / "model", dst / "model")
    shutil.copy2(src / "manifest.json", dst / "manifest.json")
    return dst / "model"


def test_our_weights_pass_and_load(teacher_run, tmp_path):
    folder = _model_copy(teacher_run, tmp_path)
    verify_model_folder(folder)  # arrays only, sha256 as recorded
    assert load_model(str(folder)) is not None


def test_a_crafted_pickle_is_refused_without_running(teacher_run, tmp_path, monkeypatch):
    monkeypatch.delenv(TRUST_ENV, raising=False)
    folder = _model_copy(teacher_run, tmp_path)
    (folder.parent / "manifest.json").unlink()  # not one of our stage folders: only the pickle check
    marker = tmp_path / "pwned"
    with open(folder / "model_state.pdparams", "wb") as fh:
        pickle.dump({"ernie.weight": _Payload(marker)}, fh)
    with pytest.raises(UnsafePickle, match="would call posix.system|would call os.system"):
        load_model(str(folder))
    assert not marker.exists()


def test_changed_weights_of_a_stage_folder_are_refused(teacher_run, tmp_path, monkeypatch):
    monkeypatch.delenv(TRUST_ENV, raising=False)
    folder = _model_copy(teacher_run, tmp_path)
    state = folder / "model_state.pdparams"
    data = bytearray(state.read_bytes())
    data[len(data) // 2] ^= 1  # one bit of a weight: still a pickle of arrays, other bytes
    state.write_bytes(bytes(data))
    check_pickle(state)
    with pytest.raises(PaddleQAError, match="changed since the stage that wrote it"):
        load_model(str(folder))
    monkeypatch.setenv(TRUST_ENV, "1")  # the user's own edit: --trust-remote-artifact
    verify_model_folder(folder)


def test_damaged_weights_are_a_clear_error(tmp_path):
    bad = tmp_path / "model_state.pdparams"
    bad.write_bytes(b"\x80\x04\x95")
    with pytest.raises(PaddleQAError, match="not a readable weights file"):
        check_pickle(bad)


def test_cli_refuses_a_crafted_model_with_one_error_line(teacher_run, tmp_path, capsys):
    from paddleqa import cli

    tmp, data, _ = teacher_run
    folder = _model_copy(teacher_run, tmp_path)
    (folder.parent / "manifest.json").unlink()
    marker = tmp_path / "pwned"
    with open(folder / "model_state.pdparams", "wb") as fh:
        pickle.dump({"w": _Payload(marker)}, fh)
    code = cli.main(["-q", "evaluate", str(folder), str(data), "--out", str(tmp_path / "ev")])
    err = capsys.readouterr().err
    assert code == 2 and "refusing to load" in err and "--trust-remote-artifact" in err
    assert not marker.exists()
