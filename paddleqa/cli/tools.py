"""The commands that are not one stage config: data check/fetch/simplify, score, ``run`` (the chain)
and ``cache`` (list/clean the on-disk caches)."""
from __future__ import annotations

import argparse
import dataclasses
import logging
import time
from pathlib import Path

from .. import pipeline
from ..core.config import merge, parse_overrides, read_yaml
from ..core.errors import PaddleQAError
from ..core.io import write_json
from ..core.settings import ContextLimit
from ..core.stats import DEFAULT_RESAMPLES, DEFAULT_SEED, scores_with_intervals
from ..runtime import caches
from ..runtime.compare import read_predictions
from ..text import cmrc2018
from ..text.dataset import gold_references, load_examples, to_squad_json
from .commands import SIMPLIFY, add_stage_command
from .flags import flag_help
from .output import print_json

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- data check, data fetch-cmrc
def add_data(sub) -> None:
    p = sub.add_parser("data", help="inspect SQuAD/CMRC data files")
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    c = dsub.add_parser("check", help="validate, repair and summarise a SQuAD/CMRC JSON file")
    c.add_argument("file", help="SQuAD/CMRC JSON file (never modified)")
    c.add_argument("--mode", choices=("train", "eval"), default="train",
                   help="train: answers must be located in the context; eval: only texts are needed")
    limit = dataclasses.fields(ContextLimit)[0]  # max_context_chars, as every stage has it
    c.add_argument("--max-context-chars", type=int, default=limit.default, metavar="N",
                   help=flag_help(limit))
    c.add_argument("--max-offset-shift", type=int, default=3,
                   help="repair answer_start off by at most this many characters (default 3)")
    c.add_argument("--out", help="write the repaired, validated data to this JSON file")
    c.add_argument("--json", action="store_true", help="print the full report as JSON")
    c.set_defaults(func=_cmd_data_check)
    f = dsub.add_parser("fetch-cmrc", help="download CMRC 2018 train/dev with sha256 checks")
    f.add_argument("--out", required=True, help="folder to put the files in (then set CMRC2018_DIR)")
    f.add_argument("--base-url", default=None,
                   help="where the files live (default: the dataset's own repository; file:// works)")
    f.set_defaults(func=_cmd_fetch_cmrc)
    add_stage_command(dsub, "simplify", SIMPLIFY)


def _cmd_fetch_cmrc(args) -> int:
    files = cmrc2018.fetch(args.out, args.base_url or cmrc2018.DEFAULT_BASE_URL)
    print_json({"files": files, "next": f"export CMRC2018_DIR={args.out}"})
    return 0


def _cmd_data_check(args) -> int:
    examples, report = load_examples(args.file, mode=args.mode, max_offset_shift=args.max_offset_shift,
                                     max_context_chars=args.max_context_chars)
    if args.out:
        if Path(args.out).resolve() == Path(args.file).resolve():
            raise PaddleQAError("--out must differ from the input file (the input is never modified)")
        write_json(args.out, to_squad_json(examples))
    if args.json:
        print_json(report.summary())
    else:
        print(report.format_text())
        if args.out:
            print(f"repaired data written to {args.out}")
    return 0 if examples else 1


# ---------------------------------------------------------------- score
def add_score(sub) -> None:
    p = sub.add_parser("score", help="official CMRC 2018 EM/F1 of leaderboard-format predictions, "
                       "with bootstrap 95%% intervals")
    p.add_argument("gold", help="SQuAD/CMRC JSON with reference answers")
    p.add_argument("pred", help='predictions JSON: {"question_id": "answer text", ...}')
    p.add_argument("--resamples", type=int, default=DEFAULT_RESAMPLES,
                   help=f"bootstrap resamples for em_ci95/f1_ci95 (0 = none; default {DEFAULT_RESAMPLES})")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"bootstrap seed (default {DEFAULT_SEED})")
    p.set_defaults(func=_cmd_score)


def _cmd_score(args) -> int:
    if args.resamples < 0:
        raise PaddleQAError(f"--resamples must be >= 0, got {args.resamples}")
    refs = gold_references(args.gold)
    result = scores_with_intervals(refs, read_predictions(args.pred), resamples=args.resamples,
                                   seed=args.seed)
    if result["missing"]:
        log.warning("%d of %d questions have no prediction (scored 0)", result["missing"], result["total"])
    print_json(result)
    return 0


