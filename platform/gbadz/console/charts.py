"""Charts as server-rendered SVG: readable without JavaScript, labelled for screen readers,
and each page shows the same numbers as a table beside its chart.

Colours are the Okabe-Ito palette (distinguishable with colour-vision deficiencies), darkened
where needed for 3:1 contrast against white (WCAG 1.4.11, non-text contrast).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from datetime import date, timedelta
from html import escape
from typing import Any

from markupsafe import Markup

PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#8A6D00", "#56B4E9", "#000000")
TEXT = "#1a1a1a"
MUTED = "#555555"
GRID = "#d0d0d0"


def _svg(width: int, height: int, title: str, body: list[str], chart_id: str) -> Markup:
    # Every text that came from data went through html.escape above.
    return Markup(  # noqa: S704
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" role="img" '
        f'aria-labelledby="{chart_id}-title" class="chart" font-family="system-ui, sans-serif" font-size="12">'
        f'<title id="{chart_id}-title">{escape(title)}</title>' + "".join(body) + "</svg>"
    )


def _nice_max(value: int) -> int:
    if value <= 5:
        return 5
    magnitude: int = 10 ** int(math.log10(value))
    for step in (1, 2, 5, 10):
        if value <= step * magnitude:
            return step * magnitude
    return 10 * magnitude


def _named(route: str, names: dict[str, str]) -> str:
    origin, _, destination = route.partition(" → ")
    return f"{names.get(origin, origin)} → {names.get(destination, destination)}"


def route_label(origin: str, destination: str) -> str:
    return f"{origin} → {destination}"  # codes: the legend translates them


def routes_over_time(
    rows: list[dict[str, Any]], today: date, days: int = 30, t: Callable[[str], str] = str
) -> Markup:
    """Stacked bars: transfers per UTC day, one colour per route (origin → destination)."""
    first = today - timedelta(days=days - 1)
    per_day: dict[str, dict[str, int]] = defaultdict(dict)
    totals: dict[str, int] = defaultdict(int)
    for row in rows:
        route = route_label(row["origin"], row["destination"])
        per_day[row["day"]][route] = per_day[row["day"]].get(route, 0) + int(row["transfers"])
        totals[route] += int(row["transfers"])
    names = {row["origin"]: t(row["origin"]) for row in rows} | {
        row["destination"]: t(row["destination"]) for row in rows
    }
    routes = sorted(totals, key=lambda r: (-totals[r], r))
    colours = {route: PALETTE[i % len(PALETTE)] for i, route in enumerate(routes)}
    width, height, left, top, plot_h = 760, 300, 48, 16, 200
    plot_w = width - left - 16
    peak = max((sum(v.values()) for v in per_day.values()), default=0)
    top_value = _nice_max(peak)
    body: list[str] = []
    for i in range(6):
        value = top_value * i // 5
        y = top + plot_h - plot_h * i / 5
        body.append(f'<line x1="{left}" x2="{width - 16}" y1="{y:.1f}" y2="{y:.1f}" stroke="{GRID}"/>')
        body.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" fill="{TEXT}">{value:,}</text>')
    slot = plot_w / days
    for n in range(days):
        day = first + timedelta(days=n)
        x = left + n * slot
        y = top + plot_h
        for route in routes:
            count = per_day.get(day.isoformat(), {}).get(route, 0)
            if not count:
                continue
            h = plot_h * count / top_value
            y -= h
            label = f"{day.isoformat()} {route}: {count:,}"
            body.append(
                f'<rect x="{x + 1:.1f}" y="{y:.1f}" width="{max(slot - 2, 1):.1f}" height="{h:.1f}" '
                f'fill="{colours[route]}"><title>{escape(label)}</title></rect>'
            )
        if n % 5 == 0 or n == days - 1:
            body.append(
                f'<text x="{x + slot / 2:.1f}" y="{top + plot_h + 16}" text-anchor="middle" fill="{TEXT}">'
                f"{day.strftime('%m-%d')}</text>"
            )
    for i, route in enumerate(routes[:8]):
        lx = left + (i % 3) * 240
        ly = top + plot_h + 40 + (i // 3) * 20
        body.append(f'<rect x="{lx}" y="{ly - 10}" width="12" height="12" fill="{colours[route]}"/>')
        body.append(
            f'<text x="{lx + 18}" y="{ly}" fill="{TEXT}">{escape(_named(route, names))} ({totals[route]:,})</text>'
        )
    if not routes:
        body.append(
            f'<text x="{left + plot_w / 2}" y="{top + plot_h / 2}" text-anchor="middle" fill="{MUTED}">'
            f"{escape(t('no transfers in this period'))}</text>"
        )
    title = f"{t('Transfers per day by route')}, {first.isoformat()} – {today.isoformat()}"
    return _svg(width, height, title, body, "routes")


LOG_MAX = 7  # 10 million individuals at the right edge


def _log_x(value: int, left: float, plot_w: float) -> float:
    return left + plot_w * (math.log10(max(value, 1)) / LOG_MAX)


def threshold_lines(thresholds: Mapping[str, Sequence[int]]) -> list[tuple[int, str]]:
    """The rules' thresholds as (value, label) lines, ascending: ``10,000 SPI``, ``100,000 PI``, ..."""
    lines = [(value, f"{value:,} {kind.upper()}") for kind, values in thresholds.items() for value in values]
    return sorted(lines)


