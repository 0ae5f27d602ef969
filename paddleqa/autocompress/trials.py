"""Training the shortlisted plans: one ``paddleqa distill`` per plan and budget, scored on the
run's validation split, and its labels-only twin for the KD gain.

Each trial is the pipeline's own distill stage (``paddleqa distill --config BASE.yaml --set
distill.student.*=...``) in its own folder under the search's, run as a child process so that it
can use Paddle's data-parallel launcher (``nproc``). A folder that already holds a finished run of
the same config is not trained again (the pipeline's freshness record), an interrupted one
resumes from its checkpoint: the search is resumable trial by trial. ``dev_file`` is emptied for
every trial: plans are chosen on the validation split only, and dev is scored once, by the chosen
plan's own run.

The twin (``labels_only``) is the same plan, initialisation and steps with ``alpha: 1`` and no
intermediate terms: the gold spans only. Its F1 against the distilled plan's, paired over the
same validation questions, is what distillation added.
"""
from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

from .. import pipeline
from ..core.config import merge, parse_overrides
from ..core.errors import PaddleQAError
from ..core.metrics import question_scores
from ..core.stats import paired_bootstrap
from ..stages.runner import training_done
from ..text.dataset import gold_references
from .space import Candidate

log = logging.getLogger(__name__)

LABELS_ONLY = ["distill.alpha=1.0", "distill.hidden_weight=0.0", "distill.attention_weight=0.0",
               "distill.intermediate=[]", "distill.layer_map=[]"]


def trial_sets(candidate: Candidate, steps: int, out: Path, labels_only: bool = False) -> list[str]:
    """The ``--set`` overrides of one trial."""
    sets = [f"distill.output_dir={out}", f"distill.max_steps={steps}", "distill.dev_file=",
            *(f"distill.student.{k}={v}" for k, v in candidate.student().items())]
    return sets + (LABELS_ONLY if labels_only else [])


def run_trial(base_yaml: Path, doc: dict[str, Any], candidate: Candidate, steps: int, out: Path, *,
              labels_only: bool = False, nproc: int = 1) -> dict:
    """Distil (or train on labels only) one plan for ``steps``; returns its scores and files."""
    sets = trial_sets(candidate, steps, out, labels_only)
    cfg = pipeline.build_plan(merge(doc, parse_overrides(sets)), enable=("distill",)).distill
    if not cfg.validation_file:
        raise PaddleQAError("autocompress chooses plans on the validation split, and this run has "
                            "none: keep data.validation_share above 0 (see docs/configs.md)")
    if training_done(cfg):
        log.info("trial %s (%d steps%s): done before, not trained again", candidate.name, steps,
                 ", labels only" if labels_only else "")
    else:
        log.info("trial %s (%d steps%s) -> %s", candidate.name, steps,
                 ", labels only" if labels_only else "", out)
        cmd = [sys.executable, "-m", "paddleqa.cli", "distill", "--config", str(base_yaml),
               "--resume", "--nproc", str(nproc)]
        for s in sets:
            cmd += ["--set", s]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            tail = "\n".join(res.stderr.strip().splitlines()[-5:])
            raise PaddleQAError(f"trial {candidate.name} failed (exit {res.returncode}); its log "
                                f"ends with:\n{tail}\nfix the cause and re-run: finished trials are kept")
    m = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    return {"name": candidate.name, "steps": steps, "labels_only": labels_only, "folder": str(out),
            "validation_em": m.get("validation_em"), "validation_f1": m.get("validation_f1"),
            "train_seconds": m.get("train_seconds"),
            "predictions": str(out / "validation_predictions.json")}


class Paired:
    """Per-question validation F1 of prediction files, scored once each; paired differences."""

    def __init__(self, gold_file: str, resamples: int = 1000):
        self.gold = gold_references(gold_file)
        self.resamples = resamples
        self._f1: dict[str, list[float]] = {}

    def f1s(self, predictions: str) -> list[float]:
        if predictions not in self._f1:
            preds = json.loads(Path(predictions).read_text(encoding="utf-8"))
            per = question_scores(self.gold, preds)
            self._f1[predictions] = [100 * per[q][1] for q in sorted(per)]
        return self._f1[predictions]

    def delta(self, a: str, b: str) -> dict:
        """F1(a) - F1(b) over the same questions with its 95% interval."""
        return paired_bootstrap(self.f1s(a), self.f1s(b), resamples=self.resamples, seed=0)
