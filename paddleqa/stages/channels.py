"""Channel pruning of the mobilenet student's conv blocks with PaddleSlim's filter pruners.

1. The student's inverted-residual blocks go to PaddleSlim as a Conv2D view
   (:mod:`paddleqa.models.channels`: its pruners do not see the student's Conv1D weights).
2. Sensitivity: ``pruner.sensitive(eval_func=..., sen_file=...)`` cuts each block's expansion
   filters by 10%..90% (PaddleSlim's grid) in turn -- with the block's depthwise filters and
   projection inputs, which its graph analysis couples to them -- and records the relative loss
   of the caller's score (official CMRC F1 on held-out *training* questions; the dev set is kept
   for the final score). PaddleSlim writes its ``sensitivities.pickle``; ``channel_sensitivity``
   ``.json/.md`` is the same table by block.
3. Per-block ratios for a FLOPs target: ``paddleslim.prune.get_ratios_by_loss`` at the smallest
   loss threshold that brings the project's FLOPs count (:mod:`paddleqa.models.flops`) to the
   target. The threshold search is written here, not PaddleSlim's ``get_ratios_by_sensitivity``/
   ``sensitive_prune``: those count FLOPs of the layer the pruner holds (the view: no
   transformer layers, embeddings or span head, so the target would mean something else), and
   ``sensitive_prune`` skips grouped convolutions. Where ratios tie (equal losses), the ratios are
   interpolated between the last threshold above the target and the first below it.
4. ``pruner.prune_vars`` cuts the view -- the L1-norm or FPGM criterion chooses which filters --
   and :func:`paddleqa.models.channels.from_view` makes the smaller dense student.
"""
from __future__ import annotations

import contextlib
import copy
import logging
from pathlib import Path
from typing import Any, Callable

from ..core.errors import ConfigError, PaddleQAError
from ..core.io import atomic_write_text, write_json
from ..models.flops import flops_per_query

log = logging.getLogger(__name__)

SEN_FILE = "sensitivities.pickle"  # PaddleSlim's own sensitivity file (its Status pickle)


def _l1norm():
    from paddleslim.dygraph import L1NormFilterPruner

    return L1NormFilterPruner


def _fpgm():
    from paddleslim.dygraph import FPGMFilterPruner

    return FPGMFilterPruner


# prune.method -> the PaddleSlim pruner class (imported only when used)
PRUNERS: dict[str, Callable[[], type]] = {"l1norm": _l1norm, "fpgm": _fpgm}