def counters_against_thresholds(
    counters: list[dict[str, Any]], thresholds: Mapping[str, Sequence[int]], t: Callable[[str], str] = str
) -> Markup:
    """Individuals exported this year per exporter (log scale), with the rules' legal thresholds marked."""
    left, right, top, bar, gap = 250, 48, 64, 14, 18
    width = 760
    plot_w = width - left - right
    height = top + max(len(counters), 1) * (2 * bar + gap) + 40
    body: list[str] = []
    for power in range(LOG_MAX + 1):
        x = left + plot_w * power / LOG_MAX
        body.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top - 6}" y2="{height - 30}" stroke="{GRID}"/>')
        body.append(
            f'<text x="{x:.1f}" y="{height - 14}" text-anchor="middle" fill="{TEXT}">{10**power:,}</text>'
        )
    for n, (value, label) in enumerate(threshold_lines(thresholds)):
        x = _log_x(value, left, plot_w)
        label_y = top - 26 + 12 * (n % 2)
        body.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top - 10}" y2="{height - 30}" stroke="#B00020" '
            'stroke-width="2" stroke-dasharray="5 3"/>'
        )
        body.append(
            f'<text x="{x:.1f}" y="{label_y}" text-anchor="middle" fill="#B00020">{escape(label)}</text>'
        )
    for i, row in enumerate(counters):
        y = top + i * (2 * bar + gap)
        exporter = str(row.get("exporter") or row["exporter_org_id"])
        name = f"{exporter} ({t(row['basis'])})"
        body.append(
            f'<text x="{left - 8}" y="{y + bar - 3}" text-anchor="end" fill="{TEXT}">{escape(exporter if len(exporter) <= 34 else exporter[:33] + "…")}</text>'
        )
        body.append(
            f'<text x="{left - 8}" y="{y + 2 * bar - 1}" text-anchor="end" fill="{MUTED}">'
            f"{escape(t(row['basis']))}</text>"
        )
        for j, (kind, colour) in enumerate((("pi_individuals", PALETTE[0]), ("spi_individuals", PALETTE[1]))):
            value = int(row[kind])
            w = _log_x(value, left, plot_w) - left if value else 0
            label = f"{name} {'PI' if j == 0 else 'SPI'}: {value:,}"
            body.append(
                f'<rect x="{left}" y="{y + j * bar}" width="{w:.1f}" height="{bar - 2}" fill="{colour}">'
                f"<title>{escape(label)}</title></rect>"
            )
    legend_y = 14
    body.append(f'<rect x="{left}" y="{legend_y - 10}" width="12" height="12" fill="{PALETTE[0]}"/>')
    body.append(f'<text x="{left + 18}" y="{legend_y}" fill="{TEXT}">{escape(t("PI individuals"))}</text>')
    body.append(f'<rect x="{left + 170}" y="{legend_y - 10}" width="12" height="12" fill="{PALETTE[1]}"/>')
    body.append(f'<text x="{left + 188}" y="{legend_y}" fill="{TEXT}">{escape(t("SPI individuals"))}</text>')
    title = t("Individuals exported year to date per exporter against the legal thresholds")
    return _svg(width, height, title, body, "counters")


