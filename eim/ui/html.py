"""Small HTML building blocks of the dashboard: every value goes through :func:`esc` (``html.escape``), pages are
plain strings assembled server-side, and nothing is loaded from elsewhere (the one script and style sheet are
served from the package under ``/ui/static/``)."""

from __future__ import annotations

import datetime as dt
import html
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import urlencode

NAV = [
    ("/ui/", "Fleet"),
    ("/ui/euiccs", "eUICCs"),
    ("/ui/operations", "Operations"),
    ("/ui/batches", "Batches"),
    ("/ui/subscriptions", "Webhooks"),
    ("/ui/notifications", "Outbox"),
    ("/ui/system", "System"),
]
ADMIN_NAV = [("/ui/operators", "Operators")]


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def url(path: str, **query: Any) -> str:
    q = [(k, v) for k, v in query.items() if v not in (None, "")]
    return path + ("?" + urlencode(q, doseq=True) if q else "")


def link(href: str, text: Any) -> str:
    return f'<a href="{esc(href)}">{esc(text)}</a>'


def when(iso: str | None) -> str:
    """An ISO time as ``YYYY-MM-DD HH:MM:SS`` with the full value as a tooltip."""
    if not iso:
        return "-"
    try:
        t = dt.datetime.fromisoformat(iso.replace("Z", "+00:00"))
        short = t.strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        short = iso
    return f'<time datetime="{esc(iso)}" title="{esc(iso)}">{esc(short)}</time>'


def status(value: str | None) -> str:
    return f'<span class="st st-{esc(value)}">{esc(value)}</span>'


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], *, cls: str = "", empty: str = "none") -> str:
    """``rows`` are already-escaped HTML cells."""
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    if not body:
        body = f'<tr><td colspan="{len(headers)}" class="muted">{esc(empty)}</td></tr>'
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    return f'<table class="{esc(cls)}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def kv(pairs: Iterable[tuple[str, str]]) -> str:
    """A two-column table of name and already-escaped value."""
    return '<table class="kv">' + "".join(f"<tr><th>{esc(k)}</th><td>{v}</td></tr>" for k, v in pairs) + "</table>"


def pretty(value: Any) -> str:
    import json

    return f"<pre>{esc(json.dumps(value, indent=2, sort_keys=True, default=str))}</pre>"


def error_box(message: str | None, field: str | None = None) -> str:
    if not message:
        return ""
    where = f'<strong class="field">{esc(field)}</strong>: ' if field else ""
    if field and message.startswith(f"{field}: "):
        message = message[len(field) + 2 :]
    return f'<div class="error" role="alert" data-field="{esc(field or "")}">{where}{esc(message)}</div>'


def notice(message: str | None) -> str:
    return f'<div class="notice" role="status">{esc(message)}</div>' if message else ""


def csrf_field(token: str) -> str:
    return f'<input type="hidden" name="csrf" value="{esc(token)}">'


def button_form(action: str, label: str, csrf: str, *, danger: bool = False, confirm: str | None = None) -> str:
    cls = "btn danger" if danger else "btn"
    conf = f' data-confirm="{esc(confirm)}"' if confirm else ""
    return (
        f'<form method="post" action="{esc(action)}" class="inline"{conf}>{csrf_field(csrf)}'
        f'<button type="submit" class="{cls}">{esc(label)}</button></form>'
    )


def select(name: str, options: Sequence[str], current: str | None, *, blank: str | None = "any") -> str:
    opts = [f'<option value="">{esc(blank)}</option>'] if blank is not None else []
    for o in options:
        sel = " selected" if o == current else ""
        opts.append(f'<option value="{esc(o)}"{sel}>{esc(o)}</option>')
    return f'<select name="{esc(name)}" id="f-{esc(name)}">{"".join(opts)}</select>'


def pager(next_url: str | None) -> str:
    if not next_url:
        return '<p class="muted pager">end of list</p>'
    return f'<p class="pager"><a class="btn" rel="next" href="{esc(next_url)}">Next page &rarr;</a></p>'


def layout(
    title: str,
    body: str,
    *,
    who: str | None,
    auth: bool,
    csrf: str,
    active: str = "",
    can_act: bool,
    admin: bool = False,
) -> str:
    on = ' class="on"'
    items = NAV + (ADMIN_NAV if admin else [])
    nav = "".join(f'<a href="{href}"{on if href == active else ""}>{esc(text)}</a>' for href, text in items)
    if auth:
        role = "" if can_act else ' <span class="badge">read-only</span>'
        user = (
            f'<span class="who">{esc(who)}{role}</span>'
            f'<form method="post" action="/ui/logout" class="inline">{csrf_field(csrf)}'
            '<button type="submit" class="btn small">Log out</button></form>'
        )
        banner = ""
    else:
        user = '<span class="who">lab</span>'
        banner = (
            '<div class="warn" role="note">Authentication is off: no <code>[api] operators_file</code> or '
            "<code>[api] token</code> is configured, so the API and this dashboard let every caller in (a lab on "
            "loopback).</div>"
        )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<title>{esc(title)} - eIM</title><meta name="csrf-token" content="{esc(csrf)}">'
        '<link rel="icon" href="data:,"><link rel="stylesheet" href="/ui/static/dash.css">'
        '<script src="/ui/static/dash.js" defer></script></head><body>'
        f'<header><a class="brand" href="/ui/">eIM</a><nav>{nav}</nav><div class="user">{user}</div></header>'
        f"{banner}<main><h1>{esc(title)}</h1>{body}</main></body></html>"
    )


def bare(title: str, body: str) -> str:
    """A page outside the session (the login page)."""
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f'<title>{esc(title)} - eIM</title><link rel="icon" href="data:,">'
        '<link rel="stylesheet" href="/ui/static/dash.css"></head>'
        f'<body class="bare"><main><h1>{esc(title)}</h1>{body}</main></body></html>'
    )