# ---------------------------------------------------------------- run (pipeline)
def add_run(sub) -> None:
    p = sub.add_parser("run", help="run the whole pipeline from one YAML (skips finished stages)")
    p.add_argument("config", help="pipeline YAML (see configs/)")
    p.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", default=[],
                   help="override a config value (repeatable)")
    p.add_argument("--only", choices=pipeline.STAGES, help="run just this stage")
    p.set_defaults(func=_cmd_run)


def _cmd_run(args: argparse.Namespace) -> int:
    doc = merge(read_yaml(args.config), parse_overrides(args.set))
    results = pipeline.run(doc, only=args.only)
    print_json(run_summary(results, doc["run_dir"]))
    return 0


def run_summary(results: dict[str, dict], run_dir: str) -> dict:
    """What ``paddleqa run`` prints: the teacher's dev scores, then each later stage's headline."""
    summary = dict(results)
    final = results.get("evaluate")
    if final:
        summary = {"em": final["em"], "f1": final["f1"], "average": final["average"],
                   "total": final["total"], "run_dir": run_dir}
        for name in ("distill", "prune"):  # compressed students, side by side with the teacher
            m = results.get(name)
            if m:
                summary[name] = {k: m.get(k) for k in (
                    "params", "non_embedding_ratio", "flops_per_query", "flops_seq_len", "dev_em", "dev_f1",
                    "f1_retention")}
        q = results.get("quantize")
        if q:
            summary["quantize"] = {k: q.get(k) for k in ("method", "quantized_f1", "fp32_f1",
                                                         "f1_delta", "file_bytes")}
        for name in ("export", "export_int8", "export_teacher"):
            if results.get(name):
                summary[name] = {k: v["path"] for k, v in results[name]["bundles"].items()}
                if results[name].get("onnx"):
                    summary[name]["onnx"] = results[name]["onnx"]["path"]
        b = results.get("bench")
        if b:
            summary["bench_latency_ms_p50"] = {
                f"{r['artifact']} ({r['backend']}, {s['seq_len']})": s.get("latency_ms_p50")
                for r in b["rows"] for s in r.get("settings", []) if r["threads"] == 1}
    if results.get("report"):
        summary["report"] = results["report"]["report_html"]
    return summary


# ---------------------------------------------------------------- cache list, cache clean
def add_cache(sub) -> None:
    p = sub.add_parser("cache", help="list or remove the on-disk caches (features, packed corpora, "
                                     "teacher outputs)")
    csub = p.add_subparsers(dest="cache_command", metavar="ACTION", required=True)
    dir_help = ("the stages' cache_dir (default: $PADDLEQA_CACHE/features, else "
                "~/.cache/paddleqa/features)")
    ls = csub.add_parser("list", help="every cache entry: kind, size on disk, last use")
    ls.add_argument("--cache-dir", default=None, help=dir_help)
    ls.set_defaults(func=_cmd_cache_list)
    c = csub.add_parser("clean", help="remove cache entries (each is rebuilt by the run that needs it); "
                                      "entries in use by another process are kept")
    c.add_argument("--cache-dir", default=None, help=dir_help)
    c.add_argument("--kind", action="append", choices=caches.KINDS, default=None,
                   help="only this kind (repeatable; default: all)")
    c.add_argument("--older-than", type=float, default=0.0, metavar="DAYS",
                   help="only entries last used more than DAYS days ago (default 0: all)")
    c.add_argument("--dry-run", action="store_true", help="report what would be removed, remove nothing")
    c.set_defaults(func=_cmd_cache_clean)


def _cache_root(args) -> Path:
    from ..text.features import default_cache_dir

    return Path(args.cache_dir) if args.cache_dir else default_cache_dir()


def _cmd_cache_list(args) -> int:
    root, now = _cache_root(args), time.time()
    found = caches.entries(root)
    total = sum(e.disk_bytes for e in found)
    print_json({"root": str(root), "entries": [e.as_json(now) for e in found],
                "total_bytes": total, "total_mib": round(total / 2**20, 1)})
    return 0


def _cmd_cache_clean(args) -> int:
    print_json(caches.clean(_cache_root(args), kinds=tuple(args.kind or caches.KINDS),
                            older_than_days=args.older_than, dry_run=args.dry_run))
    return 0