def expiring(rows: list[dict[str, Any]], horizon: int = 60, t: Callable[[str], str] = str) -> Markup:
    """Working days left for each mechanism expiring within the horizon; under 10 in red."""
    left, right, top, bar = 260, 24, 10, 18
    width = 760
    plot_w = width - left - right
    height = top + max(len(rows), 1) * (bar + 8) + 30
    body: list[str] = []
    for days in range(0, horizon + 1, 10):
        x = left + plot_w * days / horizon
        body.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{height - 24}" stroke="{GRID}"/>')
        body.append(f'<text x="{x:.1f}" y="{height - 8}" text-anchor="middle" fill="{TEXT}">{days}</text>')
    ordered = sorted(rows, key=lambda r: r["working_days_left"])
    for i, row in enumerate(ordered):
        y = top + i * (bar + 8)
        left_days = int(row["working_days_left"])
        colour = "#B00020" if left_days < 10 else PALETTE[0]
        label = f"{t(row['kind'])} {row['reference']}"
        body.append(
            f'<text x="{left - 8}" y="{y + bar - 4}" text-anchor="end" fill="{TEXT}">{escape(label[:36])}</text>'
        )
        w = plot_w * min(left_days, horizon) / horizon
        body.append(
            f'<rect x="{left}" y="{y}" width="{max(w, 2):.1f}" height="{bar}" fill="{colour}">'
            f"<title>{escape(label)}: {left_days} working days left (valid to {row['valid_to']})</title></rect>"
        )
    if not rows:
        body.append(
            f'<text x="{left + plot_w / 2}" y="{top + 14}" text-anchor="middle" fill="{MUTED}">'
            f"{escape(t('nothing expires in this window'))}</text>"
        )
    return _svg(width, height, t("Mechanisms expiring soon: working days left"), body, "expiring")


#: Groups drawn in one release chart (the table beside it lists them all).
RELEASE_BARS_MAX = 40


def _group_label(row: Sequence[Any], keys: Sequence[int]) -> str:
    if not keys:
        return "—"
    return " · ".join("—" if row[i] is None else str(row[i]) for i in keys)


