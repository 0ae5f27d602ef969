"""``benchmarks/scale.json`` and the "scale" section of BENCHMARKS.md, from the finished steps of
``benchmarks/scale.py`` (rebuilt from ``OUT/steps/*.json`` every time; nothing typed by hand)."""
from __future__ import annotations

import json
from pathlib import Path

from benchmarks.report import machine_info, replace_section

ROOT = Path(__file__).resolve().parent.parent
TOL = 1e-4  # every fp32 artifact against its dygraph source


def _load(out: Path, step_id: str) -> dict | None:
    f = out / "steps" / f"{step_id}.json"
    return json.loads(f.read_text(encoding="utf-8")) if f.exists() else None


def collect(out: Path, models: list[dict], artifacts_for) -> tuple[list[dict], list[dict], list[dict], list[str]]:
    """(rows, training, op reports, missing step ids) from the finished steps."""
    rows, training, ops, missing = [], [], [], []
    for model in models:
        name, mdir = model["name"], out / model["name"]
        train, ref = _load(out, f"{name}.train"), _load(out, f"{name}.reference")
        if not train or not ref:
            missing.append(name)
            continue
        shape, params = ref["shape"], ref["params"]
        cfg = json.loads((out / "steps" / f"{name}.train.json").read_text(encoding="utf-8"))
        training.append({"name": name, "shape": shape, "stage": model["stage"], "params": params,
                         "wall_s": cfg.get("wall_s"), "peak_rss_mib": cfg["peak_rss_mib"]})
        base = {"name": name, "shape": shape, "stage": model["stage"], "params": params}
        for art in artifacts_for(mdir, model):
            for threads in (1, 2):
                b = _load(out, f"{name}.bench.{art['id']}.t{threads}")
                if not b:
                    missing.append(f"{name} {art['id']} {threads} thread(s)")
                    continue
                stage = model["stage"] + ("+ptq" if art["id"].startswith("pi-int8") else "")
                for r in b["rows"]:
                    rows.append({**base, "stage": stage, "artifact": art["id"], "backend": art["backend"],
                                 "precision": art["precision"], "file_bytes": b["file_bytes"],
                                 "seq_len": r["seq_len"], "threads": threads,
                                 "latency_ms_p50": r["latency_ms_p50"], "runs": r["runs"],
                                 "peak_rss_mib": b["peak_rss_mib"],
                                 "max_abs_logit_diff": r["max_abs_logit_diff"], "finite": r["finite"]})
        for step, graph in ((f"{name}.export", "fp32"), (f"{name}.export-int8", "int8 PTQ"),
                            (f"{name}.export-int8-tables", "int8 tables")):
            e = _load(out, step)
            if not e:
                continue
            for bname, rep in e["op_report"].items():
                b = e["bundles"][bname]
                label = bundle_label(graph, bname)
                ops.append({"name": name, "shape": shape, "bundle": bname, "precision": label,
                            "file_bytes": b["bytes"], "ops_before": rep["ops_before"],
                            "ops_after": rep["ops_after"], "new_op_types": rep["new_op_types"],
                            "fc": rep["ops"].get("fc", 0)})
                if bname.startswith("arm"):  # the ARM .nb is a row too: its size, no latency here
                    rows.append({**base, "stage": model["stage"] + ("+ptq" if graph == "int8 PTQ" else ""),
                                 "artifact": ARTIFACT_PREFIX[graph] + bname, "backend": "lite-arm", "precision": label,
                                 "file_bytes": b["bytes"], "seq_len": None, "threads": None,
                                 "latency_ms_p50": None, "peak_rss_mib": None, "max_abs_logit_diff": None})
    return rows, training, ops, missing


ARTIFACT_PREFIX = {"fp32": "", "int8 PTQ": "ptq-", "int8 tables": "tables-"}


def bundle_label(graph: str, bundle: str) -> str:
    """What a bundle holds: an fp32 graph's int8 bundle is opt's weight-only int8 (weights stored
    in a byte); the int8-tables graph adds opt's int8 weights in its int8 bundle."""
    if bundle.endswith("int8") and graph == "fp32":
        return "int8 weights (opt)"
    if bundle.endswith("int8") and graph == "int8 tables":
        return "int8 weights (opt) + int8 tables"
    return graph


def _best(rows, name, seq, threads, int8: bool) -> dict | None:
    c = [r for r in rows if r["name"] == name and r["seq_len"] == seq and r["threads"] == threads
         and r["latency_ms_p50"] is not None and r.get("finite", True)
         and ("int8" in r["precision"]) == int8]
    return min(c, key=lambda r: r["latency_ms_p50"]) if c else None


