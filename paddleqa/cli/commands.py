"""The stage commands: which config dataclass each takes and how, and the glue that runs it.

Each command's flags are generated from its config dataclass (:mod:`.flags`); the table below
only says which fields are positional, which keep a shorter spelling (``out_dir`` -> ``--out``),
which are left out, and which pipeline YAML section the stage reads.

``--config FILE`` and ``--set SECTION.KEY=VALUE`` work the same way for every stage command that
is a pipeline stage: the ``--set`` values are merged into the YAML, the flags given on the command
line are merged into the stage's section, and the stage's config is then wired exactly as
``paddleqa run`` wires it (:func:`paddleqa.pipeline.build_plan`). finetune, distill and prune
need ``--config``; for the others it is optional, and without it the flags (and any
``--set STAGE.KEY=VALUE``) override the dataclass defaults.
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import logging
import os
import sys
from typing import Any, Callable

from .. import pipeline
from ..core.config import ConfigError, from_dict, merge, parse_overrides, read_yaml
from ..core.errors import PaddleQAError
from ..runtime import bench, compare, evaluate, report
from ..service import serve
from ..stages import distill, export, finetune, pretrain, prune, quantize
from ..text import augment, simplify, tokenizer
from .flags import FieldMap, add_fields, given_values, missing
from .launch import add_nproc, quiet_rank, relaunch
from .output import print_json

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class StageCommand:
    """One stage command: its config's fields on the command line and what runs the stage.

    ``section``: the pipeline YAML section the stage reads; when set, the command takes
    ``--config``/``--set`` (required when ``config_required``), and its config is that
    section's in :func:`paddleqa.pipeline.build_plan`. ``training``: the command takes ``--resume`` and ``--nproc``. ``run(config, args)`` returns the exit status.
    """

    help: str
    fields: FieldMap
    run: Callable[[Any, argparse.Namespace], int]
    section: str = ""
    config_required: bool = False
    training: bool = False


# ---------------------------------------------------------------- what each command does

def _training_run(stage: str, module) -> Callable[[Any, argparse.Namespace], int]:
    """pretrain, finetune, distill, prune: data-parallel relaunch, then train, print the metrics."""

    def run(cfg, args: argparse.Namespace) -> int:
        rc = relaunch(args, cfg.output_dir)
        if rc is not None:
            return rc
        cfg = quiet_rank(cfg)
        if stage == "finetune" and not cfg.model and not os.path.isdir(cfg.tokenizer):
            raise PaddleQAError(
                f"tokenizer folder {cfg.tokenizer} does not exist: build it with "
                f"`paddleqa run {args.config} --only vocab`, or set finetune.tokenizer"
            )
        metrics = module.run(cfg, resume=args.resume)
        if metrics:  # under the data-parallel launcher, only rank 0 reports
            print_json(metrics)
        return 0

    return run


def _print_result(module, function: str = "run") -> Callable[[Any, argparse.Namespace], int]:
    """A stage whose ``module.run(config)`` (or another function) result is the command's output;
    looked up at call time, so that tests can replace it."""

    def go(cfg, args: argparse.Namespace) -> int:
        print_json(getattr(module, function)(cfg))
        return 0

    return go


def _run_augment(cfg, args: argparse.Namespace) -> int:
    print_json(augment.run(cfg, progress=not args.quiet))
    return 0


def _run_export(cfg, args: argparse.Namespace) -> int:
    metrics = export.run(cfg)
    log.info("op report:\n%s", export.describe_ops(metrics))
    print_json({"bundles": metrics["bundles"], "skipped": metrics["skipped"], "onnx": metrics["onnx"],
                "ops": {k: f"{v['ops_before']} -> {v['ops_after']}" for k, v in metrics["op_report"].items()},
                "metrics": os.path.join(cfg.out_dir, "metrics.json")})
    return 0


def _run_bench(cfg, args: argparse.Namespace) -> int:
    result = bench.run(cfg)
    print(bench.format_table(result))
    return 0 if all("error" not in r for r in result["rows"]) else 1


def _run_report(cfg, args: argparse.Namespace) -> int:
    res = report.run(cfg)
    print_json({k: v for k, v in res.items() if k != "rows"})
    return 0


def _run_compare(cfg, args: argparse.Namespace) -> int:
    res = compare.run(cfg)
    print_json({k: res[k] for k in ("questions", "a", "b", "em_delta", "f1_delta", "agreement", "names")}
               | ({"report": os.path.join(cfg.out_dir, "compare.html")} if cfg.out_dir else {}))
    return 0


def _run_serve(cfg, args: argparse.Namespace) -> int:
    serve.serve(cfg)
    return 0


def _run_ask(cfg, args: argparse.Namespace) -> int:
    return serve.ask_loop(cfg, sys.stdin, sys.stdout)


# ---------------------------------------------------------------- the table

_OUT = {"out_dir": "out"}
# ServeConfig fields that only the HTTP service uses (`ask` answers in the terminal).
_HTTP_ONLY = ("host", "port", "allow_remote", "processes", "workers", "max_batch", "max_wait_ms",
              "kb_check_seconds", "max_body_bytes", "header_timeout_seconds")
_SERVE_NAMES = {"timeout_seconds": "timeout"}

STAGE_COMMANDS: dict[str, StageCommand] = {
    "augment": StageCommand(
        "add synonym-paraphrased variants of every question",
        FieldMap(augment.AugmentConfig, positional=("input_file",), required=("output_file",),
                 names={"input_file": "input", "output_file": "out", "keep_original": "original"}),
        _run_augment, section="augment"),
    "pretrain": StageCommand(
        "pre-train an encoder (ERNIE or the hybrid) on unlabelled text (masked-LM, whole-word masking)",
        FieldMap(pretrain.PretrainConfig, positional=("corpus",), required=("output_dir", "tokenizer")),
        _training_run("pretrain", pretrain), section="pretrain", training=True),
    "finetune": StageCommand(
        "fine-tune a teacher QA model with PaddleNLP's Trainer",
        FieldMap(finetune.FinetuneConfig), _training_run("finetune", finetune),
        section="finetune", config_required=True, training=True),
    "distill": StageCommand(
        "distil the teacher into a smaller student (KD losses)",
        FieldMap(distill.DistillConfig), _training_run("distill", distill),
        section="distill", config_required=True, training=True),
    "prune": StageCommand(
        "prune heads, FFN neurons and layers; distil the result back",
        FieldMap(prune.PruneConfig), _training_run("prune", prune),
        section="prune", config_required=True, training=True),
    "evaluate": StageCommand(
        "run a model or exported artifact on a CMRC file; write predictions and EM/F1",
        FieldMap(evaluate.EvaluateConfig, positional=("model", "data_file"), required=("out_dir",),
                 names={**_OUT, "data_file": "data"}),
        _print_result(evaluate), section="evaluate"),
    "predict": StageCommand(
        "answer every question of a file, labelled or not: a leaderboard predictions file",
        FieldMap(evaluate.PredictConfig, positional=("model", "data_file"), required=("out",),
                 names={"data_file": "data"}),
        _print_result(evaluate, "predict")),
    "compare": StageCommand(
        "paired EM/F1 difference of two prediction files with intervals, breakdowns and errors",
        FieldMap(compare.CompareConfig, positional=("gold_file", "pred_a", "pred_b"),
                 names={**_OUT, "gold_file": "gold", "pred_a": "a", "pred_b": "b"}),
        _run_compare),
    "export": StageCommand(
        "static inference model + Paddle Lite .nb bundles with an op report",
        FieldMap(export.ExportConfig, positional=("model",), required=("out_dir",),
                 names={**_OUT, "precisions": "precision"}),
        _run_export, section="export"),
    "quantize": StageCommand(
        "int8 PTQ/QAT inference model, or k-means codebook weights",
        FieldMap(quantize.QuantizeConfig, positional=("model",), required=("out_dir",),
                 names={**_OUT, "calib_file": "calib", "dev_file": "dev", "weight_bits": "bits"}),
        _print_result(quantize), section="quantize"),
    "bench": StageCommand(
        "latency, throughput, RSS and FLOP floor of artifacts, side by side",
        FieldMap(bench.BenchConfig, positional=("artifacts",), names={"seq_lens": "seq_len"}),
        _run_bench, section="bench"),
    "report": StageCommand(
        "Markdown + HTML stage table and Pareto plot of a run folder",
        FieldMap(report.ReportConfig, positional=("run_dir",), names=_OUT), _run_report),
    "serve": StageCommand(
        "HTTP QA service: POST /answer, /kb/reload; GET /healthz, /metrics",
        FieldMap(serve.ServeConfig, positional=("artifact",), names=_SERVE_NAMES), _run_serve),
    "ask": StageCommand(
        "interactive terminal loop: type a question, get the answer",
        FieldMap(serve.ServeConfig, positional=("artifact",), names=_SERVE_NAMES, exclude=_HTTP_ONLY),
        _run_ask),
}

SIMPLIFY = StageCommand(
    "Traditional-Chinese SQuAD file (e.g. DRCD) to Simplified with OpenCC, answers kept at their offsets",
    FieldMap(simplify.SimplifyConfig, positional=("input_file",), required=("output_file",),
             names={"input_file": "input", "output_file": "out"}),
    _print_result(simplify))

VOCAB_BUILD = StageCommand(
    "character vocab + ErnieTokenizer from SQuAD/CMRC files",
    FieldMap(tokenizer.VocabConfig, positional=("data_files",), required=("out_dir",),
             names={**_OUT, "data_files": "data"}),
    _print_result(tokenizer))


# ---------------------------------------------------------------- flags -> config -> run

def build_config(cmd: StageCommand, args: argparse.Namespace) -> Any:
    """The stage's config from ``--config``/``--set`` and the flags given (see the module doc)."""
    given = given_values(args)
    if cmd.section and args.config:
        doc = merge(read_yaml(args.config), parse_overrides(args.set))
        if given or not cmd.config_required:  # (an absent section is added: asked for, it runs)
            doc = merge(doc, {cmd.section: given})
        return getattr(pipeline.build_plan(doc, enable=(cmd.section,)), cmd.section)
    values = given
    if cmd.section:
        sets = parse_overrides(args.set)
        stray = sorted(set(sets) - {cmd.section})
        if stray:
            raise ConfigError(f"--set {stray[0]}.KEY=VALUE needs --config FILE (a pipeline YAML); "
                              f"without one only --set {cmd.section}.KEY=VALUE applies")
        values = {**sets.get(cmd.section, {}), **given}
    need = missing(cmd.fields, values)
    if need:
        alt = " (or give --config FILE, a pipeline YAML)" if cmd.section else ""
        raise PaddleQAError(f"the following arguments are required: {', '.join(need)}{alt}")
    return from_dict(cmd.fields.cls, values)


