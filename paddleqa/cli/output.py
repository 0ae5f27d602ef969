"""What every command prints on stdout: one JSON document (logs go to stderr)."""
from __future__ import annotations

import json


def print_json(obj) -> None:
    print(json.dumps(obj, ensure_ascii=False, indent=2))
