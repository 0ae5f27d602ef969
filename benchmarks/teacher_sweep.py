"""Teacher ablation: which ingredients make a better from-scratch teacher, judged on the validation split.

    python benchmarks/teacher_sweep.py [--config configs/cmrc2018.yaml] [--steps 200]
                                       [--factors base,pretrain,...,hybrid_electra]
    python benchmarks/teacher_sweep.py --report-only

Every variant is the config's teacher with one ingredient changed, trained for the same number
of optimizer steps (``--steps``) in its own run folder under ``runs/teacher-sweep/STEPSsteps/``, and scored
with the official CMRC metric on the run's **validation split** (``data.validation_share`` of the
training contexts, see docs/configs.md). The dev file is never read: settings chosen here would
otherwise be tuned to the set the headline reports. Each variant's F1 is compared with the base
(a paired bootstrap interval over the same validation questions), which is the "effect" column.

Resumable: a variant whose teacher finished is skipped (the pipeline's stage skip), an
interrupted one resumes from its last checkpoint. The record ``benchmarks/teacher_sweep.json``
keeps one table per budget (``--steps``), and a call adds its rows to its budget's table, so arms
can run in separate calls; it writes the "teacher-sweep" section of BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.report import machine_info, record_main, run_logged  # noqa: E402
from benchmarks.teacher_factors import ARM_OF, BASE, DRCD, FACTORS, SIMPLIFIED  # noqa: E402

RECORD = ROOT / "benchmarks" / "teacher_sweep.json"
SWEEP_DIR = "runs/teacher-sweep"


def _simplify_drcd(env: dict[str, str], log_path: Path) -> None:
    """DRCD in Simplified Chinese for the drcd variant (`paddleqa data simplify`, made once)."""
    from paddleqa.core.config import expand_env

    for name in ("dev", "test"):
        out = ROOT / SIMPLIFIED / f"drcd_{name}.json"
        if not out.exists():
            src = ROOT / expand_env(f"{DRCD}/DRCD_{name}.json")
            run_logged([sys.executable, "-m", "paddleqa.cli", "data", "simplify", str(src), "--out", str(out)],
                       env, log_path)


def variant_sets(name: str, steps: int, base_sets: list[str]) -> list[str]:
    from paddleqa.core.config import expand_env

    run = f"{SWEEP_DIR}/{steps}steps/{name}"  # one folder per budget: budgets never share a run
    sets = [f"run_dir={run}", f"finetune.max_steps={steps}", "finetune.eval_each_epoch=false",
            "finetune.dev_file=", *BASE, *base_sets]
    # ${VAR:-default} is expanded here: inside a YAML list, `{` would start a mapping
    return sets + [expand_env(s.replace("{run}", run)) for s in FACTORS[name][1]]


def run_variant(name: str, args, env: dict[str, str], log_path: Path) -> dict:
    from paddleqa import pipeline
    from paddleqa.core.config import merge, parse_overrides, read_yaml
    from paddleqa.core.freshness import finished_reason
    from paddleqa.stages.runner import training_done

    sets = variant_sets(name, args.steps, args.set)
    doc = merge(read_yaml(ROOT / args.config), parse_overrides(sets))
    cfg = pipeline.build_plan(doc)
    flags = [x for s in sets for x in ("--set", s)]
    paddleqa = [sys.executable, "-m", "paddleqa.cli"]
    started = time.time()
    # the pipeline's order: data (+ split), augment, vocab, pretrain, then the teacher
    wanted = {"data": True, "augment": cfg.augment is not None and cfg.augment.teacher,
              "vocab": cfg.vocab is not None}
    for stage in ("data", "augment", "vocab"):
        if wanted[stage]:
            run_logged(paddleqa + ["run", args.config, "--only", stage, *flags], env, log_path)
    # The training stages run data-parallel through their own commands, which --resume from a
    # checkpoint but retrain a finished run: a finished one (its manifest matches) is skipped here.
    pre = cfg.pretrain
    if pre is not None and finished_reason(pre.output_dir, pre, pre.inputs()) is not None:
        run_logged(paddleqa + ["pretrain", "--config", args.config, "--resume", "--nproc", str(args.nproc),
                         *flags], env, log_path)
    if not training_done(cfg.finetune):
        run_logged(paddleqa + ["finetune", "--config", args.config, "--resume", "--nproc", str(args.nproc),
                         *flags], env, log_path)
    out = Path(cfg.finetune.output_dir)
    m = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    pre = {}
    if cfg.pretrain is not None:
        pm = Path(cfg.pretrain.output_dir) / "metrics.json"
        pre = json.loads(pm.read_text(encoding="utf-8")) if pm.exists() else {}
    return {
        "name": name, "change": FACTORS[name][0], "overrides": FACTORS[name][1],
        "params": m["params"], "train_questions": m["train_questions"], "steps": m["global_step"],
        "validation_em": m["validation_em"], "validation_f1": m["validation_f1"],
        "validation_total": m["validation_total"], "train_seconds": m["train_seconds"],
        "pretrain_seconds": pre.get("train_seconds"), "pretrain_train_loss": pre.get("train_loss"),
        "pretrain_probe_loss": [pre.get("probe_loss_before"), pre.get("probe_loss_after")] if pre else None,
        "wall_seconds_this_call": round(time.time() - started, 1),
        "predictions": str(out / "validation_predictions.json"),
        "validation_file": cfg.finetune.validation_file,
    }


REFERENCE = "reference"  # the row --reference adds


def reference_row(folder: Path, steps: int) -> dict:
    """The row of a finished finetune folder not trained by this call (``--reference``): its
    metrics, its validation predictions and split. Its step count must be the budget's, or the
    comparison would not be at equal steps."""
    metrics_path, preds = folder / "metrics.json", folder / "validation_predictions.json"
    resolved = folder / "resolved_config.yaml"
    for path in (metrics_path, preds, resolved):
        if not path.exists():
            raise SystemExit(f"--reference {folder}: {path.name} is missing; pass a finished finetune "
                             "folder that scored a validation split (e.g. runs/cmrc2018/teacher)")
    m = json.loads(metrics_path.read_text(encoding="utf-8"))
    if m.get("global_step") != steps:
        raise SystemExit(f"--reference {folder} trained {m.get('global_step')} steps, not --steps "
                         f"{steps}; compare it at its own budget (--steps {m.get('global_step')})")
    import yaml

    cfg = yaml.safe_load(resolved.read_text(encoding="utf-8"))
    arch = cfg.get("arch") or {}
    change = (f"`{folder.as_posix()}`, not trained by this call: {arch.get('kind')} "
              f"{arch.get('conv_blocks', 0)} conv + {arch.get('num_layers')} attention layers at "
              f"{arch.get('hidden_size')} wide, word embeddings from {arch.get('embeddings_from') or 'random'}, "
              f"{m['epochs']} epochs")
    return {"name": REFERENCE, "change": change, "overrides": [], "params": m["params"],
            "train_questions": m["train_questions"], "steps": m["global_step"],
            "validation_em": m["validation_em"], "validation_f1": m["validation_f1"],
            "validation_total": m["validation_total"], "train_seconds": m["train_seconds"],
            "pretrain_seconds": None, "pretrain_train_loss": None, "pretrain_probe_loss": None,
            "wall_seconds_this_call": 0.0, "predictions": str(preds),
            "validation_file": cfg["validation_file"]}


def with_effects(rows: list[dict], resamples: int = 1000) -> list[dict]:
    """Each variant's F1 minus the base's (``f1_effect``) and minus each row it is an arm of
    (``arms``: ``{"vs", "delta", "ci95"}``), with paired bootstrap 95% intervals. Rows are paired
    only on the same validation split (the same file hash); a missing base leaves ``f1_effect``
    out and keeps the arm comparisons."""
    from paddleqa.core.manifest import sha256_path
    from paddleqa.core.metrics import question_scores
    from paddleqa.core.stats import paired_bootstrap
    from paddleqa.text.dataset import gold_references

    here = [r for r in rows if Path(r["predictions"]).exists()]
    if not here:
        return rows
    split = sha256_path(here[0]["validation_file"])
    gold = gold_references(here[0]["validation_file"])
    # a row of an earlier call whose predictions are gone (another machine) keeps its stored effects
    by_name = {r["name"]: r for r in here if sha256_path(r["validation_file"]) == split}
    scored: dict[str, list[float]] = {}

    def f1s(row):  # per-question F1 of a row, scored once (the base and the hybrid are reused)
        if row["name"] not in scored:
            preds = json.loads(Path(row["predictions"]).read_text(encoding="utf-8"))
            per_question = question_scores(gold, preds)
            scored[row["name"]] = [100 * per_question[q][1] for q in sorted(per_question)]
        return scored[row["name"]]

    def paired(row, other):
        return paired_bootstrap(f1s(row), f1s(other), resamples=resamples, seed=0)

    # each variant's run folder holds its own copy of the split: the same questions when the same
    # training file was split (the split depends on the passages only)
    base = by_name.get("base")
    for r in by_name.values():
        if base is not None and r is not base:
            diff = paired(r, base)
            r["f1_effect"], r["f1_effect_ci95"] = diff["delta"], diff["ci95"]
        # every variant is also an arm of the --reference row, when the budget has one
        against = [*ARM_OF.get(r["name"], ()), *([REFERENCE] if r["name"] != REFERENCE else [])]
        arms = [{"vs": o, **{k: d[k] for k in ("delta", "ci95")}}
                for o in against if o in by_name for d in [paired(r, by_name[o])]]
        if arms:
            r["arms"] = arms
    return rows


def merged(previous: dict | None, call: dict) -> dict:
    """The record after a call: one entry per budget (``steps``), a budget's rows from earlier calls
    kept unless this call re-measured them, so arms run in separate calls make one table."""
    budgets = {} if previous is None else previous.get("budgets", {str(previous.get("steps")): previous})
    old = budgets.get(str(call["steps"]), {}).get("rows", [])
    names = {r["name"] for r in call["rows"]}
    rows = [r for r in old if r["name"] not in names] + call["rows"]
    order = list(FACTORS)
    rows.sort(key=lambda r: -1 if r["name"] == REFERENCE else
              order.index(r["name"]) if r["name"] in order else len(order))
    rows = with_effects(rows)
    _keep_earlier_arms(rows, {r["name"]: r for r in old if r["name"] in names})
    budgets[str(call["steps"])] = {**call, "rows": rows}
    return {"budgets": budgets}


def _keep_earlier_arms(rows: list[dict], before: dict[str, dict]) -> None:
    """A re-measured row keeps its earlier comparisons with rows whose predictions are gone (an
    earlier machine) when it reproduced its earlier scores exactly (training is deterministic),
    so a re-run does not drop a measured effect; such an arm says ``"earlier_call": true``."""
    for r in rows:
        prev = before.get(r["name"])
        if not prev or (prev.get("validation_em"), prev.get("validation_f1")) != (
                r.get("validation_em"), r.get("validation_f1")):
            continue
        now = {a["vs"] for a in r.get("arms") or []}
        kept = [{**a, "earlier_call": True} for a in prev.get("arms") or [] if a["vs"] not in now]
        if kept:
            r["arms"] = (r.get("arms") or []) + kept


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/cmrc2018.yaml")
    ap.add_argument("--steps", type=int, default=200, help="optimizer steps per variant (same for all)")
    ap.add_argument("--factors", default=",".join(FACTORS), help=f"variants to run: {', '.join(FACTORS)}")
    ap.add_argument("--nproc", type=int, default=2, help="data-parallel training processes")
    ap.add_argument("--set", action="append", default=[], help="override for every variant SECTION.KEY=VALUE")
    ap.add_argument("--reference", default=None, metavar="DIR",
                    help="a finished finetune folder (e.g. runs/cmrc2018/teacher, the headline teacher) "
                    "trained for --steps steps: a row every variant is compared with, paired, so the "
                    "config's teacher need not be retrained as a variant")
    ap.add_argument("--out", default="BENCHMARKS.md")
    ap.add_argument("--report-only", action="store_true", help="rewrite the section from the record")
    args = ap.parse_args(argv)
    names = [n.strip() for n in args.factors.split(",") if n.strip()]
    unknown = sorted(set(names) - set(FACTORS))
    if unknown:
        ap.error(f"unknown factor(s) {', '.join(unknown)}; known: {', '.join(FACTORS)}")
    result = record_main(args.report_only, RECORD, "teacher-sweep", lambda: measure(args, argv, names),
                         render, ROOT / args.out)
    rows = result["budgets"][str(args.steps)]["rows"] if not args.report_only else []
    print(json.dumps([{k: r.get(k) for k in ("name", "validation_f1", "f1_effect", "arms")} for r in rows],
                     indent=2, ensure_ascii=False))
    return 0


def measure(args, argv: list[str] | None, names: list[str]) -> dict:
    """Train every variant in ``names`` (finished ones are skipped) and compare them with the base."""
    (ROOT / SWEEP_DIR).mkdir(parents=True, exist_ok=True)
    log_path = ROOT / SWEEP_DIR / "sweep.log"
    # MKL as bundled picks a slow path on AMD CPUs unless told otherwise (see README, Performance);
    # data-parallel processes get one thread each.
    threads = "1" if args.nproc > 1 else str(os.cpu_count() or 1)
    env = {**os.environ, "MKL_DEBUG_CPU_TYPE": os.environ.get("MKL_DEBUG_CPU_TYPE", "5"),
           "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    if any(SIMPLIFIED in s for name in names for s in FACTORS[name][1]):
        _simplify_drcd(env, log_path)
    # the reference is read (and checked) before anything trains
    reference = [reference_row(Path(args.reference), args.steps)] if args.reference else []
    started = time.time()
    rows = reference + [run_variant(name, args, env, log_path) for name in names]
    command = "python benchmarks/teacher_sweep.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    call = {"command": command.strip(), "machine": machine_info(), "config": args.config,
            "steps": args.steps, "nproc": args.nproc, "common_overrides": args.set,
            "wall_seconds_this_call": round(time.time() - started, 1), "rows": rows}
    return merged(json.loads(RECORD.read_text(encoding="utf-8")) if RECORD.exists() else None, call)


def _cost(row: dict) -> float:
    """A variant's training seconds, its pre-training included."""
    return row["train_seconds"] + (row.get("pretrain_seconds") or 0)


