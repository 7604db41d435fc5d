"""Reading the JSON-lines envelope every tool prints under ``--json`` (docs/cli.md, rsp/cli_contract.py)."""

from __future__ import annotations

import json
from typing import Any


def lines_of(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(x) for x in stdout.splitlines() if x.strip()]


def json_result(stdout: str) -> Any:
    """The data of the final, successful envelope line: the command's object."""
    lines = lines_of(stdout)
    assert lines and lines[-1]["type"] == "lpa" and lines[-1]["payload"]["code"] == 0, stdout
    return lines[-1]["payload"]["data"]


def json_items(stdout: str) -> list[Any]:
    """The elements of a listing (its ``item`` lines), checking that the final line counts them."""
    lines = lines_of(stdout)
    items = [ln["payload"]["data"] for ln in lines if ln["type"] == "item"]
    assert lines and lines[-1]["type"] == "lpa" and lines[-1]["payload"]["data"] == {"count": len(items)}, stdout
    return items
