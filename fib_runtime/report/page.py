"""`fib report`'s tables (text for the terminal, HTML for the page) and its index.html.

The page has a contents list, a section per definition with one sub-section per hardware key
and timing regime (the plot, the table of measured keys, the held-out table), and at the end
what could not be plotted and why. PNGs are referenced by paths relative to the page.
"""

from __future__ import annotations

import html
import re
import textwrap
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from fib_runtime.errors import naming
from fib_runtime.render import render_table
from fib_runtime.report.gather import Axes, Overview, Panel, Skipped

KEY_HEADERS = ("workload", "dispatched", "latency", "original", "original latency",
               "speedup vs original", "candidates", "not ranked")
_ORIGINAL_COLUMNS = frozenset(KEY_HEADERS[3:6])
HELD_OUT_HEADERS = ("held-out workload", "dispatched", "latency", "fastest timed",
                    "its latency", "dispatched / fastest")


def image_name(panel: Panel) -> str:
    """The PNG file name of a panel (safe on every file system)."""
    raw = f"{panel.definition.name}__{panel.hardware}__{panel.regime}"
    return re.sub(r"[^A-Za-z0-9_.-]", "_", raw) + ".png"


def key_headers(panel: Panel) -> tuple[str, ...]:
    """The columns of a panel's table (the original's only where the definition has one)."""
    return KEY_HEADERS if panel.originals else tuple(h for h in KEY_HEADERS
                                                     if h not in _ORIGINAL_COLUMNS)


def key_rows(panel: Panel) -> list[list[str]]:
    """The table of a panel: one row per measured workload key."""
    rows = []
    for row in panel.rows:
        speedup = row.speedup
        original = [row.original or "-", _ms(row.original_ms) if row.original
                    else row.original_note, "-" if speedup is None else f"{speedup:.2f}x"]
        rows.append([_axes(row.axes), row.dispatched or "(none ranked)", _ms(row.latency_ms),
                     *(original if panel.originals else ()), str(row.candidates),
                     ", ".join(f"{s}: {why}" for s, why in row.not_ranked) or "-"])
    return rows


def held_out_rows(panel: Panel) -> list[list[str]]:
    """The held-out table of a panel (empty without held-out points)."""
    return [[_axes(r.axes), r.dispatched or "(not given)", _ms(r.dispatched_ms), r.fastest,
             _ms(r.fastest_ms), "-" if r.ratio is None else f"{r.ratio:.2f}x"]
            for r in panel.held_out_rows()]


def text_report(overview: Overview) -> str:
    """Every panel's tables, then what could not be plotted, for the terminal."""
    lines = []
    for panel in overview.panels:
        lines.append(panel.name)
        lines.append(render_table(key_headers(panel), key_rows(panel), indent=2))
        held = held_out_rows(panel)
        if held:
            lines.append(render_table(HELD_OUT_HEADERS, held, indent=2))
        lines.append("")
    if overview.skipped:
        lines.append("not plotted:")
        lines += [textwrap.fill(line, 100, initial_indent="  ", subsequent_indent="    ",
                                break_on_hyphens=False)
                  for line in skipped_lines(overview.skipped)]
    return "\n".join(lines).rstrip()


def skipped_lines(skipped: Sequence[Skipped]) -> list[str]:
    """One line per reason (definitions sharing a reason are listed together)."""
    by_reason: dict[str, list[str]] = defaultdict(list)
    for item in skipped:
        by_reason[item.reason].append(item.where)
    return [f"{', '.join(where)}: {reason}" for reason, where in by_reason.items()]


def write_html(overview: Overview, images: Mapping[int, Path], out: Path, *, source: str,
               note: str | None = None) -> Path:
    """Write `out/index.html`; `images` maps a panel's index in the overview to its PNG."""
    parts = [_HEAD.format(title=html.escape(f"fib report: {source}")),
             f"<h1>fib report</h1><p class=meta>Database <code>{html.escape(source)}</code>"
             f" &middot; {len(overview.panels)} panels from {overview.traces} traces &middot; "
             f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC</p>", _LEGEND]
    if note:
        parts.append(f"<p class=note>{html.escape(note)}</p>")
    parts.append(_contents(overview))
    current = None
    for index, panel in enumerate(overview.panels):
        if panel.definition.name != current:
            current = panel.definition.name
            parts.append(f"<h2 id='{_anchor(current)}'>{html.escape(current)}</h2>")
        parts.append(_section(index, panel, images.get(index), out))
    parts.append("<h2 id='not-plotted'>Not plotted</h2>")
    lines = skipped_lines(overview.skipped)
    parts.append("<ul>" + "".join(f"<li>{html.escape(line)}</li>" for line in lines) + "</ul>"
                 if lines else "<p>Everything was plotted.</p>")
    parts.append("</body></html>\n")
    out.mkdir(parents=True, exist_ok=True)
    page = out / "index.html"
    with naming(page):
        page.write_text("\n".join(parts), encoding="utf-8")
    return page


def _section(index: int, panel: Panel, image: Path | None, out: Path) -> str:
    parts = [f"<h3 id='panel-{index}'>{html.escape(panel.hardware)} &middot; "
             f"{html.escape(panel.regime)} timing</h3>"]
    if image is not None:
        rel = image.relative_to(out).as_posix() if image.is_relative_to(out) else image
        parts.append(f"<img src='{html.escape(str(rel))}' alt='{html.escape(panel.name)}'>")
    elif panel.plot_problem() is not None:
        parts.append(f"<p class=note>No plot: {html.escape(str(panel.plot_problem()))}</p>")
    parts.append(_html_table(key_headers(panel), key_rows(panel)))
    held = held_out_rows(panel)
    if held:
        parts.append("<h4>Held-out sizes</h4>" + _html_table(HELD_OUT_HEADERS, held))
    return "\n".join(parts)


def _contents(overview: Overview) -> str:
    items = []
    for index, panel in enumerate(overview.panels):
        items.append(f"<li><a href='#panel-{index}'>{html.escape(panel.name)}</a></li>")
    items.append("<li><a href='#not-plotted'>Not plotted</a></li>")
    return "<ul class=toc>" + "".join(items) + "</ul>"


def _html_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>"
                   for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _anchor(name: str) -> str:
    return "def-" + re.sub(r"[^A-Za-z0-9_-]", "_", name)


def _axes(axes: Axes) -> str:
    return " ".join(f"{a}={v}" for a, v in axes) or "(no variable axes)"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g} ms"


_HEAD = """<!doctype html><html lang=en><head><meta charset=utf-8><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1400px; }}
h2 {{ border-bottom: 1px solid #ccc; margin-top: 2em; }}
img {{ max-width: 100%; display: block; margin: 0.5em 0; }}
table {{ border-collapse: collapse; font-size: 0.9em; margin: 0.5em 0 1.5em; }}
th, td {{ border: 1px solid #ddd; padding: 0.2em 0.6em; text-align: left; }}
th {{ background: #f4f4f4; }}
.meta {{ color: #555; }} .note {{ background: #fff4d6; padding: 0.5em; }}
</style></head><body>"""

_LEGEND = ("<p>Per definition, hardware and timing regime: median latency of every solution "
           "at each measured workload (lines; the original function black and dashed), the "
           "solution dispatch serves there (ringed dot: the first of the ranking over that "
           "regime's traces), and held-out sizes if given (hollow diamonds; the dispatched "
           "one a red-edged star). <i>speedup vs original</i> is the original's latency over "
           "the dispatched one's.</p>")
