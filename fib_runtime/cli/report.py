"""`fib report [DB]`: plots and tables of what a retune measured, and what dispatch serves.

Prints the tables, then writes one PNG per definition, hardware key and timing regime and an
`index.html` embedding them under `--out`. Exit status: 0 when everything asked for was
written (a database without traces, or panels that cannot be plotted, are reported, not
errors); 2 when plots were asked for but matplotlib is missing -- the tables are still printed
and the page written without plots; `--no-plots` never needs matplotlib.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from fib_runtime.errors import naming
from fib_runtime.paths import default_db_path
from fib_runtime.report.gather import MAX_GROUPS, Overview, Skipped, gather
from fib_runtime.report.held_out import load_held_out
from fib_runtime.report.inheritance import inheritance_penalties, penalty_table
from fib_runtime.report.page import image_name, text_report, write_html
from fib_runtime.report.plots import PlotsUnavailable, draw, require_matplotlib
from fib_runtime.store import TraceDB

EXIT_NO_PLOTS = 2
log = logging.getLogger("fib_runtime.report")


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "report", help="plots and tables of the measured latencies and of what dispatch "
        "serves, per definition, hardware and timing regime (HTML page with PNGs)")
    parser.add_argument("db", nargs="?", type=Path, default=default_db_path(),
                        help="database folder (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=Path("fib-report"), metavar="DIR",
                        help="folder for index.html and the PNGs (default: %(default)s)")
    parser.add_argument("--definition", action="extend", nargs="+", metavar="NAME",
                        help="only these definitions (default: all)")
    parser.add_argument("--held-out", type=Path, default=None, metavar="FILE",
                        help="overlay the held-out points of this JSON file (written by "
                        "benchmarks/bench_choice.py)")
    parser.add_argument("--no-plots", action="store_true",
                        help="tables only (the page without PNGs; matplotlib not needed)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    held_out = load_held_out(args.held_out) if args.held_out is not None else []
    db = TraceDB.open(args.db, workloads=False, traces=False)  # gather reads one at a time
    overview = gather(db, args.definition, held_out)
    if overview.traces == 0:
        names = ", ".join(args.definition) if args.definition else "any definition"
        print(f"no benchmark traces for {names} in {db.root}: run `fib retune {db.root}` "
              "first; nothing to report")
        return 0
    args.out.mkdir(parents=True, exist_ok=True)  # a file there or a read-only parent: now
    plottable = plan(overview)
    missing: PlotsUnavailable | None = None
    images: dict[int, Path] = {}
    if not args.no_plots:
        try:
            require_matplotlib()
        except PlotsUnavailable as exc:
            missing = exc
        else:
            images = draw_all(overview, plottable, args.out)
    print(text_report(overview))
    penalties = inheritance_penalties(db, args.definition)
    if penalties:
        print("\n" + penalty_table(penalties))
    note = str(missing) if missing else "tables only (--no-plots)" if args.no_plots else None
    page = write_html(overview, images, args.out, source=str(db.root.resolve()), note=note)
    print(f"\nreport: {page} ({len(images)} plots)")
    if missing is not None:
        print(f"fib: {missing}", file=sys.stderr)
        return EXIT_NO_PLOTS
    return 0


def plan(overview: Overview) -> list[int]:
    """The indexes of the panels that can be drawn; the others, and the subplots left out of
    a panel, are added to `overview.skipped` with the reason."""
    plottable = []
    for index, panel in enumerate(overview.panels):
        problem = panel.plot_problem()
        if problem is not None:
            overview.skipped.append(Skipped(panel.definition.name, panel.hardware,
                                            panel.regime, problem))
            continue
        plottable.append(index)
        hidden = len(panel.groups()) - MAX_GROUPS
        if hidden > 0:
            overview.skipped.append(Skipped(
                panel.definition.name, panel.hardware, panel.regime,
                f"{hidden} more combinations of the other variable axes than the "
                f"{MAX_GROUPS} drawn (their keys are in the table)"))
    return plottable


def draw_all(overview: Overview, plottable: list[int], out: Path) -> dict[int, Path]:
    """Draw the plottable panels; one that fails to draw is reported, not fatal."""
    images = {}
    for index in plottable:
        panel = overview.panels[index]
        path = out / image_name(panel)
        try:
            with naming(path):
                images[index] = draw(panel, path)
        except OSError:  # the folder cannot be written (read-only, full): nothing more can
            raise
        except Exception as exc:  # a report shows what it can; the reason is listed
            log.warning("drawing %s failed", panel.name, exc_info=True)
            overview.skipped.append(Skipped(panel.definition.name, panel.hardware,
                                            panel.regime, f"drawing failed: "
                                            f"{type(exc).__name__}: {exc}"))
    return images
