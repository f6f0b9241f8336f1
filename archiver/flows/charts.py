"""Small server-rendered SVG charts for the HTML report: a line with a band, lines, bars, a
calendar heatmap and a matrix heatmap.

Our own rather than a library: the report must open offline with no script, stay small, and
every text in it may come from the API; a few hundred lines of SVG we control do all three.
Every chart is an `<svg role="img">` with a `<title>` and `aria-label`; the report puts a table
of the same numbers next to it. Colors are the Okabe-Ito palette (distinguishable with the
common color-vision deficiencies), and good/bad is never told by red against green alone.
Every text goes through `shown` (control characters escaped, then HTML-escaped).
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Iterable, Sequence

from markupsafe import Markup, escape

from archiver.textsafe import safe_text

# Okabe & Ito (2008), "Color Universal Design"
BLUE, SKY, GREEN, YELLOW, ORANGE, VERMILLION, PURPLE, BLACK = (
    "#0072B2", "#56B4E9", "#009E73", "#F0E442", "#E69F00", "#D55E00", "#CC79A7", "#000000")
SERIES = (BLUE, ORANGE, GREEN, PURPLE, SKY, VERMILLION, YELLOW, BLACK)
EMPTY = "#eeeeee"
# success share -> color, from bad to good; lightness changes too, so it also reads in grey
RATE_STEPS = ((0.5, VERMILLION), (0.8, ORANGE), (0.95, YELLOW), (0.999, SKY), (2.0, BLUE))
RATE_LEGEND = (("< 50 %", VERMILLION), ("50–80 %", ORANGE), ("80–95 %", YELLOW), ("95–99.9 %", SKY),
               ("100 %", BLUE), ("no finished jobs", EMPTY))
WIDTH, HEIGHT, LEFT, RIGHT, TOP, BOTTOM = 720, 170, 56, 12, 10, 24


def shown(value: object) -> Markup:
    """Any value as HTML text: markup we built stays, everything else is text with control and
    bidi characters made visible (textsafe) and <, >, &, quotes escaped. The template's default filter."""
    if value is None:
        return Markup("")
    if hasattr(value, "__html__"):
        return Markup(value)
    return escape(safe_text(value))


def color_of_rate(rate: float | None) -> str:
    if rate is None:
        return EMPTY
    return next(color for bound, color in RATE_STEPS if rate < bound)


def _n(value: float) -> str:
    """A coordinate, short: one decimal at most."""
    return f"{value:.1f}".rstrip("0").rstrip(".")


def _svg(title: str, width: int, height: int, body: Iterable[str]) -> Markup:
    label = shown(title)
    return Markup(f'<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-label="{label}" '
                  f'viewBox="0 0 {width} {height}" width="{width}" height="{height}">'
                  f"<title>{label}</title>{''.join(body)}</svg>")


def short_number(value: float) -> str:
    for bound, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= bound:
            return f"{value / bound:.3g}{suffix}"
    return f"{value:.3g}"


class Frame:
    """The x axis (one slot per day) and a linear y axis from 0 to `top`."""

    def __init__(self, days: Sequence[date], top: float, height: int = HEIGHT) -> None:
        self.days, self.top, self.height = list(days), top or 1.0, height
        self.step = (WIDTH - LEFT - RIGHT) / max(len(self.days), 1)
        self.index = {d: i for i, d in enumerate(self.days)}

    def x(self, day: date) -> float:
        return LEFT + self.step * (self.index[day] + 0.5)

    def y(self, value: float) -> float:
        return TOP + (self.height - TOP - BOTTOM) * (1 - min(value, self.top) / self.top)

    def axes(self, unit: str = "") -> list[str]:
        base = self.height - BOTTOM
        parts = [f'<path d="M{LEFT} {TOP}V{base}H{WIDTH - RIGHT}" fill="none" stroke="#555"/>']
        for share in (0.5, 1.0):
            y = _n(self.y(self.top * share))
            parts.append(f'<text x="{LEFT - 4}" y="{y}" text-anchor="end" dy="4">'
                         f"{shown(short_number(self.top * share) + unit)}</text>")
        if self.days:
            for day in labelled_days(self.days):
                parts.append(f'<text x="{_n(self.x(day))}" y="{base + 16}" text-anchor="middle">'
                             f"{day:%b %d}</text>")
        return parts

    def path(self, points: list[tuple[date, float | None]]) -> str:
        """A polyline that breaks where a value is missing."""
        commands, pen_down = [], False
        for day, value in points:
            if value is None:
                pen_down = False
                continue
            commands.append(("L" if pen_down else "M") + f"{_n(self.x(day))} {_n(self.y(value))}")
            pen_down = True
        return "".join(commands)


def line_band(title: str, days: Sequence[date], middle: dict[date, float], low: dict[date, float],
              high: dict[date, float], marks: Sequence[tuple[date, float, str]] = (), unit: str = "") -> Markup:
    """The middle line (p50) over a shaded band (p5-p95) and marked points (anomalies, as
    vermillion diamonds: shape and color both)."""
    values = [*high.values(), *middle.values(), *(v for _, v, _ in marks)]
    frame = Frame(days, max(values, default=1.0))
    band = [(d, high[d], low[d]) for d in frame.days if d in high and d in low]
    body = frame.axes(unit)
    if band:
        upper = "".join(("L" if i else "M") + f"{_n(frame.x(d))} {_n(frame.y(h))}" for i, (d, h, _) in enumerate(band))
        lower = "".join(f"L{_n(frame.x(d))} {_n(frame.y(lo))}" for d, _, lo in reversed(band))
        body.append(f'<path d="{upper}{lower}Z" fill="{SKY}" fill-opacity="0.35" stroke="none"/>')
    body.append(f'<path d="{frame.path([(d, middle.get(d)) for d in frame.days])}" fill="none" '
                f'stroke="{BLUE}" stroke-width="2"/>')
    body.extend(_marks(frame, marks))
    return _svg(title, WIDTH, HEIGHT, body)


