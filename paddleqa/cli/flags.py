"""A config dataclass as command-line flags, and the flags given turned back into config values.

Every field becomes one argument: ``max_seq_len`` -> ``--max-seq-len``, with the field's help
text and its default shown from the field itself, so neither is written twice. ``int``, ``float``
and ``str`` fields take one value of that type; ``bool`` fields get ``--x``/``--no-x``; list and
tuple fields take comma-separated values (``--seq-len 128,384``), which
:func:`paddleqa.core.config.from_dict` splits and checks. Nested dataclasses (an architecture, a
student shape) are left to ``--set``.

Arguments default to "not given": :func:`given_values` returns only what the user typed, so the
dataclass (or a pipeline YAML under ``--config``) supplies everything else.
"""
from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any, Mapping

from ..core.settings import SHARED_FIELDS

DEST_PREFIX = "cfg."  # argparse dest of a generated argument: "cfg.<field>"


@dataclasses.dataclass(frozen=True)
class FieldMap:
    """How one command offers the fields of its config dataclass.

    ``positional``: fields taken as positional arguments, in order (a list field takes one or
    more). ``names``: field -> its spelling on the command line where that differs from the
    field name, e.g. ``out_dir`` -> ``out`` (``--out``). ``exclude``: fields not offered.
    ``required``: flags the command needs (positionals always are), unless ``--config`` gives them.
    """

    cls: type
    positional: tuple[str, ...] = ()
    names: Mapping[str, str] = dataclasses.field(default_factory=dict)
    exclude: tuple[str, ...] = ()
    required: tuple[str, ...] = ()

    def fields(self) -> list[dataclasses.Field]:
        """The offered fields: scalars, bools and lists (nested configs, and lists of them, go
        through --config/--set)."""
        hints = typing.get_type_hints(self.cls)
        return [f for f in dataclasses.fields(self.cls)
                if f.init and f.name not in self.exclude and kind(hints[f.name]) is not None]

    def spelling(self, name: str) -> str:
        return self.names.get(name, name)

    def flag(self, name: str) -> str:
        """How a user names the field on the command line: ``--out`` or ``model``."""
        word = self.spelling(name)
        return word if name in self.positional else "--" + word.replace("_", "-")


def kind(tp: Any) -> str | None:
    """``int``, ``float``, ``str``, ``bool`` or ``list`` for a field type; None: not a flag."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        tp = args[0] if len(args) == 1 else None
    if tp in (int, float, str, bool):
        return tp.__name__
    if typing.get_origin(tp) in (list, tuple):
        items = typing.get_args(tp)
        if items and dataclasses.is_dataclass(items[0]):
            return None  # a list of nested configs (distill.intermediate): YAML or --set only
        return "list"
    return None


def field_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def show(value: Any) -> str:
    """A value the way it is typed on the command line (lists comma-separated)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value) if value else "none"
    if value == "":
        return "''"
    return str(value)


def flag_help(f: dataclasses.Field, *, with_default: bool = True) -> str:
    """The field's help text and default, escaped for argparse's %-formatting."""
    text = f.metadata.get("help", "")
    if with_default:
        default = f"default: {show(field_default(f))}"
        text = f"{text} ({default})" if text else default
    return text.replace("%", "%%")


def _metavar(word: str, tp: Any) -> str:
    k = kind(tp)
    if k == "list":
        item = (typing.get_args(tp) or (str,))[0]
        return ("N" if item is int else "X" if item is float else word.upper()) + ",..."
    return {"int": "N", "float": "X"}.get(k, word.upper())


def add_fields(parser: argparse.ArgumentParser, fmap: FieldMap, *, config_fills: bool = False) -> None:
    """Add one argument per offered field of ``fmap.cls``: its own fields in one group, the shared
    settings it inherits (:mod:`paddleqa.core.settings`) in another.

    ``config_fills``: ``--config`` may supply the positionals and required flags, so argparse
    does not demand them; the caller checks with :func:`missing` when there is no ``--config``.
    """
    _check_names(fmap)
    hints = typing.get_type_hints(fmap.cls)
    own = parser.add_argument_group(f"{fmap.cls.__name__} settings")
    shared = parser.add_argument_group("shared inference settings (paddleqa/core/settings.py)")
    offered = fmap.fields()
    for f in [f for f in offered if f.name not in SHARED_FIELDS] + [f for f in offered if f.name in SHARED_FIELDS]:
        tp, dest, word = hints[f.name], DEST_PREFIX + f.name, fmap.spelling(f.name)
        if f.name in fmap.positional:
            nargs = ("*" if config_fills else "+") if kind(tp) == "list" else ("?" if config_fills else None)
            parser.add_argument(dest, metavar=word, nargs=nargs, default=argparse.SUPPRESS,
                                help=flag_help(f, with_default=False))
            continue
        group = shared if f.name in SHARED_FIELDS else own
        option = "--" + word.replace("_", "-")
        if kind(tp) == "bool":
            group.add_argument(option, dest=dest, default=argparse.SUPPRESS,
                               action=argparse.BooleanOptionalAction, help=flag_help(f))
            continue
        required = f.name in fmap.required
        group.add_argument(option, dest=dest, default=argparse.SUPPRESS,
                           type={"int": int, "float": float}.get(kind(tp), str),
                           metavar=_metavar(word, tp), required=required and not config_fills,
                           help=flag_help(f, with_default=not required))


def given_values(args: argparse.Namespace) -> dict[str, Any]:
    """Field -> value of every generated argument the user gave."""
    return {k[len(DEST_PREFIX):]: v for k, v in vars(args).items() if k.startswith(DEST_PREFIX)}


def missing(fmap: FieldMap, values: Mapping[str, Any]) -> list[str]:
    """Command-line names of the required fields (positionals included) without a value."""
    need = [n for n in (*fmap.positional, *fmap.required) if values.get(n) in (None, "", [])]
    return [fmap.flag(n) for n in need]


def _check_names(fmap: FieldMap) -> None:
    """The table names fields that exist (a typo there would silently offer a wrong flag)."""
    valid = {f.name for f in dataclasses.fields(fmap.cls)}
    stray = sorted({*fmap.positional, *fmap.names, *fmap.exclude, *fmap.required} - valid)
    if stray:
        raise TypeError(f"command table names unknown {fmap.cls.__name__} field(s): {', '.join(stray)}")
