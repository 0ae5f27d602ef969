"""The budget of a search: which timed plans are inside it, by how much the others miss, and its
text. ``cfg`` is an :class:`~paddleqa.autocompress.search.AutocompressConfig` (any object with
``latency_ms``, ``speedup``, ``size_mib``, ``smaller`` and ``backend``)."""
from __future__ import annotations

from ..core.errors import PaddleQAError


def misses(row: dict, cfg) -> dict[str, float]:
    """How far a timed plan is outside each budget, as a fraction of the budget (empty = inside)."""
    out = {}
    if cfg.latency_ms and row["latency_ms"] > cfg.latency_ms:
        out["latency_ms"] = row["latency_ms"] / cfg.latency_ms - 1
    if cfg.speedup and row["speedup"] < cfg.speedup:
        out["speedup"] = cfg.speedup / row["speedup"] - 1
    if cfg.size_mib and row["file_bytes"] > cfg.size_mib * 2**20:
        out["size_mib"] = row["file_bytes"] / (cfg.size_mib * 2**20) - 1
    if cfg.smaller and row["smaller"] < cfg.smaller:
        out["smaller"] = cfg.smaller / row["smaller"] - 1
    return out


def inside(rows: list[dict], cfg) -> list[dict]:
    """The plans inside the budget; a clear error naming the closest plan when there is none."""
    for r in rows:
        r["misses"] = {k: round(v, 4) for k, v in misses(r, cfg).items()}
    ok = [r for r in rows if not r["misses"]]
    if ok:
        return ok
    closest = min(rows, key=lambda r: max(r["misses"].values()))
    how = ", ".join(f"{k} by {100 * v:.0f}%" for k, v in closest["misses"].items())
    raise PaddleQAError(
        f"no plan of the {len(rows)} searched meets the budget ({budget_text(cfg)}). The closest is "
        f"{closest['name']}: {closest['latency_ms']:.2f} ms ({closest['speedup']:.2f}x faster "
        f"than the teacher), {closest['file_bytes'] / 2**20:.2f} MiB ({closest['smaller']:.1f}x "
        f"smaller); it misses {how}. Every plan's numbers are in the search folder's "
        "frontier.json. Loosen the budget or widen autocompress.space (smaller hidden_sizes, "
        "fewer num_layers/conv_blocks, int8 embedding_forms) or try another backend")


def budget_text(cfg) -> str:
    parts = [f"latency <= {cfg.latency_ms:g} ms" if cfg.latency_ms else "",
             f"speed-up >= {cfg.speedup:g}x" if cfg.speedup else "",
             f"size <= {cfg.size_mib:g} MiB" if cfg.size_mib else "",
             f"{cfg.smaller:g}x smaller" if cfg.smaller else ""]
    sized = getattr(cfg, "sized_on", "")
    where = f" on {cfg.backend}" + (f" (file: {sized})" if sized and sized != cfg.backend else "")
    return ", ".join(p for p in parts if p) + where
