"""What every ``eim`` subcommand shares (docs/cli.md, the CLI contract; docs/eim.md section 4, operator
commands): :class:`CliError` (message + exit code), :func:`emit` (one result through
:class:`rsp.cli_contract.Envelope`), the REST client :class:`Api` and :func:`paged` listings. Re-exported by
:mod:`eim.cli`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from typing import Any

from rsp import cli_contract as cc

KINDS = ("psmo", "eco", "download", "euicc_data")
STATUSES = ("queued", "in_progress", "done", "failed", "expired", "cancelled")
EUICC_STATES = ("never_seen", "seen_1h", "seen_24h", "stale")  # GET /v1/euiccs?state= (eim.api.fleet)


class CliError(Exception):
    def __init__(self, message: str, code: int = 1) -> None:
        self.code = code
        super().__init__(message)


# ------------------------------------------------------------------------------------------------ HTTP
class Api:
    def __init__(self, url: str, token: str | None, timeout: float = 30.0, ca_file: str | None = None) -> None:
        import ssl

        import httpx

        headers = {"Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.url = url.rstrip("/")
        verify: Any = True
        if ca_file:
            try:
                verify = ssl.create_default_context(cafile=ca_file)
            except (OSError, ssl.SSLError) as exc:
                raise CliError(f"--ca-file {ca_file}: {exc}", cc.EXIT_USAGE) from None
        self.client = httpx.Client(base_url=self.url, headers=headers, timeout=timeout, verify=verify)

    def call(self, method: str, path: str, step: str, **kw: Any) -> Any:
        import httpx

        try:
            r = self.client.request(method, path, **kw)
        except httpx.TimeoutException as exc:
            raise CliError(f"{step}: the eIM at {self.url} did not answer in time: {exc}", cc.EXIT_TIMEOUT) from None
        except httpx.HTTPError as exc:
            raise CliError(f"{step}: cannot reach the eIM at {self.url}: {exc}", cc.EXIT_CONNECTION) from None
        try:
            body = r.json()
        except ValueError:
            body = None
        if r.status_code >= 400:
            msg = body.get("error", {}).get("message") if isinstance(body, dict) else None
            raise CliError(f"{step}: the eIM answered {r.status_code}: {msg or r.text[:300]}", 1)
        return body


# ------------------------------------------------------------------------------------------------ output
def emit(args: argparse.Namespace, obj: Any, human: str) -> None:
    """One result: an element of a listing (``list`` actions: an ``item`` line now) or the command's object (the
    final ``lpa`` line, written by :func:`main`)."""
    out: cc.Envelope = getattr(args, "out", None) or cc.Envelope(args.json, "eim")
    args.out = out
    if getattr(args, "action", None) == "list":
        out.item(args.command, obj, human)
    elif args.json:
        args.result = obj
    else:
        print(human, flush=True)


def paged(
    api: Api, path: str, step: str, params: dict[str, Any], limit: int | None, *, what: str = "items"
) -> Iterator[dict[str, Any]]:
    """The items of a paged listing of the REST API, following its ``next`` cursor to the end, or at most
    ``limit``: then a line on stderr says that the list stopped early (when more exist)."""
    shown = 0
    while True:
        r = api.call("GET", path, step, params=params)
        items = r["items"]
        taken = items if limit is None else items[: limit - shown]
        for item in taken:
            yield item
            shown += 1
        more = bool(r.get("next"))
        if limit is not None and shown >= limit:
            if len(taken) < len(items):
                more = True
            elif more:  # a full last page: is anything after it?
                more = bool(api.call("GET", path, step, params={**params, "cursor": r["next"], "limit": 1})["items"])
            if more:
                print(f"stopped after {shown} {what} (--limit {limit}); there are more", file=sys.stderr)
            return
        if not more:
            return
        params["cursor"] = r["next"]
