"""Charts as inline SVG drawn on the server: no chart library, no script, nothing fetched. Three shapes: horizontal
bars for counts by name, columns for a series over time, and a stacked progress bar (a batch's items by status).
Colours come from the style sheet (classes ``c-<status>``), sizes are SVG attributes (no inline styles, so the
Content-Security-Policy can forbid them)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from eim.ui.html import esc

# a batch's or the fleet's operations in this order (open first, then how they ended)
STATUS_ORDER = ("done", "in_progress", "queued", "failed", "expired", "cancelled", "refused")


def _num(v: object) -> float:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else 0.0


def bars(counts: Mapping[str, object], *, width: int = 420, label: str = "") -> str:
    """One bar per name, longest = ``width``; the figure at the end of each bar."""
    items = [(str(k), _num(v)) for k, v in counts.items()]
    if not items:
        return ""
    top = max(v for _, v in items) or 1.0
    row, name_w, bar_w = 22, 130, width - 190
    h = row * len(items) + 4
    out = [
        f'<svg class="chart bars" role="img" aria-label="{esc(label)}" viewBox="0 0 {width} {h}" width="{width}"'
        f' height="{h}" xmlns="http://www.w3.org/2000/svg">'
    ]
    for i, (name, v) in enumerate(items):
        y = i * row + 2
        w = max(1.0, bar_w * v / top) if v else 0.0
        out.append(
            f'<text x="{name_w - 6}" y="{y + 15}" text-anchor="end" class="lbl">{esc(name[:24])}</text>'
            f'<rect x="{name_w}" y="{y + 3}" width="{w:.1f}" height="{row - 6}" class="bar c-{esc(name)}"/>'
            f'<text x="{name_w + w + 6:.1f}" y="{y + 15}" class="val">{esc(_fmt(v))}</text>'
        )
    out.append("</svg>")
    return "".join(out)


def columns(points: Sequence[tuple[str, float]], *, width: int = 560, height: int = 140, label: str = "") -> str:
    """A column per point (e.g. operations per hour); first and last labels under the axis."""
    if not points:
        return ""
    top = max(_num(v) for _, v in points) or 1.0
    n = len(points)
    plot_h = height - 30
    step = (width - 50) / n
    out = [
        f'<svg class="chart cols" role="img" aria-label="{esc(label)}" viewBox="0 0 {width} {height}"'
        f' width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">',
        f'<text x="44" y="12" text-anchor="end" class="val">{esc(_fmt(top))}</text>',
        f'<line x1="48" y1="{plot_h + 4}" x2="{width}" y2="{plot_h + 4}" class="axis"/>',
    ]
    for i, (name, v) in enumerate(points):
        hv = plot_h * _num(v) / top
        x = 50 + i * step
        out.append(
            f'<rect x="{x:.1f}" y="{plot_h + 4 - hv:.1f}" width="{max(1.0, step - 2):.1f}" height="{hv:.1f}"'
            f' class="bar"><title>{esc(name)}: {esc(_fmt(_num(v)))}</title></rect>'
        )
    out.append(f'<text x="50" y="{height - 4}" class="lbl">{esc(points[0][0])}</text>')
    out.append(f'<text x="{width}" y="{height - 4}" text-anchor="end" class="lbl">{esc(points[-1][0])}</text>')
    out.append("</svg>")
    return "".join(out)


def progress(summary: Mapping[str, int], *, width: int = 600) -> str:
    """A stacked bar of a batch's items by status, and the share that has ended."""
    total = sum(summary.values())
    if total <= 0:
        return ""
    ended = sum(n for s, n in summary.items() if s not in ("queued", "in_progress"))
    pct = 100.0 * ended / total
    out = [
        f'<svg class="chart progress" role="progressbar" aria-valuemin="0" aria-valuemax="100"'
        f' aria-valuenow="{pct:.0f}" viewBox="0 0 {width} 20" width="{width}" height="20"'
        ' xmlns="http://www.w3.org/2000/svg">',
        f'<rect x="0" y="0" width="{width}" height="20" class="track"/>',
    ]
    x = 0.0
    names = [s for s in STATUS_ORDER if s in summary] + [s for s in summary if s not in STATUS_ORDER]
    for s in names:
        w = width * summary[s] / total
        if w > 0:
            out.append(
                f'<rect x="{x:.1f}" y="0" width="{w:.1f}" height="20" class="bar c-{esc(s)}">'
                f"<title>{esc(s)}: {summary[s]}</title></rect>"
            )
            x += w
    out.append("</svg>")
    return f'<div class="progress-wrap">{"".join(out)}<span class="pct">{pct:.0f}% ended</span></div>'


def _fmt(v: float) -> str:
    return f"{v:.0f}" if float(v).is_integer() else f"{v:.3g}"
