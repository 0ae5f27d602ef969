"""``paddleqa autocompress``: state a budget, get a student plan, its frontier and a runnable YAML.

The search, in the order :func:`run` reads:

1. every plan of the space (:mod:`.space`) is built with random weights in the form the chain
   deploys it (conv channels pruned to ``prune.flops_ratio`` when the run prunes them), exported
   for the backend and timed side by side with the teacher's fp32 forms (:mod:`.timing`, through
   :mod:`.latency`'s table, cached per machine);
2. only plans inside the budget stay (:mod:`.budget`: latency or speed-up, file size or size
   ratio); if none does, the error names the closest plan and by how much it misses;
3. the ``shortlist`` plans with the most FLOPs (the most capacity the budget allows) are
   distilled for ``short_steps`` and scored on the validation split;
4. in order of that score, plans are distilled at the full budget (``full_steps``, by default the
   distill section's ``max_steps``) until one is within ``max_f1_drop`` validation F1 of the
   teacher (Intel Neural Compressor's accuracy-aware tuning: stop when the criterion holds), at
   most ``full_trials`` of them; each gets a labels-only twin (``kd_gain``);
5. the chosen plan is written as ``plan.yaml`` (the run's YAML with ``distill.student`` and
   ``export.embeddings`` set: ``paddleqa run plan.yaml`` trains and deploys it), with the
   frontier table and plot (:mod:`.frontier`), metrics.json and a manifest.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

from .. import pipeline
from ..core.config import opt, to_dict
from ..core.errors import ConfigError, PaddleQAError
from ..core.io import write_json, write_yaml
from ..core.manifest import write_manifest
from ..text.features import feature_params_for
from . import frontier, latency, trials
from .budget import budget_text, inside
from .timing import measure
from .space import Candidate, SearchSpace, candidates

log = logging.getLogger(__name__)


@dataclasses.dataclass
class AutocompressConfig:
    """A budget and a search space; the pipeline YAML's ``autocompress:`` section."""

    latency_ms: float = opt(0.0, help="batch-1 latency budget on the backend, ms (0 = none)")
    speedup: float = opt(0.0, help="at least this many times lower latency than the teacher's "
                         "fastest fp32 form, timed side by side (0 = none)")
    size_mib: float = opt(0.0, help="deployed file budget, MiB (0 = none)")
    smaller: float = opt(0.0, help="at least this many times smaller file than the teacher's "
                         "smallest fp32 file, as the headline judges it (0 = none)")
    max_f1_drop: float = opt(3.0, help="accuracy criterion: validation F1 points the plan may lose "
                             "against the teacher")
    backend: str = opt("lite", help=f"where the student runs: {', '.join(latency.BACKENDS)} "
                       "(lite: timed on the x86 .nb, sized by the ARM .nb)")
    sized_on: str = opt("", help="the backend whose shipped file the size budget judges, when it "
                        "is not the timed one ('' = backend); lite-int8: the ARM .nb with int8 "
                        "weights (and the plan's tables), the file the headline ships")
    seq_len: int = opt(0, help="window length timed (0 = the teacher's)")
    threads: int = opt(1, help="CPU threads timed")
    repeats: int = opt(10, help="timed runs per plan")
    space: SearchSpace = opt(factory=SearchSpace, help="the plans considered")
    shortlist: int = opt(3, help="plans inside the budget distilled for short_steps")
    short_steps: int = opt(150, help="distillation steps of a shortlisted plan")
    full_trials: int = opt(2, help="at most this many plans distilled at the full budget")
    full_steps: int = opt(0, help="steps of a full trial (0 = the distill section's max_steps)")
    kd_gain: bool = opt(True, help="train each full trial's labels-only twin: the KD gain column")
    time_only: bool = opt(False, help="time the plans and apply the budget, train nothing: "
                          "frontier.md lists the plans inside it and the shapes a search would train")
    nproc: int = opt(1, help="data-parallel processes of each trial")
    out_dir: str = opt("", help="search folder (default RUN_DIR/autocompress)")
    latency_cache: str = opt(".cache/paddleqa/latency", help="folder of the per-machine latency "
                             "tables", result=False)

    def __post_init__(self) -> None:
        if self.backend not in latency.BACKENDS:
            raise ValueError(f"unknown backend {self.backend!r}; valid: {', '.join(latency.BACKENDS)}")
        if self.sized_on and self.sized_on not in latency.BACKENDS:
            raise ValueError(f"unknown sized_on backend {self.sized_on!r}; valid: "
                             f"{', '.join(latency.BACKENDS)} (or empty: the timed backend's file)")
        if self.latency_ms <= 0 and self.speedup <= 0:
            raise ValueError("give a speed budget: latency_ms (--latency-ms X) or speedup (--speedup K)")
        for name in ("latency_ms", "speedup", "size_mib", "smaller", "max_f1_drop"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("threads", "repeats", "shortlist", "short_steps", "full_trials", "nproc"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.seq_len < 0 or self.full_steps < 0:
            raise ValueError("seq_len and full_steps must be >= 0")

    @property
    def size_backend(self) -> str:
        """The backend whose shipped file is sized (``sized_on``, else the timed one)."""
        return self.sized_on or self.backend


# ------------------------------------------------------------------------------ the search
def shape_name(p: Candidate) -> str:
    """The name of ``p``'s student shape: its name with fp32 tables (the table form is an export
    choice, so both forms of a shape share their trials)."""
    return Candidate(**{**dataclasses.asdict(p), "embeddings": "fp32"}).name


def shapes(ok: list[dict]) -> list[dict]:
    """One row per student shape inside the budget (a shape is trained once: the table form is an
    export choice), fp32 tables where the budget allows, most FLOPs first."""
    best: dict[str, dict] = {}
    for r in ok:
        key = shape_name(Candidate(**r["plan"]))
        if key not in best or (r["plan"]["embeddings"] == "fp32" != best[key]["plan"]["embeddings"]):
            best[key] = r
    return sorted(best.values(), key=lambda r: (-r["flops"], -r["params"], r["latency_ms"]))


def _teacher_predictions(base, teacher_dir: Path, out: Path) -> tuple[str, dict]:
    """The teacher's validation predictions, scored here with the trials' post-processing."""
    from ..runtime.evaluate import EvaluateConfig, run as evaluate

    folder = out / "teacher-validation"
    if not (folder / "metrics.json").exists():
        evaluate(EvaluateConfig(model=str(teacher_dir), data_file=base.validation_file,
                                out_dir=str(folder), n_best=base.n_best,
                                max_answer_length=base.max_answer_length,
                                max_context_chars=base.max_context_chars, resamples=0))
    import json

    return str(folder / "predictions.json"), json.loads((folder / "metrics.json").read_text(encoding="utf-8"))


def train_plans(cfg: AutocompressConfig, ranked: list[dict], ctx: dict) -> tuple[dict, str | None]:
    """Short trials of the shortlist, then full trials in order of their F1 until the criterion
    holds. Returns (name -> trial records, the chosen plan's name or None)."""
    trained: dict[str, dict] = {}
    run = lambda p, steps, sub, **kw: trials.run_trial(  # noqa: E731
        ctx["base_yaml"], ctx["doc"], p, steps, ctx["out"] / "trials" / shape_name(p) / sub,
        nproc=cfg.nproc, **kw)
    for r in ranked[: cfg.shortlist]:
        p = Candidate(**r["plan"])
        trained[r["name"]] = {"short": run(p, cfg.short_steps, f"short-{cfg.short_steps}")}
    order = sorted(trained, key=lambda n: -(trained[n]["short"]["validation_f1"] or 0))
    paired, t_preds, t_f1 = ctx["paired"], ctx["teacher_predictions"], ctx["teacher_f1"]
    chosen = None
    for name in order[: cfg.full_trials]:
        p = Candidate(**next(r["plan"] for r in ranked if r["name"] == name))
        t = trained[name]
        t["full"] = run(p, ctx["full_steps"], f"full-{ctx['full_steps']}")
        t["vs_teacher"] = paired.delta(t["full"]["predictions"], t_preds)
        if cfg.kd_gain:
            t["labels_only"] = run(p, ctx["full_steps"], f"labels-{ctx['full_steps']}", labels_only=True)
            t["kd_gain"] = paired.delta(t["full"]["predictions"], t["labels_only"]["predictions"])
        drop = t_f1 - t["full"]["validation_f1"]
        log.info("%s: validation F1 %.2f (teacher %.2f, drop %.2f; criterion %.2f)", name,
                 t["full"]["validation_f1"], t_f1, drop, cfg.max_f1_drop)
        if drop <= cfg.max_f1_drop:
            chosen = name
            break
    return trained, chosen


def run(cfg: AutocompressConfig, doc: dict[str, Any]) -> dict:
    """The whole search (see the module doc); ``doc``: the pipeline YAML as a dict."""
    started = time.time()
    doc = {k: v for k, v in doc.items() if k != "autocompress"}
    plan = pipeline.build_plan(doc, enable=("distill",))
    base, teacher_dir = plan.distill, Path(plan.distill.teacher)
    if not (teacher_dir / "config.json").exists():
        raise ConfigError(f"teacher {teacher_dir} does not exist: train it first "
                          f"(`paddleqa run CONFIG --only finetune`) or set distill.teacher")
    out = Path(cfg.out_dir or plan.run_dir / "autocompress")
    out.mkdir(parents=True, exist_ok=True)
    seq_len = cfg.seq_len or feature_params_for(str(teacher_dir)).max_seq_len  # timed length
    forms = None if latency.BACKENDS[cfg.size_backend].int8_tables else ("fp32",)
    # The budget is the deployed model's: a run that prunes conv channels after distillation
    # deploys each plan with prune.flops_ratio of its FLOPs, so plans are timed in that form.
    pruned = plan.prune.flops_ratio if plan.prune is not None and plan.prune.prunes_student else 1.0
    if pruned < 1:
        log.info("the run prunes conv channels to %g of a student's FLOPs: plans are timed pruned so",
                 pruned)
    train_len = feature_params_for(str(teacher_dir)).max_seq_len
    rows, teacher = measure(cfg, candidates(cfg.space, embedding_forms=forms, pruned_flops=pruned),
                            teacher_dir, out, seq_len, train_len)
    try:
        ranked = shapes(inside(rows, cfg))
    except PaddleQAError:  # the timed plans are kept for the user to look at, then the message
        write_json(out / "frontier.json", {"teacher": teacher, "rows": rows, "trained": {}})
        raise
    log.info("%d of %d plans inside the budget (%s): %d student shapes", sum(not r["misses"] for r in rows),
             len(rows), budget_text(cfg), len(ranked))
    if cfg.time_only:
        return _write_timed(cfg, out, rows, teacher, ranked, teacher_dir, started)
    base_yaml = out / "base.yaml"
    write_yaml(doc, base_yaml)
    t_preds, t_metrics = _teacher_predictions(base, teacher_dir, out)
    teacher["validation_f1"] = t_metrics["f1"]
    ctx = {"base_yaml": base_yaml, "doc": doc, "out": out, "paired": trials.Paired(base.validation_file),
           "teacher_predictions": t_preds, "teacher_f1": t_metrics["f1"],
           "full_steps": cfg.full_steps or base.max_steps, "teacher_dir": teacher_dir}
    trained, chosen = train_plans(cfg, ranked, ctx)
    met = chosen is not None
    if not met:
        chosen = max((n for n in trained if "full" in trained[n]),
                     key=lambda n: trained[n]["full"]["validation_f1"])
        log.warning("no full trial is within %.2f F1 of the teacher: the plan is the best one "
                    "trained (%s); raise full_trials or loosen the budget", cfg.max_f1_drop, chosen)
    return _write(cfg, doc, out, rows, teacher, trained, chosen, met, ctx, started)


def plan_document(doc: dict[str, Any], row: dict, full_steps: int, backend: str,
                  trial_folder: str = "") -> dict[str, Any]:
    """The run's YAML with the chosen student (and its table form): ``paddleqa run`` on it
    distils and deploys the plan with the same settings and steps as its full trial.

    With ``trial_folder`` (the full trial's folder) the plan's distill stage *is* that trial:
    same folder, same config (its ``dev_file`` emptied, as in every trial), so the pipeline's
    freshness record finds the student trained and the run goes on to prune, quantize and export
    without training it again; dev is scored once, by the bench stage, on the deployed artifacts."""
    p = Candidate(**row["plan"])
    distill = {**(doc.get("distill") or {}), "max_steps": full_steps}
    if trial_folder:
        distill.update(output_dir=trial_folder, dev_file="")
    distill["student"] = {**(distill.get("student") or {}), **p.student()}
    out = {**doc, "distill": distill}
    if latency.BACKENDS[backend].int8_tables and (p.embeddings == "int8" or "export" in doc):
        out["export"] = {**(doc.get("export") or {}), "embeddings": p.embeddings}
    return out


def _int8_cost(row: dict, trial: dict, base, out: Path) -> dict | None:
    """A plan with int8 tables: its trained student exported so and scored on the validation split
    from the x86 .nb, next to the fp32 student (the cost of the table form)."""
    if row["plan"]["embeddings"] != "int8":
        return None
    from ..runtime.evaluate import EvaluateConfig, run as evaluate
    from ..stages import export

    folder = out / "chosen-int8-tables"
    if not (folder / "x86-fp32" / "model.nb").exists():
        export.run(export.ExportConfig(model=str(Path(trial["folder"]) / "model"), out_dir=str(folder),
                                       targets=["x86"], precisions=["fp32"], embeddings="int8"))
    m = evaluate(EvaluateConfig(model=str(folder / "x86-fp32" / "model.nb"), data_file=base.validation_file,
                                out_dir=str(folder / "validation"), n_best=base.n_best,
                                max_answer_length=base.max_answer_length,
                                max_context_chars=base.max_context_chars, resamples=0))
    return {"validation_f1": m["f1"], "f1_cost": round(trial["validation_f1"] - m["f1"], 3)}


def _write_timed(cfg, out, rows, teacher, ranked, teacher_dir, started) -> dict:
    """``time_only``: the timed plans and the budget's verdict; no plan, nothing trained."""
    fast_small = frontier.pareto([r for r in rows if not r["misses"]], ("latency_ms", "file_bytes"), (-1, -1))
    for r in rows:
        r["frontier"] = ["speed/size"] if r["name"] in fast_small else []
    shapes_ = [r["name"] for r in ranked]
    title = f"autocompress (timed only): {budget_text(cfg)}"
    (out / "frontier.md").write_text(
        f"# {title}\n\nNothing trained. The shapes a search would train, most FLOPs first: "
        f"{', '.join(shapes_)}\n\n{frontier.table(rows, teacher, {})}", encoding="utf-8")
    write_json(out / "frontier.json", {"teacher": teacher, "rows": rows, "trained": {}})
    metrics = {"time_only": True, "budget": budget_text(cfg), "plans": len(rows),
               "inside_budget": sum(not r["misses"] for r in rows), "shapes": shapes_,
               "teacher_latency_ms": teacher["latency_ms"]}
    outputs = {n: out / n for n in ("frontier.md", "frontier.json")}
    write_manifest(out, "autocompress", to_dict(cfg), {"teacher": teacher_dir}, outputs, metrics,
                   started=started)
    log.info("autocompress (timed only): %d plans inside the budget -> %s", metrics["inside_budget"],
             out / "frontier.md")
    return metrics


def _write(cfg, doc, out, rows, teacher, trained, chosen, met, ctx, started) -> dict:
    ok = [r for r in rows if not r["misses"]]
    fast_small = frontier.pareto(ok, ("latency_ms", "file_bytes"), (-1, -1))
    fulls = [{"name": n, "latency_ms": next(r["latency_ms"] for r in rows if r["name"] == n),
              "f1": t["full"]["validation_f1"]} for n, t in trained.items() if "full" in t]
    accurate = frontier.pareto(fulls, ("latency_ms", "f1"), (-1, 1)) if fulls else set()
    for r in rows:
        r["frontier"] = [k for k, s in (("speed/size", fast_small), ("speed/F1", accurate)) if r["name"] in s]
    row = next(r for r in rows if r["name"] == chosen)
    int8 = _int8_cost(row, trained[chosen]["full"], pipeline.build_plan(doc, enable=("distill",)).distill, out)
    write_yaml(plan_document(doc, row, ctx["full_steps"], cfg.size_backend, trained[chosen]["full"]["folder"]),
               out / "plan.yaml")
    md = frontier.table(rows, teacher, trained)
    title = f"autocompress: {budget_text(cfg)}, max F1 drop {cfg.max_f1_drop:g}"
    (out / "frontier.md").write_text(f"# {title}\n\nChosen: **{chosen}**"
                                     f"{'' if met else ' (criterion not met)'}\n\n{md}", encoding="utf-8")
    frontier.plot(rows, teacher, trained, out / "pareto.png", title)
    write_json(out / "frontier.json", {"teacher": teacher, "rows": rows, "trained": trained})
    metrics = {"chosen": chosen, "criterion_met": met, "plan": row["plan"], "budget": budget_text(cfg),
               "plans": len(rows), "inside_budget": len(ok), "trained": len(trained),
               "latency_ms": row["latency_ms"], "speedup": row["speedup"],
               "file_bytes": row["file_bytes"], "smaller": row["smaller"],
               "teacher_validation_f1": teacher["validation_f1"],
               "validation_f1": trained[chosen]["full"]["validation_f1"],
               "vs_teacher": trained[chosen].get("vs_teacher"), "kd_gain": trained[chosen].get("kd_gain"),
               "int8_tables": int8}
    outputs = {n: out / n for n in ("plan.yaml", "frontier.md", "frontier.json", "pareto.png")}
    write_manifest(out, "autocompress", to_dict(cfg), {"teacher": ctx["teacher_dir"]}, outputs,
                   metrics, started=started)
    log.info("autocompress: %s -> %s", chosen, out / "plan.yaml")
    return metrics