def headline_steps() -> int | None:
    """The headline teacher's optimizer steps, from its benchmark record (``benchmarks/teacher.py``)."""
    path = ROOT / "benchmarks" / "teacher.json"
    return json.loads(path.read_text(encoding="utf-8"))["global_step"] if path.exists() else None


def render(record: dict) -> str:
    """The section: one table per budget, the largest (closest to the headline's) first."""
    budgets = sorted(record["budgets"].values(), key=lambda b: -b["steps"])
    headline = headline_steps()
    return "\n".join(["## Teacher ablation on the validation split", "",
                      "Each variant is the base (ERNIE 4L-128H with the config's other teacher settings; "
                      "the config's teacher is now the winner) with one ingredient changed, trained for "
                      "the same number of optimizer steps, scored with the official CMRC 2018 metric on "
                      "the validation split (held-out training contexts; the dev set is not read). Effect "
                      "= variant F1 minus the base's on the same questions, with a paired bootstrap 95% "
                      "interval. Arms of the hybrid (size, pre-training, the trained table) are also "
                      "compared, paired, with the rows they vary, next to their training time, since the "
                      "teacher's budget is wall time. "
                      + (f"The headline teacher trains for {headline:,} steps; " if headline else "")
                      + "a short equal budget favours what learns fastest, so the recipe is decided at "
                      "the largest budget below.", "",
                      *[_render_budget(b, headline) for b in budgets]])