def targets(rows: list[dict]) -> list[str]:
    lines = []
    pruned8, med32 = _best(rows, "base-6L-w0.75", 384, 1, True), _best(rows, "medium", 384, 1, False)
    if pruned8 and med32:
        ratio = med32["latency_ms_p50"] / pruned8["latency_ms_p50"]
        lines.append(f"- Pruned (w0.75) + int8 medium vs fp32 medium, batch 1, 384 tokens, 1 thread: "
                     f"{pruned8['latency_ms_p50']:.1f} ms ({pruned8['backend']}, {pruned8['precision']}) vs "
                     f"{med32['latency_ms_p50']:.1f} ms ({med32['backend']}): **{ratio:.2f}x** "
                     f"(target >= 3x: {'met' if ratio >= 3 else 'not met'}).")
    nano8, base32 = _best(rows, "nano", 384, 1, True), _best(rows, "base", 384, 1, False)
    if nano8 and base32:
        ratio = base32["latency_ms_p50"] / nano8["latency_ms_p50"]
        lines.append(f"- Nano int8 vs fp32 base (384 tokens, 1 thread, fastest form of each): "
                     f"{nano8['latency_ms_p50']:.1f} vs {base32['latency_ms_p50']:.1f} ms: **{ratio:.1f}x** "
                     f"lower latency (target >= 20x: {'met' if ratio >= 20 else 'not met'}).")
    arm = {(r["name"], r["precision"]): r["file_bytes"] for r in rows if r["backend"] == "lite-arm"}
    for kind in ("int8 PTQ", "int8 weights (opt)", "int8 tables", "int8 weights (opt) + int8 tables"):
        if ("nano", kind) in arm and ("base", "fp32") in arm:
            ratio = arm[("base", "fp32")] / arm[("nano", kind)]
            lines.append(f"- File: base fp32 ARM .nb {arm[('base', 'fp32')] / 2**20:.1f} MiB vs nano {kind} "
                         f"ARM .nb {arm[('nano', kind)] / 2**20:.1f} MiB: **{ratio:.1f}x** smaller "
                         f"(target >= 20x: {'met' if ratio >= 20 else 'not met'}).")
    small = [r for r in rows if r["name"] == "nano" and "int8" in r["precision"] and r.get("finite", True)]
    if small and ("base", "fp32") in arm:
        b = min(small, key=lambda r: r["file_bytes"])
        ratio = arm[("base", "fp32")] / b["file_bytes"]
        lines.append(f"- File: smallest nano int8 artifact of any format ({b['backend']} {b['precision']}, "
                     f"{b['file_bytes'] / 2**20:.1f} MiB) vs base fp32 ARM .nb: **{ratio:.1f}x** smaller "
                     f"(target >= 20x: {'met' if ratio >= 20 else 'not met'}).")
    fp32 = [r for r in rows if r["precision"] == "fp32" and r["max_abs_logit_diff"] is not None]
    if fp32:
        worst = max(fp32, key=lambda r: r["max_abs_logit_diff"])
        lines.append(f"- fp32 artifacts vs their dygraph model: worst max |Δlogit| "
                     f"{worst['max_abs_logit_diff']:.2e} ({worst['name']}, {worst['backend']}, "
                     f"{worst['seq_len']} tokens) over {len(fp32)} checks (target <= 1e-4: "
                     f"{'met' if worst['max_abs_logit_diff'] <= TOL else 'not met'}).")
    return lines


def _lat(rows, name, art, seq, threads) -> str:
    r = [x for x in rows if x["name"] == name and x["artifact"] == art and x["seq_len"] == seq
         and x["threads"] == threads]
    if not r:
        return ""
    return f"{r[0]['latency_ms_p50']:.1f}" + ("" if r[0].get("finite", True) else " (NaN)")


def _fastest_lines(rows: list[dict], names: list[str]) -> list[str]:
    lines = []
    for name in names:
        for seq in (128, 384):
            for t in (1, 2):
                c = [r for r in rows if r["name"] == name and r["seq_len"] == seq and r["threads"] == t
                     and r.get("finite", True)]
                if c:
                    b = min(c, key=lambda r: r["latency_ms_p50"])
                    lines.append(f"| {name} | {seq} | {t} | {b['backend']} {b['precision']} | "
                                 f"{b['latency_ms_p50']:.1f} |")
    return lines


