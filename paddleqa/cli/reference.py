"""docs/cli.md: every command's ``--help``, generated, so the reference never drifts from the code.

Regenerate with ``python -m paddleqa.cli.reference > docs/cli.md`` (a test checks it is current).
"""
from __future__ import annotations

import argparse
import os
import sys

from . import build_parser

WIDTH = 100  # help is wrapped at a fixed width, whatever the terminal, so the file is stable


def subcommands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> dict:
    """Every runnable (sub)command of ``parser`` by its words: ("data", "check"), ("evaluate",) ..."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        return {path: parser}
    out = {}
    for name, sub in subs[0].choices.items():
        out.update(subcommands(sub, (*path, name)))
    return out


def render() -> str:
    """The Markdown page: the top-level help, then each command's help in the CLI's order."""
    saved = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(WIDTH)  # argparse wraps at $COLUMNS
    try:
        parser = build_parser()
        parts = ["# `paddleqa` command reference", "",
                 "Generated from `--help` by `python -m paddleqa.cli.reference > docs/cli.md`; "
                 "what each stage does and why is in [stages.md](stages.md).", "",
                 "```text", parser.format_help().rstrip(), "```"]
        for words, sub in subcommands(parser).items():
            parts += ["", f"## `paddleqa {' '.join(words)}`", "", "```text", sub.format_help().rstrip(), "```"]
        return "\n".join(parts) + "\n"
    finally:
        if saved is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = saved


if __name__ == "__main__":
    sys.stdout.write(render())