def _render_budget(r: dict, headline: int | None) -> str:
    m = r["machine"]
    rows = r["rows"]
    share = f" ({r['steps'] / headline:.0%} of the headline teacher's)" if headline else ""
    lines = [
        f"### {r['steps']} steps per variant{share}",
        "",
        f"Last produced by `{r['command']}` (raw record: `benchmarks/teacher_sweep.json`; rows of "
        f"earlier calls at this budget are kept). Machine: {m['cpu']} ({m['cores']} cores); "
        f"{r['nproc']} data-parallel training process(es).",
        "",
        "| variant | change | params | train questions | validation EM | validation F1 | effect on F1 [95% CI] | "
        "training min | pre-training min |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        eff = "" if row.get("f1_effect") is None else (
            f"{row['f1_effect']:+.2f} [{row['f1_effect_ci95'][0]:+.2f}, {row['f1_effect_ci95'][1]:+.2f}]")
        pre = "" if not row.get("pretrain_seconds") else f"{row['pretrain_seconds'] / 60:.1f}"
        change = FACTORS[row["name"]][0] if row["name"] in FACTORS else row["change"]
        lines.append(f"| {row['name']} | {change} | {row['params']:,} | {row['train_questions']:,} | "
                     f"{row['validation_em']:.2f} | {row['validation_f1']:.2f} | {eff} | "
                     f"{row['train_seconds'] / 60:.1f} | {pre} |")
    lines.append("")
    by_name = {r["name"]: r for r in rows}
    for row in rows:
        for arm in _arms(row):
            lo, hi = arm["ci95"]
            cost = (f"at {_cost(row) / _cost(by_name[arm['vs']]):.1f}x its training time (pre-training "
                    "included)." if not arm.get("earlier_call") else
                    "compared in an earlier call, whose scores this row reproduced exactly (its "
                    "training times come from different calls, so no time ratio).")
            lines.append(f"- `{row['name']}` vs `{arm['vs']}` (same questions, paired): F1 "
                         f"{arm['delta']:+.2f} [{lo:+.2f}, {hi:+.2f}], {cost}")
    if any(_arms(r) for r in rows):
        lines.append("")
    return "\n".join(lines)


def _arms(row: dict) -> list[dict]:
    """A row's arm comparisons; records before ``arms`` kept one as ``arm_of``/``f1_vs_arm_of``."""
    if "arms" in row:
        return row["arms"]
    if row.get("f1_vs_arm_of") is None:
        return []
    return [{"vs": row["arm_of"], "delta": row["f1_vs_arm_of"], "ci95": row["f1_vs_arm_of_ci95"]}]


if __name__ == "__main__":
    sys.exit(main())
