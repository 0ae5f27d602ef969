"""``paddleqa autocompress CONFIG``: the budgeted search over student plans.

Settings come from the pipeline YAML's ``autocompress:`` section (after ``--set``), then from the
flags given; the search itself is :mod:`paddleqa.autocompress.search` (imported when it runs:
it imports paddle).
"""
from __future__ import annotations

import argparse
import functools

from ..core.config import from_dict, merge, parse_overrides, read_yaml
from .flags import FieldMap, add_fields, given_values
from .output import print_json

HELP = "search student plans for a latency/size budget and an F1 criterion; write the plan YAML"


def _fields() -> FieldMap:
    from ..autocompress.search import AutocompressConfig  # no paddle at module level

    return FieldMap(AutocompressConfig, names={"out_dir": "out"})


def add_autocompress(sub) -> None:
    fmap = _fields()
    p = sub.add_parser("autocompress", help=HELP, description=(
        f"{HELP}.\n\nFlags are the fields of AutocompressConfig; the YAML's autocompress: section "
        "gives every value the flags do not (space.* only there or with --set)."))
    p.add_argument("config", metavar="CONFIG", help="pipeline YAML (see configs/) whose teacher "
                   "is trained; its distill section is the base of every trial")
    p.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", default=[],
                   help="override a value of the pipeline YAML, e.g. --set autocompress.space."
                        "hidden_sizes=[64,96] (repeatable)")
    add_fields(p, fmap, config_fills=True)
    p.set_defaults(func=functools.partial(_run, fmap))


def _run(fmap: FieldMap, args: argparse.Namespace) -> int:
    from ..autocompress import search

    doc = merge(read_yaml(args.config), parse_overrides(args.set))
    section = merge(doc.get("autocompress") or {}, given_values(args))
    cfg = from_dict(fmap.cls, section, where="autocompress")
    print_json(search.run(cfg, doc))
    return 0