def _run_stage(cmd: StageCommand, args: argparse.Namespace) -> int:
    return cmd.run(build_config(cmd, args), args)


def add_stage_command(sub, name: str, cmd: StageCommand) -> argparse.ArgumentParser:
    """The subparser of one stage command: --config/--set, --resume/--nproc, the config's fields."""
    cls = cmd.fields.cls
    description = f"{cmd.help}.\n\nFlags are the fields of {cls.__name__}."
    if cmd.section:
        description += (f" With --config, the {cmd.section} stage of that pipeline YAML, wired as "
                        f"`paddleqa run` wires it, gives every value the flags do not.")
    p = sub.add_parser(name, help=cmd.help, description=description)
    if cmd.section:
        p.add_argument("--config", required=cmd.config_required, metavar="FILE",
                       help="pipeline YAML (see configs/)" + ("" if cmd.config_required else
                                                              ": take this stage's settings from it"))
        p.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", default=[],
                       help=f"override a value of the pipeline YAML, e.g. --set {cmd.section}.KEY=VALUE "
                            "(repeatable)")
    if cmd.training:
        p.add_argument("--resume", action="store_true",
                       help="continue from the last checkpoint in the output folder")
        add_nproc(p)
    add_fields(p, cmd.fields, config_fills=bool(cmd.section))
    p.set_defaults(func=functools.partial(_run_stage, cmd))
    return p


def adder(name: str) -> Callable[[Any], None]:
    """``COMMANDS`` entry of a stage command: adds its subparser."""
    return lambda sub: add_stage_command(sub, name, STAGE_COMMANDS[name])


def add_vocab(sub) -> None:
    p = sub.add_parser("vocab", help="build an offline tokenizer")
    vsub = p.add_subparsers(dest="vocab_command", metavar="ACTION", required=True)
    add_stage_command(vsub, "build", VOCAB_BUILD)