def release_bars(
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    accuracy: Sequence[Mapping[str, Any]],
    t: Callable[[str], str] = str,
    most: int = 3,
) -> list[Markup]:
    """One horizontal bar chart per released aggregate (at most ``most``): a bar per group with
    its value, and a whisker of ± the noise at 95% where the release states it (counts, sums).

    Horizontal bars keep long group labels (a department and a month) readable, and the chart
    grows with the groups instead of squeezing them. Values are drawn from zero; a negative
    noisy sum is drawn to the left of the axis. The values come from a DP release, never a row.
    """
    names = [str(a["name"]) for a in accuracy if a.get("name") in columns]
    if not names:  # a release without stated aggregates: every numeric column not a key
        names = [
            c for i, c in enumerate(columns) if rows and all(isinstance(r[i], int | float) for r in rows)
        ]
    keys = [i for i, c in enumerate(columns) if c not in names]
    noise = {str(a["name"]): a.get("accuracy") for a in accuracy}
    shown = list(rows)[:RELEASE_BARS_MAX]
    out: list[Markup] = []
    for n, name in enumerate(names[:most]):
        col = list(columns).index(name)
        values = [
            r[col] if isinstance(r[col], int | float) and not isinstance(r[col], bool) else None
            for r in shown
        ]
        spread = float(noise.get(name) or 0.0)
        step = _step(
            max([v + spread for v in values if v is not None] + [0.0])
            - min([v - spread for v in values if v is not None] + [0.0])
        )
        # The axis from a round number at or below the lowest whisker to one at or above the highest.
        low = step * math.floor(min([v - spread for v in values if v is not None] + [0.0]) / step)
        high = step * math.ceil(max([v + spread for v in values if v is not None] + [0.0]) / step)
        span = (high - low) or 1.0
        left, right, top, bar, gap = 220, 90, 26, 16, 6
        width = 760
        plot_w = width - left - right
        height = top + max(len(shown), 1) * (bar + gap) + 28
        zero = left + plot_w * (0 - low) / span
        body: list[str] = [
            f'<text x="{left}" y="14" fill="{TEXT}" font-weight="600">{escape(name)}</text>',
            f'<line x1="{zero:.1f}" x2="{zero:.1f}" y1="{top - 4}" y2="{height - 22}" stroke="{MUTED}"/>',
        ]
        for tick in range(round(span / step) + 1):
            value = low + step * tick
            x = left + plot_w * (value - low) / span
            body.append(
                f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top - 4}" y2="{height - 22}" stroke="{GRID}"/>'
            )
            body.append(
                f'<text x="{x:.1f}" y="{height - 8}" text-anchor="middle" fill="{TEXT}">{_tick(value)}</text>'
            )
        for i, (row, value) in enumerate(zip(shown, values, strict=True)):
            y = top + i * (bar + gap)
            label = _group_label(row, keys)
            body.append(
                f'<text x="{left - 8}" y="{y + bar - 3}" text-anchor="end" fill="{TEXT}">'
                f"{escape(label if len(label) <= 30 else label[:29] + '…')}</text>"
            )
            if value is None:
                body.append(f'<text x="{zero + 4:.1f}" y="{y + bar - 3}" fill="{MUTED}">—</text>')
                continue
            x_end = left + plot_w * (value - low) / span
            x0, w = min(zero, x_end), abs(x_end - zero)
            said = f"{label}: {_tick(value)}" + (f" ± {_tick(spread)}" if spread else "")
            body.append(
                f'<rect x="{x0:.1f}" y="{y}" width="{max(w, 1):.1f}" height="{bar}" fill="{PALETTE[n % len(PALETTE)]}">'
                f"<title>{escape(said)}</title></rect>"
            )
            if spread:
                a = left + plot_w * (value - spread - low) / span
                b = left + plot_w * (value + spread - low) / span
                mid = y + bar / 2
                body.append(
                    f'<path d="M{a:.1f} {mid - 4:.1f}V{mid + 4:.1f}M{a:.1f} {mid:.1f}H{b:.1f}M{b:.1f} {mid - 4:.1f}V{mid + 4:.1f}" '
                    f'stroke="{TEXT}" stroke-width="1.5" fill="none"/>'
                )
            text_x = max(x_end, zero, left + plot_w * (value + spread - low) / span) + 6
            body.append(f'<text x="{text_x:.1f}" y="{y + bar - 3}" fill="{TEXT}">{_tick(value)}</text>')
        if not shown:
            body.append(
                f'<text x="{left + plot_w / 2}" y="{top + 12}" text-anchor="middle" fill="{MUTED}">'
                f"{escape(t('no group was released'))}</text>"
            )
        title = f"{t('Released values per group')}: {name}" + (
            f" ({t('whiskers: ± noise at 95%')})" if spread else ""
        )
        out.append(_svg(width, height, title, body, f"release-{n}"))
    return out


def _step(span: float) -> float:
    """A round step (1, 2 or 5 times a power of ten) that cuts ``span`` into at most five parts."""
    if span <= 0:
        return 1.0
    magnitude = 10.0 ** math.floor(math.log10(span / 5))
    for factor in (1, 2, 5, 10):
        if span / (factor * magnitude) <= 5:
            return factor * magnitude
    return 10 * magnitude  # pragma: no cover - 10 x magnitude always fits


def _tick(value: float) -> str:
    """A chart number: thousands separated, at most two decimals."""
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.2f}"
