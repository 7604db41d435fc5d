"""``/ui/``: the fleet at a glance, from exactly what ``GET /v1/fleet`` answers (called in-process).

The page knows a few keys (the eUICC gauges as cards, the failure rate) and renders every other key generically,
so figures the summary gains later show up without a change here:

- a number or text: a row of the *Figures* table;
- a mapping of names to numbers: a table and a bar chart;
- a mapping of names to such mappings (operations by kind and status): a matrix;
- a list of records with a time and numbers (a time series): a column chart per number; a list of numbers: one.

The section below the title refreshes every few seconds (``data-poll``, ``eim/ui/static/dash.js``).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from starlette.responses import Response

from eim.ui import charts
from eim.ui import html as h

TIME_KEYS = ("t", "at", "time", "start", "bucket", "hour", "day", "from", "period")
ENDED = ("done", "failed", "expired")


LABELS = {  # keys GET /v1/fleet has today; any other key gets a title made from its name
    "by_binding": "By binding",
    "by_sgp32_version": "By SGP.32 version",
    "by_enabled_smdp": "By enabled profile's SM-DP+",
    "by_status": "By status",
    "by_kind": "By kind",
    "ended_24h": "Ended in the last 24 h",
    "failure_rate_24h": "Failure rate, last 24 h (failed or expired of ended)",
    "failure_rate_all": "Failure rate, all stored operations",
    "stale_after_s": "Stale after (default poll interval)",
    "hourly": "Last 24 hours, per hour",
    "polls": "Polls",
    "created": "Operations created",
    "ended": "Operations ended",
    "failed": "Operations failed",
}


def title(key: str) -> str:
    if key in LABELS:
        return LABELS[key]
    if key.endswith("_s"):  # a duration: its value is shown with its unit (``duration``)
        key = key[:-2]
    return key.replace("_", " ").capitalize()


def duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g} {unit}"
    return f"{seconds:g} s"


def is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def failure_rate(by_status: Mapping[str, Any]) -> str:
    ended = sum(by_status.get(s, 0) for s in ENDED if is_num(by_status.get(s, 0)))
    if not ended:
        return "-"
    return f"{100.0 * by_status.get('failed', 0) / ended:.1f} % ({by_status.get('failed', 0)} of {ended} ended)"


def render_value(key: str, value: Any, depth: int = 0) -> str:
    """One key of the summary as HTML (see the module docstring)."""
    name = h.esc(title(key))
    tag = "h2" if depth == 0 else "h3"
    if isinstance(value, Mapping):
        if not value:
            return f'{_open(key)}<{tag}>{name}</{tag}><p class="muted">none</p></section>'
        if all(is_num(v) for v in value.values()):
            rows = [(h.esc(k), h.esc(v)) for k, v in value.items()]
            return (
                f'<section class="block" data-key="{h.esc(key)}"><{tag}>{name}</{tag}><div class="pair">'
                f"{h.table(['', 'count'], rows)}{charts.bars(value, label=title(key))}</div></section>"
            )
        if all(isinstance(v, Mapping) and all(is_num(x) for x in v.values()) for v in value.values()):
            cols = sorted({c for v in value.values() for c in v})
            rows = [[h.esc(k)] + [h.esc(v.get(c, "")) for c in cols] for k, v in value.items()]
            return f"{_open(key)}<{tag}>{name}</{tag}>{h.table(['', *cols], rows)}</section>"
        inner = "".join(render_value(k, v, depth + 1) for k, v in value.items() if not _scalar(v))
        scalars = [(title(k), h.esc(_show(v, k))) for k, v in value.items() if _scalar(v)]
        return (
            f'<section class="block" data-key="{h.esc(key)}"><{tag}>{name}</{tag}>'
            f"{h.kv(scalars) if scalars else ''}{inner}</section>"
        )
    if isinstance(value, list):
        return f'<section class="block" data-key="{h.esc(key)}"><{tag}>{name}</{tag}>{series(key, value)}</section>'
    return ""


def series(key: str, items: list[Any]) -> str:
    if not items:
        return '<p class="muted">no data yet</p>'
    if all(is_num(v) for v in items):
        return charts.columns([(str(i), float(v)) for i, v in enumerate(items)], label=title(key))
    if all(isinstance(v, Mapping) for v in items):
        tkey = next((k for k in TIME_KEYS if k in items[0]), None)
        if tkey is None:
            tkey = next((k for k, v in items[0].items() if isinstance(v, str)), None)
        numeric = [k for k, v in items[0].items() if is_num(v) and k != tkey]
        out = []
        for n in numeric:
            points = [
                (_tlabel(it.get(tkey, i)) if tkey else str(i), float(it.get(n, 0) or 0)) for i, it in enumerate(items)
            ]
            out.append(f'<div class="series"><h4>{h.esc(title(n))}</h4>{charts.columns(points, label=title(n))}</div>')
        nested = [k for k, v in items[0].items() if isinstance(v, Mapping)]
        for n in nested:  # e.g. {"t": ..., "by_status": {"done": 3}}: one chart per inner name
            names = sorted({x for it in items for x in (it.get(n) or {})})
            for inner in names:
                points = [
                    (_tlabel(it.get(tkey, i)) if tkey else str(i), float((it.get(n) or {}).get(inner, 0) or 0))
                    for i, it in enumerate(items)
                ]
                out.append(
                    f'<div class="series"><h4>{h.esc(title(n))}: {h.esc(inner)}</h4>'
                    f"{charts.columns(points, label=inner)}</div>"
                )
        if out:
            return "".join(out)
    return h.pretty(items)


def _tlabel(v: Any) -> str:
    """A time series' time as shown under its chart: POSIX seconds (``hourly``'s ``hour``) as ``HH:MM`` UTC."""
    if is_num(v) and 1e9 <= v < 1e11:
        return datetime.fromtimestamp(v, UTC).strftime("%H:%M")
    return str(v)


def _open(key: str) -> str:
    return f'<section class="block" data-key="{h.esc(key)}">'


def _scalar(v: Any) -> bool:
    return v is None or isinstance(v, str | int | float | bool)


def _show(v: Any, key: str = "") -> str:
    if key.startswith("failure_rate") and is_num(v):
        return f"{100.0 * v:.1f} %"
    if key.endswith("_s") and is_num(v):
        return duration(float(v))
    if isinstance(v, float) and not v.is_integer():
        return f"{v:.4g}"
    return "-" if v is None else str(v)


CARDS = (
    ("registered", "registered"),
    ("seen_1h", "seen in the last hour"),
    ("seen_24h", "seen in the last day"),
    ("stale", "stale"),
    ("never_seen", "never seen"),
)


def render(data: Mapping[str, Any]) -> str:
    euiccs = data.get("euiccs") if isinstance(data.get("euiccs"), Mapping) else {}
    cards = []
    for key, label in CARDS:
        if key in euiccs:
            target = h.url("/ui/euiccs", state=key if key != "registered" else None)
            cards.append(
                f'<a class="card" href="{h.esc(target)}" data-key="{key}"><span class="n">{h.esc(euiccs[key])}</span>'
                f'<span class="l">{h.esc(label)}</span></a>'
            )
    for key, v in euiccs.items():  # gauges added later
        if is_num(v) and key not in dict(CARDS):
            cards.append(
                f'<div class="card" data-key="{h.esc(key)}"><span class="n">{h.esc(_show(v))}</span>'
                f'<span class="l">{h.esc(title(key))}</span></div>'
            )
    figures: list[tuple[str, str]] = []
    ops = data.get("operations") if isinstance(data.get("operations"), Mapping) else {}
    known_rate = any(str(k).startswith("failure_rate") for k in (*data, *ops))
    if not known_rate and isinstance(ops.get("by_status"), Mapping):
        figures.append(("Failure rate (failed of ended)", h.esc(failure_rate(ops["by_status"]))))
    for k, v in data.items():
        if _scalar(v):
            figures.append((title(k), h.esc(_show(v, k))))
    blocks = [render_value(k, v, 1) for k, v in euiccs.items() if not _scalar(v)]
    blocks += [render_value(k, v) for k, v in data.items() if k != "euiccs" and not _scalar(v)]
    return (
        f'<div class="cards">{"".join(cards)}</div>'
        f'<section class="block"><h2>Figures</h2>{h.kv(figures)}</section>'
        f'<div class="grid">{"".join(blocks)}</div>'
    )


async def fetch(ctx: Any) -> tuple[dict[str, Any] | None, str]:
    answer = await ctx.call("GET", "/v1/fleet")
    if not answer.ok or not isinstance(answer.body, dict):
        return None, h.error_box(answer.error.get("message"), answer.error.get("field"))
    return answer.body, ""


async def overview(ctx: Any) -> Response:
    data, err = await fetch(ctx)
    inner = render(data) if data is not None else err
    actions = ""
    if ctx.can_act:
        actions = (
            '<p class="actions"><a class="btn" href="/ui/operations/new">Queue an operation</a> '
            '<a class="btn" href="/ui/batches/new">New batch</a></p>'
        )
    body = f'{actions}<div id="fleet" data-poll="/ui/fleet/live" data-every="5000">{inner}</div>'
    return ctx.page("Fleet", body, active="/ui/", status=200 if data is not None else 503)


async def live(ctx: Any) -> Response:
    data, err = await fetch(ctx)
    return ctx.fragment(render(data) if data is not None else err)


ROUTES = [("GET", "/ui/", overview), ("GET", "/ui/fleet/live", live)]