@contextlib.contextmanager
def _quiet_paddleslim():
    """PaddleSlim's loggers have their own stderr handlers (they do not propagate) and log every
    pruned tensor at INFO and every graph op it cannot walk at WARNING; library code here does
    not print, so they are held at ERROR while it works and restored after."""
    loggers = [logging.getLogger(n) for n in list(logging.Logger.manager.loggerDict)
               if n.startswith("paddleslim")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def kept_channels(widths: list[int], ratios: list[float]) -> list[int]:
    """Channels left per block after pruning ``ratios`` (PaddleSlim's rounding: at least one)."""
    return [c - min(c - 1, int(round(c * r))) for c, r in zip(widths, ratios)]


def pruned_flops(config, widths: list[int], ratios: list[float], seq_len: int) -> int:
    """FLOPs per ``seq_len`` window of mobile student ``config`` with its conv blocks of
    ``widths`` channels pruned by ``ratios``."""
    cfg = copy.copy(config)
    cfg.block_channels = kept_channels(widths, ratios)
    return flops_per_query(cfg, seq_len)


def uniform_channels(config, flops_ratio: float, seq_len: int) -> list[int] | None:
    """Per-block widths of a mobile student ``config`` with every conv block pruned by the same
    (smallest) ratio that brings its FLOPs per ``seq_len`` window to ``flops_ratio`` or under:
    the shape :func:`prune_channels` leaves, up to the per-block split its sensitivity picks
    (what autocompress times before anything is trained). None when pruning every block by 90%
    (PaddleSlim's largest ratio) is not enough, as :func:`ratios_for_flops` refuses then."""
    widths = list(config.block_channels)
    target = flops_ratio * flops_per_query(config, seq_len)

    def flops_at(r: float) -> int:
        return pruned_flops(config, widths, [r] * len(widths), seq_len)

    if not widths or flops_at(0.9) > target:
        return None
    lo, hi = 0.0, 0.9
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if flops_at(mid) <= target else (mid, hi)
    return kept_channels(widths, [hi] * len(widths))


def ratios_for_flops(sens: dict[str, dict[float, float]], flops_of: Callable[[list[float]], int],
                     target: float) -> list[float]:
    """Pruned ratio per tensor of ``sens`` (in its order) whose FLOPs ``flops_of(ratios)`` come
    to ``target`` or just under it; raises :class:`ConfigError` when 90% everywhere is not enough."""
    from paddleslim.prune import get_ratios_by_loss

    names = list(sens)

    def at(loss: float) -> list[float]:
        got = get_ratios_by_loss(sens, loss)
        return [float(got.get(n, 0.0)) for n in names]

    losses = [v for s in sens.values() for v in s.values()]
    lo, hi = min(losses + [0.0]) - 1.0, max(losses)
    if flops_of(at(hi)) > target:
        raise ConfigError(f"prune.flops_ratio: pruning every conv block by 90% (PaddleSlim's "
                          f"largest ratio) leaves {flops_of(at(hi)):,} FLOPs per window, above the "
                          f"target {int(target):,} (the transformer layers and span head are not "
                          f"pruned); raise prune.flops_ratio")
    for _ in range(60):  # smallest loss threshold whose ratios meet the target
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if flops_of(at(mid)) <= target else (mid, hi)
    below, above = at(lo), at(hi)
    a, b = 0.0, 1.0
    for _ in range(60):  # between them (ties jump): the least pruning that meets the target
        t = (a + b) / 2
        mixed = [x + t * (y - x) for x, y in zip(below, above)]
        a, b = (a, t) if flops_of(mixed) <= target else (t, b)
    return [x + b * (y - x) for x, y in zip(below, above)]


def prune_channels(model, method: str, score: Callable[[Any], float], *, flops_ratio: float,
                   seq_len: int, out_dir: Path) -> tuple[Any, dict[str, Any]]:
    """A narrower copy of mobile student ``model`` with about ``flops_ratio`` of its FLOPs per
    ``seq_len`` window; ``score(student) -> float`` (higher is better) drives the sensitivity.
    Writes the sensitivity files into ``out_dir``; returns the pruned student and its record."""
    from ..models.channels import ConvView, from_view

    if getattr(model.config, "model_type", "") != "mobile_qa":
        raise ConfigError(f"prune.method {method!r} prunes the channels of a mobilenet student; the "
                          f"model is a {type(model).__name__}: point prune.model at a distill run "
                          "with student.kind mobilenet, or use prune.method heads_ffn")
    if not model.config.conv_blocks:
        raise ConfigError("prune.model has no conv blocks to prune (student.conv_blocks is 0)")
    out_dir.mkdir(parents=True, exist_ok=True)
    sen_file = out_dir / SEN_FILE
    sen_file.unlink(missing_ok=True)  # tensor names are per process: an old file names others
    view = ConvView(model)
    view.eval()
    names = view.master_names()
    widths = [int(b.expand.weight.shape[0]) for b in view.blocks]
    pruner_class = PRUNERS[method]()  # imported first: its loggers exist before they are quieted
    with _quiet_paddleslim():
        pruner = pruner_class(view, view.input_shape(seq_len))
        lost = [i + 1 for i, n in enumerate(names)
                if pruner.collections.find_collection_by_master(n, 0) is None]
        if lost:
            raise PaddleQAError(f"PaddleSlim found no prunable group for conv block(s) {lost}")
        sens = pruner.sensitive(eval_func=lambda: score(from_view(model, view)),
                                sen_file=str(sen_file), target_vars=names, skip_vars=[])
        sens = {n: {round(float(r), 2): float(v) for r, v in sens[n].items()} for n in names}

        def flops_of(ratios: list[float]) -> int:
            return pruned_flops(model.config, widths, ratios, seq_len)

        before = flops_per_query(model.config, seq_len)
        ratios = ratios_for_flops(sens, flops_of, flops_ratio * before)
        pruner.prune_vars({n: r for n, r in zip(names, ratios) if r > 0}, 0)
    pruned = from_view(model, view)
    after = flops_per_query(pruned.config, seq_len)
    rows = [{"block": i + 1, "channels": widths[i], "pruned_ratio": round(ratios[i], 4),
             "kept": pruned.config.block_channels[i], "loss_by_ratio": sens[n]}
            for i, n in enumerate(names)]
    _write_table(out_dir, rows)
    log.info("%s channel pruning: blocks %s -> %s channels, FLOPs per window %s -> %s (%.3f)",
             method, widths, pruned.config.block_channels, f"{before:,}", f"{after:,}",
             after / before)
    return pruned, {"method": method, "block_channels_before": widths,
                    "block_channels": pruned.config.block_channels,
                    "pruned_ratios": [round(r, 4) for r in ratios],
                    "flops_before": before, "flops_after": after,
                    "flops_ratio": round(after / before, 4), "channel_sensitivity": rows}


def _write_table(out: Path, rows: list[dict[str, Any]]) -> None:
    write_json(out / "channel_sensitivity.json", rows)
    grid = sorted({r for row in rows for r in row["loss_by_ratio"]})
    head = " | ".join(f"{int(round(r * 100))}%" for r in grid)
    lines = [f"| block | channels | {head} | pruned | kept |",
             "| ---: | ---: | " + " | ".join("---:" for _ in grid) + " | ---: | ---: |"]
    for row in rows:
        cells = " | ".join(f"{row['loss_by_ratio'].get(r, float('nan')):.3f}" for r in grid)
        lines.append(f"| {row['block']} | {row['channels']} | {cells} | "
                     f"{row['pruned_ratio']:.2f} | {row['kept']} |")
    note = ("Relative loss of the held-out training F1, (base - pruned) / base, when one block's "
            "expansion filters are cut by the column's share (PaddleSlim `pruner.sensitive`).\n\n")
    atomic_write_text(out / "channel_sensitivity.md", note + "\n".join(lines) + "\n")