def render(data: dict) -> str:
    rows, training, ops = data["rows"], data["training"], data["op_reports"]
    m = data["machine"]
    out = ["## Scale: the chain at ERNIE 3.0 shapes", "",
           f"Command: `{data['command']}` (written by `benchmarks/scale.py`; rows in "
           "`benchmarks/scale.json`). Machine: " + f"{m['cpu']}, {m['cores']} cores, "
           f"{m['memory_gib']} GiB; Paddle {m['paddlepaddle']}, PaddleNLP {m['paddlenlp']}, "
           f"Paddle Lite {m['paddlelite']}. Timing: batch 1, `OMP_NUM_THREADS` = threads, "
           "`MKL_DEBUG_CPU_TYPE=5`, p50 of up to "
           f"{data['settings']['reps']} runs after one untimed run, under the exclusive CPU lock.", "",
           "Weights are **random** (ERNIE 3.0's published shapes, 40,000-token vocabulary, 2,048 "
           "positions; no pretrained weights offline), and each training stage ran only "
           f"{data['settings']['steps']} steps of batch {data['settings']['batch_size']} on "
           f"{data['settings']['questions']} CMRC 2018 training questions, so **accuracy is not "
           "reported**: these rows measure shapes, memory, time, export and speed. Correctness is "
           "shown by every fp32 artifact agreeing with its dygraph model (max |Δlogit|) and by "
           "the ARM `.nb` op report.", "",
           "Paddle Inference's int8 PTQ (all ops) runs oneDNN's int8 kernels, whose speed depends on "
           "the CPU's vector extensions (AVX-512 VNNI in particular): on some hosts that row is "
           "many times slower than fp32. "
           + ("The machine line lists the CPU's vector extensions." if "(" in m["cpu"] else
              "This record predates the vector extensions in the machine line: it does not say "
              "whether this CPU has them."), ""]
    models = [m for m in data["missing"] if " " not in m]
    timings = [m for m in data["missing"] if " " in m]
    if models or timings:
        what = ([f"models {', '.join(models)}"] if models else []) + (
            [f"{len(timings)} timing settings ({', '.join(sorted({t.split(' ', 2)[2] for t in timings}))})"]
            if timings else [])
        out += [f"**Not finished in this run:** {'; '.join(what)}. Rerun the command: finished steps "
                "are skipped; the list is in `benchmarks/scale.json` (`missing`).", ""]
    out += ["### Targets", "", *(targets(rows) or ["- (no target computable yet)"]), ""]
    base = next((t for t in training if t["name"] == "base"), None)
    if base:
        st = data["settings"]
        fits = "fits" if base["peak_rss_mib"] < 24 * 1024 else "does not fit"
        out += [f"12L-768H fine-tuning (ERNIE 3.0 base shape, {base['params'] / 1e6:.1f} M params, "
                f"AdamW): peak RSS **{base['peak_rss_mib'] / 1024:.1f} GiB** at batch {st['batch_size']} "
                f"x {st['train_seq_len']} tokens, no gradient accumulation or recompute: it {fits} in 24 GB.", ""]
    out += ["### Training (dygraph, 2 threads)", "", "| model | shape | stage | params | wall s | peak RSS MiB |",
            "| --- | --- | --- | ---: | ---: | ---: |"]
    out += [f"| {t['name']} | {t['shape']} | {t['stage']} | {t['params'] / 1e6:.1f} M | {t['wall_s']} | "
            f"{t['peak_rss_mib']:,.0f} |" for t in training]
    out += ["", "### Latency (ms, p50, batch 1) and agreement with the dygraph model", "",
            "| model | shape | artifact | precision | file MiB | max abs Δlogit | 128/1t | 128/2t | 384/1t | 384/2t | RSS MiB |",
            "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    seen = []
    for r in rows:
        key = (r["name"], r["artifact"])
        if r["latency_ms_p50"] is None or key in seen:
            continue
        seen.append(key)
        diff = max(x["max_abs_logit_diff"] for x in rows if (x["name"], x["artifact"]) == key
                   and x["max_abs_logit_diff"] is not None)
        rss = max(x["peak_rss_mib"] for x in rows if (x["name"], x["artifact"]) == key)
        lat = [_lat(rows, *key, s, t) for s in (128, 384) for t in (1, 2)]
        out.append(f"| {r['name']} | {r['shape']} | {r['artifact']} | {r['precision']} | "
                   f"{r['file_bytes'] / 2**20:.1f} | {diff:.1e} | {' | '.join(lat)} | {rss:,.0f} |")
    out += ["", "RSS: the peak RSS of the timing process while that artifact was opened and timed. "
            "The artifacts of one thread count are timed one after another in one process (one "
            "wait for the exclusive lock), its peak reset before each; memory the process kept "
            "from earlier artifacts counts, so the small models' values are upper bounds. max abs "
            "Δlogit of the int8 rows is their quantization error on random weights, not a target.",
            "", "### Fastest path (including int8) per model and setting", "",
            "| model | tokens | threads | fastest | ms |", "| --- | ---: | ---: | --- | ---: |",
            *_fastest_lines(rows, [t["name"] for t in training]), ""]
    out += ["### Paddle Lite `opt` op report (ARM and x86 `.nb`)", "",
            "| model | bundle | from | file MiB | ops before -> after | fc | new op types |",
            "| --- | --- | --- | ---: | --- | ---: | --- |"]
    out += [f"| {o['name']} | {o['bundle']} | {o['precision']} | {o['file_bytes'] / 2**20:.1f} | "
            f"{o['ops_before']} -> {o['ops_after']} | {o['fc']} | {', '.join(o['new_op_types'])} |" for o in ops]
    return "\n".join(out) + "\n"


def write_report(out: Path, models: list[dict], artifacts_for, args, command: str) -> dict:
    rows, training, ops, missing = collect(out, models, artifacts_for)
    data = {"command": command, "machine": machine_info(),
            "settings": {k: getattr(args, k) for k in ("questions", "steps", "batch_size", "train_seq_len",
                                                        "seq_lens", "threads", "reps", "max_seconds")},
            "missing": missing, "training": training, "op_reports": ops, "targets": targets(rows),
            "rows": rows}
    (ROOT / "benchmarks" / "scale.json").write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n",
                                                    encoding="utf-8")
    replace_section(ROOT / "BENCHMARKS.md", "scale", render(data))
    return data
