"""The ``paddleqa`` command: one subcommand per stage, global flags, error handling.

The stage commands' flags come from their config dataclasses (:mod:`.commands`, :mod:`.flags`);
data check/fetch, score, ``run`` and ``cache`` are in :mod:`.tools`. Building the parser imports no paddle.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Callable, Sequence

from .. import __version__
from ..core.distributed import is_main
from ..core.errors import PaddleQAError
from ..core.safeload import TRUST_ENV
from . import commands, search, tools

COMMANDS: dict[str, Callable] = {
    "data": tools.add_data,
    "vocab": commands.add_vocab,
    "augment": commands.adder("augment"),
    "pretrain": commands.adder("pretrain"),
    "finetune": commands.adder("finetune"),
    "distill": commands.adder("distill"),
    "prune": commands.adder("prune"),
    "evaluate": commands.adder("evaluate"),
    "predict": commands.adder("predict"),
    "compare": commands.adder("compare"),
    "export": commands.adder("export"),
    "quantize": commands.adder("quantize"),
    "bench": commands.adder("bench"),
    "autocompress": search.add_autocompress,
    "report": commands.adder("report"),
    "serve": commands.adder("serve"),
    "ask": commands.adder("ask"),
    "score": tools.add_score,
    "run": tools.add_run,
    "cache": tools.add_cache,
}


def _setup_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity < 0 else logging.DEBUG if verbosity > 0 else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S", stream=sys.stderr, force=True)
    # `import paddlenlp` sets the root logger to WARNING; paddleqa's own level survives that.
    logging.getLogger("paddleqa").setLevel(level)


def _set_threads(threads: int | None) -> None:
    """Thread count for Paddle's CPU kernels; must be set before paddle is imported."""
    if threads is not None:
        if threads < 1:
            raise PaddleQAError(f"--threads must be >= 1, got {threads}")
        os.environ["OMP_NUM_THREADS"] = str(threads)
        os.environ["MKL_NUM_THREADS"] = str(threads)
    elif "OMP_NUM_THREADS" not in os.environ:
        # `import paddle` would otherwise set OMP_NUM_THREADS=1 and use one core.
        os.environ["OMP_NUM_THREADS"] = str(os.cpu_count() or 1)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="paddleqa",
        description="Shrink Chinese extractive QA models onto devices with the Paddle stack.",
    )
    parser.add_argument("--version", action="version", version=f"paddleqa {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for Paddle (default: OMP_NUM_THREADS, else all cores)")
    parser.add_argument("--trust-remote-artifact", action="store_true",
                        help="load model folders without the safety checks (restricted unpickling "
                             "of weights, sha256 against the stage's manifest); only for files you "
                             f"trust (same as {TRUST_ENV}=1)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in COMMANDS.values():
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # Under the data-parallel launcher, ranks other than 0 log warnings and errors only.
    _setup_logging(-1 if args.quiet or (not is_main() and not args.verbose) else args.verbose)
    try:
        _set_threads(args.threads)
        if args.trust_remote_artifact:
            os.environ[TRUST_ENV] = "1"  # child processes (bench, data-parallel ranks) inherit it
        return args.func(args)
    except PaddleQAError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError, PermissionError, IsADirectoryError) as exc:
        # Config validation raises ValueError with a message meant for the user.
        if args.verbose:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and closed early: not an error
        sys.stderr.close()
        return 0
