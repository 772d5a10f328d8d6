"""Server-rendered SVG charts: pure functions from figures to markup. No JavaScript, nothing fetched.

Money arrives as integer microcents and is labelled with `format_usd`, the function behind the
templates' `usd` filter. Floats appear only as pixel coordinates, never as money.
"""

from collections.abc import Mapping, Sequence
from datetime import date
from html import escape
from typing import Any

from alumia.domain.money import format_usd

PLATFORM_COLOR, BYOK_COLOR = "#2455d6", "#1a7f37"
INK, MUTED, GRID = "#1b1f24", "#5b6470", "#e3e7ec"
PLATFORM_LABEL = "Platform charges"
BYOK_LABEL = "BYOK usage value (list price)"
FONT = 12  # user units; the chart scales with its box, so callers pick a width near the one shown
CHAR = 7  # a generous average character width at FONT, for laying out the legend
LEFT, RIGHT, BOTTOM = 72, 24, 30  # room for the dollar labels and the dates
SWATCH, ROW = 12, 20


def _e(value: object) -> str:
    """Escape for text and double-quoted attribute values alike."""
    return escape(str(value), quote=True)


def _px(value: float) -> str:
    """A coordinate with at most two decimals."""
    return f"{value:.2f}".rstrip("0").rstrip(".")


def nice_step(largest: int, ticks: int = 4) -> int:
    """The smallest 1, 2 or 5 × 10^k microcents such that `ticks` steps reach `largest` (at least 1)."""
    if largest <= 0:
        return 1
    raw = -(-largest // ticks)  # ceiling division, in integers
    magnitude: int = 10 ** (len(str(raw)) - 1)
    for multiple in (1, 2, 5, 10):
        if multiple * magnitude >= raw:
            return multiple * magnitude
    raise AssertionError("unreachable: 10 × magnitude ≥ raw")


def _short(day: date) -> str:
    return f"{day:%b} {day.day}"


def _amount(point: Mapping[str, Any], key: str) -> int:
    """A non-negative whole number of microcents (anything else counts as nothing)."""
    value = point.get(key, 0)
    return max(0, value) if isinstance(value, int) and not isinstance(value, bool) else 0


def _legend(width: int) -> tuple[list[str], int]:
    """The legend's markup, one row if it fits in `width` else one row per item, and its height."""
    out, x, y = [], 8, 6
    for color, label in ((PLATFORM_COLOR, PLATFORM_LABEL), (BYOK_COLOR, BYOK_LABEL)):
        item_width = SWATCH + 6 + CHAR * len(label)
        if x > 8 and x + item_width > width:
            x, y = 8, y + ROW
        out.append(f'<g class="legend"><rect x="{x}" y="{y}" width="{SWATCH}" height="{SWATCH}" rx="2" '
                   f'fill="{color}"/><text x="{x + SWATCH + 6}" y="{y + 10}" fill="{INK}">{_e(label)}</text>'
                   '</g>')
        x += item_width + 20
    return out, y + ROW


def spend_chart(points: Sequence[Mapping[str, Any]], *, chart_id: str = "spend-chart",
                width: int = 720, height: int = 280) -> str:
    """Daily bars, two per day: what the balance was charged, and the list-price value of BYOK usage.

    `points` are the days oldest first, each `{"date": "YYYY-MM-DD", "chargedMicrocents": int,
    "byokCostMicrocents": int}` (as `billing.daily_spend` returns them). The answer is one `<svg>`
    element (`width` × `height` user units, scaling to its box) with a title, a description giving
    the totals, a legend, dollar labels on the y axis, dates on the x axis and a tooltip per day;
    with no money in the period it says so instead of drawing bars. Every text and attribute value
    is escaped; `chart_id` prefixes the ids, so one page can hold several charts.
    """
    days = [(date.fromisoformat(str(p["date"])), _amount(p, "chargedMicrocents"),
             _amount(p, "byokCostMicrocents")) for p in points]
    largest = max((max(d[1], d[2]) for d in days), default=0)
    count = len(days)
    period = f"the last {count} days" if count else "this period"
    span = f" ({_short(days[0][0])} – {_short(days[-1][0])}, UTC)" if days else ""
    title = f"Daily spend, {period}"
    if largest:
        desc = (f"{PLATFORM_LABEL} to the balance and the list-price value of BYOK usage per day{span}. "
                f"Totals: {PLATFORM_LABEL.lower()} {format_usd(sum(d[1] for d in days))}, "
                f"BYOK usage value {format_usd(sum(d[2] for d in days))}.")
    else:
        desc = f"No platform charges and no BYOK usage in {period}{span}."

    legend, top_margin = _legend(width)
    top_margin += 10
    plot_w, plot_h = width - LEFT - RIGHT, height - top_margin - BOTTOM
    baseline = top_margin + plot_h
    step = nice_step(largest)
    top = step * max(1, -(-largest // step))  # the y axis ends on a whole step at or above the tallest bar
    ticks = top // step if largest else 0  # nothing to measure: the $0 baseline alone
    ident = _e(chart_id)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {width} {height}" '
        f'role="img" aria-labelledby="{ident}-title" aria-describedby="{ident}-desc" font-size="{FONT}">',
        f'<title id="{ident}-title">{_e(title)}</title>',
        f'<desc id="{ident}-desc">{_e(desc)}</desc>',
        *legend,
    ]
    for i in range(ticks + 1):
        value = step * i
        y = baseline - plot_h * value / top
        out.append(f'<line x1="{LEFT}" x2="{width - RIGHT}" y1="{_px(y)}" y2="{_px(y)}" '
                   f'stroke="{INK if i == 0 else GRID}" stroke-width="1"/>')
        out.append(f'<text class="y-label" x="{LEFT - 6}" y="{_px(y + 4)}" text-anchor="end" '
                   f'fill="{MUTED}">{_e(format_usd(value))}</text>')
    # Two bars a day, a tooltip over the whole day, and its date under every seventh day back from the last.
    slot = plot_w / max(count, 1)
    bar = slot * 0.36
    for index, (day, platform, byok) in enumerate(days):
        x0 = LEFT + slot * index
        tip = (f"{_short(day)}: {PLATFORM_LABEL.lower()} {format_usd(platform)}, "
               f"BYOK usage value {format_usd(byok)}")
        out.append(f'<g class="day" data-date="{_e(day.isoformat())}"><title>{_e(tip)}</title>'
                   f'<rect class="hit" x="{_px(x0)}" y="{top_margin}" width="{_px(slot)}" '
                   f'height="{plot_h}" fill="transparent"/>')
        for offset, value, color, kind in ((slot * 0.12, platform, PLATFORM_COLOR, "platform"),
                                           (slot * 0.52, byok, BYOK_COLOR, "byok")):
            bar_h = plot_h * value / top
            out.append(f'<rect class="bar {kind}" x="{_px(x0 + offset)}" y="{_px(baseline - bar_h)}" '
                       f'width="{_px(bar)}" height="{_px(bar_h)}" fill="{color}"/>')
        out.append("</g>")
        if (count - 1 - index) % 7 == 0:
            out.append(f'<text class="x-label" x="{_px(x0 + slot / 2)}" y="{height - 10}" '
                       f'text-anchor="middle" fill="{MUTED}">{_e(_short(day))}</text>')
    if not largest:
        out.append(f'<text class="empty" x="{_px(LEFT + plot_w / 2)}" y="{_px(top_margin + plot_h / 2)}" '
                   f'text-anchor="middle" fill="{MUTED}" font-size="{FONT + 2}">'
                   f'{_e(f"No spend in {period}")}</text>')
    out.append("</svg>")
    return "".join(out)