def _marks(frame: "Frame", marks: Sequence[tuple[date, float, str]]) -> list[str]:
    """A vermillion diamond per marked day on the chart, its label as the tooltip."""
    return [f'<path d="M{_n(frame.x(day))} {_n(frame.y(value) - 6)}l6 6-6 6-6-6z" fill="{VERMILLION}" '
            f'stroke="#000"><title>{shown(label)}</title></path>' for day, value, label in marks if day in frame.index]


def lines(title: str, days: Sequence[date], series: Sequence[tuple[str, dict[date, float]]],
          marks: Sequence[tuple[date, float, str]] = (), unit: str = "") -> Markup:
    """One line per series (at most len(SERIES) colors, each also dashed differently)."""
    top = max((v for _, values in series for v in values.values()), default=1.0)
    frame = Frame(days, top)
    body = frame.axes(unit)
    for i, (name, values) in enumerate(series):
        dash = ("", ' stroke-dasharray="6 3"', ' stroke-dasharray="2 2"')[i % 3]
        body.append(f'<path d="{frame.path([(d, values.get(d)) for d in frame.days])}" fill="none" '
                    f'stroke="{SERIES[i % len(SERIES)]}" stroke-width="2"{dash}><title>{shown(name)}</title></path>')
    body.extend(_marks(frame, marks))
    return _svg(title, WIDTH, HEIGHT, body)


def bars(title: str, days: Sequence[date], values: dict[date, float], unit: str = "",
         color: str = BLUE) -> Markup:
    frame = Frame(days, max(values.values(), default=1.0))
    width = max(frame.step - 1, 1)
    body = frame.axes(unit)
    for day, value in values.items():
        if day in frame.index and value:
            y = frame.y(value)
            body.append(f'<rect x="{_n(frame.x(day) - width / 2)}" y="{_n(y)}" width="{_n(width)}" '
                        f'height="{_n(HEIGHT - BOTTOM - y)}" fill="{color}"><title>{day}: '
                        f"{shown(short_number(value) + unit)}</title></rect>")
    return _svg(title, WIDTH, HEIGHT, body)


def calendar(title: str, start: date, end: date, cells: dict[date, tuple[float | None, str]]) -> Markup:
    """GitHub-style: a column per week (Monday on top), a square per day colored by its success
    share; each square's tooltip says the numbers."""
    first = start - timedelta(days=start.weekday())
    weeks = (end - first).days // 7 + 1
    size, gap, left, top = 12, 2, 30, 16
    body = [f'<text x="0" y="{top + 9 + (size + gap) * row}">{name}</text>'
            for row, name in ((0, "Mon"), (3, "Thu"), (6, "Sun"))]
    day = start
    while day <= end:
        week, row = (day - first).days // 7, day.weekday()
        rate, label = cells.get(day, (None, "no jobs"))
        if day.day == 1 or (day == start and day.day < 20):
            body.append(f'<text x="{left + week * (size + gap)}" y="{top - 4}">{day:%b}</text>')
        body.append(f'<rect x="{left + week * (size + gap)}" y="{top + row * (size + gap)}" width="{size}" '
                    f'height="{size}" fill="{color_of_rate(rate)}"><title>{day}: {shown(label)}</title></rect>')
        day += timedelta(days=1)
    return _svg(title, max(left + weeks * (size + gap) + 10, 200), top + 7 * (size + gap) + 4, body)


def labelled_days(days: Sequence[date]) -> list[date]:
    """The first, middle and last day, each once, in order: a set's order would follow the hash
    seed, and the same archive would give a page with other bytes each run."""
    return sorted({days[0], days[len(days) // 2], days[-1]})


def matrix(title: str, days: Sequence[date], rows: Sequence[tuple[str, dict[date, tuple[float | None, str]]]]) -> Markup:
    """A row of day cells per named series (package), colored by success share like the calendar."""
    label_width, height, top = 190, 14, 16
    cell = (WIDTH - label_width - RIGHT) / max(len(days), 1)
    index = {d: i for i, d in enumerate(days)}
    body = []
    if days:
        for day in labelled_days(days):
            body.append(f'<text x="{_n(label_width + cell * index[day])}" y="{top - 4}">{day:%b %d}</text>')
    for r, (name, cells) in enumerate(rows):
        y = top + r * height
        text = safe_text(name)
        body.append(f'<text x="{label_width - 6}" y="{y + 11}" text-anchor="end">'
                    f"{shown(text if len(text) <= 28 else text[:27] + '…')}</text>")
        for day, (rate, label) in cells.items():
            if day in index:
                body.append(f'<rect x="{_n(label_width + cell * index[day])}" y="{y}" width="{_n(max(cell - 0.5, 0.5))}" '
                            f'height="{height - 2}" fill="{color_of_rate(rate)}"><title>{day}: {shown(label)}</title></rect>')
    return _svg(title, WIDTH, top + len(rows) * height + 4, body)


def legend(entries: Sequence[tuple[str, str]]) -> Markup:
    """A legend as HTML (swatch and words), so it reads without the colors too."""
    items = "".join(f'<li><span class="swatch" style="background:{color}"></span>{shown(label)}</li>'
                    for label, color in entries)
    return Markup(f'<ul class="legend">{items}</ul>')
