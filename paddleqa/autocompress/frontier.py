"""The search's record for people: the frontier table (Markdown), the Pareto plot and its flags.

A plan is on the speed/size frontier when no other timed plan is both faster and smaller, and
on the accuracy frontier when no other trained plan is both faster and more accurate (validation
F1 at the full budget).
"""
from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)


def pareto(rows: list[dict], better: tuple[str, str], senses: tuple[int, int]) -> set[str]:
    """Names of the rows no other row beats on both keys (``senses``: +1 = higher is better)."""
    a, b = better
    sa, sb = senses
    out = set()
    for r in rows:
        dominated = any(
            sa * o[a] >= sa * r[a] and sb * o[b] >= sb * r[b]
            and (sa * o[a] > sa * r[a] or sb * o[b] > sb * r[b]) for o in rows if o is not r)
        if not dominated:
            out.add(r["name"])
    return out


def _ci(d: dict | None) -> str:
    if not d or d.get("delta") is None:
        return ""
    lo, hi = d["ci95"]
    return f"{d['delta']:+.2f} [{lo:+.2f}, {hi:+.2f}]"


def table(rows: list[dict], teacher: dict, trained: dict[str, dict]) -> str:
    """Markdown: the teacher, then every plan inside the budget (trained ones with their F1, its
    drop against the teacher and the KD gain, each with a paired 95% interval)."""
    head = ("| plan | latency ms | speed-up | size MiB | smaller | params | MFLOPs | F1 short | "
            "F1 full | vs teacher | KD gain | frontier |\n|---" + "|---:" * 10 + "|---|")
    lines = [head, f"| teacher | {teacher['latency_ms']:.2f} | 1.00x | "
             f"{teacher['file_bytes'] / 2**20:.2f} | 1.0x | {teacher['params']:,} | "
             f"{teacher['flops'] / 1e6:.0f} | | {teacher.get('validation_f1', '')} | | | |"]
    for r in rows:
        if r["misses"]:
            continue
        t = trained.get(r["name"], {})
        full = t.get("full", {})
        lines.append(
            f"| {r['name']} | {r['latency_ms']:.2f} | {r['speedup']:.2f}x | "
            f"{r['file_bytes'] / 2**20:.2f} | {r['smaller']:.1f}x | {r['params']:,} | "
            f"{r['flops'] / 1e6:.0f} | {t.get('short', {}).get('validation_f1', '')} | "
            f"{full.get('validation_f1', '')} | {_ci(t.get('vs_teacher'))} | {_ci(t.get('kd_gain'))} | "
            f"{', '.join(r.get('frontier', []))} |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], teacher: dict, trained: dict[str, dict], path: Path, title: str) -> Path:
    """Two panels: size against latency for every timed plan (inside the budget in colour), and
    validation F1 against latency for the trained plans and the teacher."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for r in rows:
        ax1.scatter(r["latency_ms"], r["file_bytes"] / 2**20, s=18,
                    c="tab:grey" if r["misses"] else "tab:blue", alpha=0.4 if r["misses"] else 0.9)
    ax1.scatter(teacher["latency_ms"], teacher["file_bytes"] / 2**20, marker="*", s=120, c="tab:red",
                label="teacher (fastest fp32 form)")
    ax1.set(xlabel="latency, ms (batch 1)", ylabel="file, MiB", xscale="log", yscale="log",
            title="every plan (blue: inside the budget)")
    ax1.legend(loc="upper left", fontsize=8)
    by_name = {r["name"]: r for r in rows}
    for name, t in trained.items():
        best = t.get("full") or t.get("short")
        if not best or best.get("validation_f1") is None:
            continue
        r = by_name[name]
        ax2.scatter(r["latency_ms"], best["validation_f1"], c="tab:green" if t.get("full") else "tab:olive")
        ax2.annotate(name, (r["latency_ms"], best["validation_f1"]), fontsize=6)
    if teacher.get("validation_f1") is not None:
        ax2.scatter(teacher["latency_ms"], teacher["validation_f1"], marker="*", s=120, c="tab:red")
    ax2.set(xlabel="latency, ms (batch 1)", ylabel="validation F1",
            title="trained plans (green: full budget)")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
