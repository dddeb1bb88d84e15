"""Charts as small inline SVG strings, written by hand: no plotting library, nothing to load, works from file://.

Every chart's ``<svg>`` states its plot area in pixels (``data-x0 data-x1 data-y0 data-y1``) and the data range
drawn there (``data-xmin data-xmax data-ymin data-ymax``), so what is drawn can be read back and checked against
the numbers it came from (the browser tests do).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

import supervision as sv

KEPT_COLOR, FLAGGED_COLOR, DROPPED_COLOR = "#2e7d32", "#ef6c00", "#c62828"
STATUS_COLORS = {"kept": KEPT_COLOR, "flagged": FLAGGED_COLOR, "dropped": DROPPED_COLOR}


def class_color(index: int) -> str:
    """The colour of the ``index``-th class, the same one the annotated previews use (supervision's palette)."""
    return sv.ColorPalette.DEFAULT.by_idx(index).as_hex()


@dataclass(frozen=True)
class Frame:
    """A plot area inside an SVG of ``width`` x ``height`` and the data range it maps."""

    width: int = 360
    height: int = 220
    left: int = 44
    right: int = 12
    top: int = 12
    bottom: int = 34
    xmin: float = 0.0
    xmax: float = 1.0
    ymin: float = 0.0
    ymax: float = 1.0

    @property
    def x0(self) -> float:
        return self.left

    @property
    def x1(self) -> float:
        return self.width - self.right

    @property
    def y0(self) -> float:
        return self.top

    @property
    def y1(self) -> float:
        return self.height - self.bottom

    def x(self, v: float) -> float:
        return round(self.x0 + (v - self.xmin) / ((self.xmax - self.xmin) or 1) * (self.x1 - self.x0), 2)

    def y(self, v: float) -> float:
        return round(self.y1 - (v - self.ymin) / ((self.ymax - self.ymin) or 1) * (self.y1 - self.y0), 2)

    def open(self, kind: str, title: str) -> str:
        return (
            f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" data-chart="{escape(kind)}" '
            f'width="{self.width}" height="{self.height}" viewBox="0 0 {self.width} {self.height}" '
            f'data-x0="{self.x0}" data-x1="{self.x1}" data-y0="{self.y0}" data-y1="{self.y1}" '
            f'data-xmin="{self.xmin}" data-xmax="{self.xmax}" data-ymin="{self.ymin}" data-ymax="{self.ymax}" '
            f'role="img" aria-label="{escape(title)}"><title>{escape(title)}</title>'
        )

    def axes(self, xlabel: str, ylabel: str, xticks: Sequence[float], yticks: Sequence[float]) -> str:
        parts = [(f'<rect x="{self.x0}" y="{self.y0}" width="{self.x1 - self.x0}" height="{self.y1 - self.y0}" '
                 'fill="none" stroke="#bbb"/>')]
        for t in yticks:
            parts.append(f'<line x1="{self.x0}" x2="{self.x1}" y1="{self.y(t)}" y2="{self.y(t)}" stroke="#eee"/>'
                         f'<text x="{self.x0 - 4}" y="{self.y(t) + 3}" text-anchor="end">{_tick(t)}</text>')
        for t in xticks:
            parts.append(f'<text x="{self.x(t)}" y="{self.y1 + 12}" text-anchor="middle">{_tick(t)}</text>')
        parts.append(f'<text x="{(self.x0 + self.x1) / 2}" y="{self.height - 4}" text-anchor="middle">'
                     f'{escape(xlabel)}</text>')
        parts.append(f'<text transform="translate(10 {(self.y0 + self.y1) / 2}) rotate(-90)" text-anchor="middle">'
                     f'{escape(ylabel)}</text>')
        return "".join(parts)


def _tick(v: float) -> str:
    return f"{v:g}" if abs(v) < 1e4 else f"{v:.2g}"


def _ticks(top: float, n: int = 4) -> list[float]:
    """About ``n`` round tick values (1, 2 or 5 times a power of ten apart) from 0 to ``top``."""
    if top <= 0:
        return [0.0]
    raw = top / n
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    return [round(i * step, 9) for i in range(int(top / step + 1e-9) + 1)]


def histogram(series: dict[str, Sequence[int]], title: str, xlabel: str = "score") -> str:
    """Stacked counts per equal-width bin over [0, 1], one colour per series (``kept``, ``flagged``, ``dropped``)."""
    bins = len(next(iter(series.values()), []))
    totals = [sum(s[i] for s in series.values()) for i in range(bins)]
    top = max(max(totals, default=0), 1)
    f = Frame(top=24, ymax=float(top))
    parts = [f.open("histogram", title), f.axes(xlabel, "boxes", [0, 0.25, 0.5, 0.75, 1], _ticks(top))]
    width = (f.x1 - f.x0) / max(bins, 1)
    base = [0] * bins
    for name, counts in series.items():
        color = STATUS_COLORS.get(name, "#607d8b")
        for i, n in enumerate(counts):
            if n:
                y_top, y_bottom = f.y(base[i] + n), f.y(base[i])
                parts.append(
                    f'<rect class="bar" data-series="{escape(name)}" data-bin="{i}" data-value="{n}" '
                    f'x="{round(f.x0 + i * width, 2)}" y="{y_top}" width="{round(width - 1, 2)}" '
                    f'height="{round(y_bottom - y_top, 2)}" fill="{color}"><title>{escape(name)} '
                    f'{i / bins:.2f}–{(i + 1) / bins:.2f}: {n}</title></rect>'
                )
            base[i] += n
    return "".join(parts) + legend(f, list(series)) + "</svg>"


def legend(f: Frame, names: Sequence[str], colors: Sequence[str] | None = None) -> str:
    colors = colors or [STATUS_COLORS.get(n, "#607d8b") for n in names]
    parts = []
    for i, (name, color) in enumerate(zip(names, colors)):
        x = f.x0 + i * 70
        parts.append(f'<rect x="{x}" y="{f.y0 - 14}" width="9" height="9" fill="{color}"/>'
                     f'<text x="{x + 12}" y="{f.y0 - 6}">{escape(name)}</text>')
    return "".join(parts)


def bars(items: Sequence[tuple[str, float]], title: str, xlabel: str, xmax: float | None = None,
         fmt: str = "{:.3g}") -> str:
    """Horizontal bars, one per ``(label, value)``, labelled with the value; ``None`` values are left empty."""
    top = xmax if xmax is not None else max([v for _, v in items if v is not None] + [1e-9])
    row = 18
    f = Frame(width=480, height=max(60, 30 + row * len(items)), left=150, right=56, bottom=22, xmax=float(top),
              ymax=float(max(len(items), 1)))
    parts = [f.open("bars", title)]
    for i, (label, value) in enumerate(items):
        y = f.y0 + i * row
        parts.append(f'<text x="{f.x0 - 6}" y="{y + 12}" text-anchor="end">{escape(_short(label))}</text>')
        if value is None:
            parts.append(f'<text x="{f.x0 + 4}" y="{y + 12}" fill="#888">n/a</text>')
            continue
        w = round(f.x(min(value, top)) - f.x0, 2)
        parts.append(f'<rect class="bar" data-label="{escape(label)}" data-value="{value}" x="{f.x0}" y="{y + 2}" '
                     f'width="{w}" height="{row - 5}" fill="#1565c0"><title>{escape(label)}: {value}</title></rect>'
                     f'<text x="{f.x0 + w + 4}" y="{y + 12}">{escape(fmt.format(value))}</text>')
    parts.append(f'<text x="{(f.x0 + f.x1) / 2}" y="{f.height - 6}" text-anchor="middle">{escape(xlabel)}</text>')
    return "".join(parts) + "</svg>"


def _short(label: str, n: int = 24) -> str:
    return label if len(label) <= n else label[: n - 1] + "…"


def curves(series: dict[str, tuple[Sequence[float], Sequence[float]]], title: str, xlabel: str = "recall",
           ylabel: str = "precision", colors: Sequence[str] | None = None) -> str:
    """Lines over [0, 1]², one ``<polyline data-series=NAME>`` per series of ``(xs, ys)``."""
    f = Frame(width=380, height=260)
    ticks = [0, 0.25, 0.5, 0.75, 1]
    parts = [f.open("curves", title), f.axes(xlabel, ylabel, ticks, ticks)]
    names = list(series)
    colors = list(colors or [class_color(i) for i in range(len(names))])
    for name, color in zip(names, colors):
        xs, ys = series[name]
        points = " ".join(f"{f.x(x)},{f.y(y)}" for x, y in zip(xs, ys) if x is not None and y is not None)
        parts.append(f'<polyline class="curve" data-series="{escape(name)}" points="{points}" fill="none" '
                     f'stroke="{color}" stroke-width="1.6"><title>{escape(name)}</title></polyline>')
    return "".join(parts) + "</svg>"


def reliability(edges: Sequence[float], confidence: Sequence[float | None], accuracy: Sequence[float | None],
                count: Sequence[int], title: str) -> str:
    """A reliability diagram: per score bin, the fraction of true positives (bars) against the diagonal."""
    f = Frame(width=380, height=260)
    ticks = [0, 0.25, 0.5, 0.75, 1]
    parts = [f.open("reliability", title), f.axes("score", "fraction correct", ticks, ticks),
             f'<line x1="{f.x(0)}" y1="{f.y(0)}" x2="{f.x(1)}" y2="{f.y(1)}" stroke="#999" stroke-dasharray="4 3"/>']
    for i in range(len(edges) - 1):
        acc = accuracy[i] if i < len(accuracy) else None
        n = count[i] if i < len(count) else 0
        if acc is None or not n:
            continue
        x, x_end = f.x(edges[i]), f.x(edges[i + 1])
        conf = confidence[i] if i < len(confidence) else None
        parts.append(
            f'<rect class="bar" data-bin="{i}" data-value="{acc}" x="{x}" y="{f.y(acc)}" '
            f'width="{round(x_end - x - 1, 2)}" height="{round(f.y(0) - f.y(acc), 2)}" fill="#1565c0" '
            f'fill-opacity="0.75"><title>{edges[i]:g}–{edges[i + 1]:g}: {n} boxes, accuracy {acc:.3f}'
            f'{"" if conf is None else f", mean score {conf:.3f}"}</title></rect>'
        )
        if conf is not None:
            parts.append(f'<circle cx="{f.x(conf)}" cy="{f.y(acc)}" r="2.5" fill="#c62828"/>')
    return "".join(parts) + "</svg>"
