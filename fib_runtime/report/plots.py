"""PNG plots of a report panel: latency against the x axis for every solution.

Needs matplotlib (the `report` extra: `pip install 'fib-runtime[report]'`), imported only when
a plot is drawn, through the Agg canvas directly (no pyplot, no global backend switch).

Each solution is a coloured line, with a vertical bar at each point where its traces give a
spread (median +- the interquartile half-width of the samples, see gather); the original
(the engine's own function) is a black dashed line; the dispatched choice at each measured
key is a large ringed dot in its solution's colour; held-out points are hollow diamonds in
their solution's colour, the dispatched one a star with a red edge. An axis is logarithmic
(base 2 for x) when it spans more than 10x. The legend sits below the subplots, its labels
short (the definition's name is the title), and the figure is widened until it fits.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fib_runtime.errors import FibError
from fib_runtime.report.gather import MAX_GROUPS, Group, Panel

INSTALL_HINT = "pip install 'fib-runtime[report]'"
_LOG_SPAN = 10.0
_DPI = 100
_MIN_VERSION = (3, 7)  # legends placed "outside" a constrained layout
_LEGEND_COLUMNS = 3


class PlotsUnavailable(FibError):
    """matplotlib (the `report` extra) is not installed."""


def require_matplotlib() -> None:
    """Raise PlotsUnavailable, saying how to install it, when matplotlib cannot be imported."""
    try:
        import matplotlib
    except ImportError:
        raise PlotsUnavailable(f"matplotlib is not installed, so no plots were drawn: "
                               f"{INSTALL_HINT} (or pass --no-plots)") from None
    version = tuple(int(p) for p in re.findall(r"\d+", matplotlib.__version__)[:2])
    if version < _MIN_VERSION:
        raise PlotsUnavailable(f"matplotlib {matplotlib.__version__} is too old (the plots "
                               f"need >= {'.'.join(map(str, _MIN_VERSION))}), so no plots "
                               f"were drawn: {INSTALL_HINT} (or pass --no-plots)")


def draw(panel: Panel, path: Path) -> Path:
    """Draw `panel` (its first MAX_GROUPS groups, one subplot each) into the PNG `path`."""
    figure = figure_of(panel)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    return path


def figure_of(panel: Panel) -> Any:
    """The matplotlib Figure of a panel (Agg canvas)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    groups = panel.groups()[:MAX_GROUPS]
    colours = _colours(panel)
    handles = _legend(panel, colours)
    width, height = figure_size(len(groups), len(handles))
    columns = min(3, len(groups))
    figure = Figure(figsize=(width, height), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(math.ceil(len(groups) / columns), columns, squeeze=False).ravel()
    for ax, group in zip(axes, groups, strict=False):
        _draw_group(ax, panel, group, colours)
    for ax in axes[len(groups):]:
        ax.set_visible(False)
    figure.suptitle(panel.name)
    legend = figure.legend(handles=handles, loc="outside lower center", fontsize="small",
                           ncols=min(_LEGEND_COLUMNS, len(handles)), frameon=False)
    _fit_width(figure, legend)
    return figure


def figure_size(subplots: int, legend_entries: int) -> tuple[float, float]:
    """Inches of a panel's figure: up to 3 subplots a row, the legend below them."""
    columns = min(3, subplots)
    rows = math.ceil(subplots / columns)
    legend_rows = math.ceil(legend_entries / _LEGEND_COLUMNS)
    return max(6.8, 4.8 * columns + 0.6), 3.4 * rows + 0.7 + 0.25 * legend_rows


def _fit_width(figure: Any, legend: Any) -> None:
    """Widen the figure until the legend lies inside it (never clipped at the sides)."""
    width = legend.get_window_extent(figure.canvas.get_renderer()).width / figure.dpi + 0.3
    if width > figure.get_figwidth():
        figure.set_figwidth(width)


def label(panel: Panel, name: str) -> str:
    """A solution's legend label: its name without the definition's (the plot's title), an
    original as `original: module.function`."""
    prefix = panel.definition.name + "__"
    short = name[len(prefix):] if name.startswith(prefix) and len(name) > len(prefix) else name
    if name in panel.originals:
        short = short.removeprefix("original__")
        return f"original: {short}"
    return short


def _colours(panel: Panel) -> dict[str, Any]:
    """A fixed colour per solution (originals black), stable across a panel's subplots."""
    from matplotlib import colormaps

    drawn = {*panel.latencies, *(p.solution for p in panel.held_out)}
    names = sorted(drawn - panel.originals)
    cmap = colormaps["tab10" if len(names) <= 10 else "tab20"]
    colours: dict[str, Any] = {n: cmap(i % cmap.N) for i, n in enumerate(names)}
    colours.update(dict.fromkeys(drawn & panel.originals, "black"))
    return colours


def _draw_group(ax: Any, panel: Panel, group: Group, colours: dict[str, Any]) -> None:
    x_axis = panel.x_axis()
    assert x_axis is not None
    xi = panel.var_axes.index(x_axis)
    xs_all: list[float] = []
    ys_all: list[float] = []
    for name in sorted(panel.latencies, key=lambda n: (n in panel.originals, n)):
        points = sorted((key[xi], panel.latencies[name][key]) for key in group.keys
                        if key in panel.latencies[name])
        if not points:
            continue
        xs, ys = zip(*points, strict=True)
        original = name in panel.originals
        ax.plot(xs, ys, color=colours[name], linestyle="--" if original else "-",
                marker="o" if original else ".", linewidth=1.8 if original else 1.3,
                markersize=4, zorder=3 if original else 2)
        _spread_bars(ax, panel, name, group, xi, colours[name])
        xs_all += xs
        ys_all += ys
    dispatched = panel.dispatched()
    chosen = [(key[xi], panel.latencies[dispatched[key]][key], dispatched[key])
              for key in group.keys if key in dispatched]
    if chosen:
        ax.scatter([c[0] for c in chosen], [c[1] for c in chosen], s=70, zorder=4,
                   c=[colours[c[2]] for c in chosen], edgecolors="black", linewidths=1.2)
    fixed = dict(group.fixed)
    for point in panel.held_out:
        x = point.axis(x_axis)
        if x is None or any(point.axis(a) != v for a, v in fixed.items()):
            continue
        colour = colours.get(point.solution, "grey")
        if point.dispatched:
            ax.scatter([x], [point.latency_ms], marker="*", s=170, c=[colour],
                       edgecolors="red", linewidths=1.2, zorder=6)
        else:
            ax.scatter([x], [point.latency_ms], marker="D", s=34, facecolors="none",
                       edgecolors=[colour], linewidths=1.3, zorder=5)
        xs_all.append(x)
        ys_all.append(point.latency_ms)
    _scale(ax, xs_all, ys_all)
    ax.set_xlabel(x_axis)
    ax.set_ylabel("latency (ms)")
    ax.grid(True, which="major", alpha=0.3)
    if group.fixed:
        ax.set_title(", ".join(f"{a}={v}" for a, v in group.fixed), fontsize="medium")


def _spread_bars(ax: Any, panel: Panel, name: str, group: Group, xi: int, colour: Any) -> None:
    """A vertical bar over each point of `name` whose traces give a spread."""
    spreads = panel.spreads.get(name, {})
    bars = [(key[xi], panel.latencies[name][key], spreads[key]) for key in group.keys
            if key in spreads and key in panel.latencies[name]]
    if not bars:
        return
    xs = [x for x, _, _ in bars]
    ys = [y for _, y, _ in bars]
    below = [min(y * s, y * 0.999) for _, y, s in bars]  # stays above 0 on a log axis
    above = [y * s for _, y, s in bars]
    ax.errorbar(xs, ys, yerr=[below, above], fmt="none", ecolor=colour, elinewidth=1.0,
                capsize=3, alpha=0.8, zorder=2)


def _scale(ax: Any, xs: Sequence[float], ys: Sequence[float]) -> None:
    """Logarithmic axes where the positive values span more than 10x (ticks as plain
    numbers: 256, not 2^8)."""
    from matplotlib.ticker import FuncFormatter

    plain = FuncFormatter(lambda value, _: f"{value:g}")
    if xs and min(xs) > 0 and max(xs) / min(xs) > _LOG_SPAN:
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(plain)
    if ys and min(ys) > 0 and max(ys) / min(ys) > _LOG_SPAN:
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(plain)


def _legend(panel: Panel, colours: dict[str, Any]) -> list[Any]:
    from matplotlib.lines import Line2D

    handles = []
    for name in sorted(colours, key=lambda n: (n not in panel.originals, n)):
        original = name in panel.originals
        handles.append(Line2D([], [], color=colours[name], linestyle="--" if original else "-",
                              marker="o" if original else ".", label=label(panel, name)))
    handles.append(Line2D([], [], linestyle="none", marker="o", markersize=8,
                          markerfacecolor="white", markeredgecolor="black",
                          label="dispatched (ringed dot)"))
    if panel.spreads:
        handles.append(Line2D([], [], linestyle="none", marker="|", markersize=12,
                              color="grey", label="interquartile range of the runs"))
    if panel.held_out:
        handles.append(Line2D([], [], linestyle="none", marker="D", markerfacecolor="none",
                              markeredgecolor="grey", label="held-out size"))
        handles.append(Line2D([], [], linestyle="none", marker="*", markersize=11,
                              markerfacecolor="grey", markeredgecolor="red",
                              label="held-out, dispatched"))
    return handles
