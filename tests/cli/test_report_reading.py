"""`fib report` read by a person: the legend never clipped, each point's spread drawn where
the traces give one, and why an original has no latency written on the page."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fib_runtime.cli.main import main
from fib_runtime.original import UNTIMEABLE
from fib_runtime.report.gather import gather
from fib_runtime.schema import Definition, Solution, Trace
from fib_runtime.schema.provenance import ORIGINAL_AUTHOR, SPREAD_KEY, TIMING_KEY
from fib_runtime.store import TraceDB
from tests import factories

pytest.importorskip("matplotlib")

H100 = "NVIDIA H100 80GB HBM3"
LONG = "toy_norm_h8__original__serving.models.llama.modeling_llama.LlamaRMSNorm.forward_native"
BATCHES = (1, 16, 256)


def _trace(solution: str, batch: int, latency: float, *, spread: str | None = None,
           regime: str = "eager") -> Trace:
    data = factories.trace("toy_norm_h8", solution, latency=latency, hardware=H100)
    data["workload"]["axes"] = {"batch_size": batch}
    libs = data["evaluation"]["environment"]["libs"]
    libs[TIMING_KEY] = regime
    if spread is not None:
        libs[SPREAD_KEY] = spread
    return Trace.from_dict(data)


def _db(root: Path, *, original: dict[str, Any] | None = None, spread: str | None = None,
        timed_original: bool = True) -> TraceDB:
    db = TraceDB.open(root, create=True)
    db.add_definition(Definition.from_dict(factories.definition()))
    for name in ("toy_norm_h8__triton_rowwise", "toy_norm_h8__torch_native"):
        db.add_solution(Solution.from_dict(factories.solution(name)))
    db.add_solution(Solution.from_dict(factories.solution(
        LONG, author=ORIGINAL_AUTHOR, **(original or {}))))
    traces = []
    for batch in BATCHES:
        traces.append(_trace("toy_norm_h8__triton_rowwise", batch, 0.01 * batch, spread=spread))
        traces.append(_trace("toy_norm_h8__torch_native", batch, 0.02 * batch))
        if timed_original:
            traces.append(_trace(LONG, batch, 0.03 * batch))
    db.append_traces(traces)
    return db


def _legend_and_figure(db: TraceDB) -> tuple[Any, Any]:
    from fib_runtime.report.plots import figure_of

    figure = figure_of(gather(db).panels[0])
    figure.canvas.draw()  # lays the figure out as savefig does
    return figure.legends[0], figure


def test_a_long_original_name_is_never_clipped(tmp_path: Path) -> None:
    legend, figure = _legend_and_figure(_db(tmp_path / "db"))
    box = legend.get_window_extent()
    assert box.x0 >= 0 and box.x1 <= figure.bbox.width, (box, figure.bbox)
    labels = [t.get_text() for t in legend.get_texts()]
    # Short labels: the definition is the title; the original says what function it is.
    assert "original: serving.models.llama.modeling_llama.LlamaRMSNorm.forward_native" in labels
    assert "triton_rowwise" in labels and "torch_native" in labels


def _bars(figure: Any) -> list[Any]:
    from matplotlib.container import ErrorbarContainer

    return [c for ax in figure.axes for c in ax.containers
            if isinstance(c, ErrorbarContainer)]


def test_each_point_s_spread_is_drawn_from_the_trace(tmp_path: Path) -> None:
    db = _db(tmp_path / "db", spread="0.25")
    panel = gather(db).panels[0]
    assert panel.spreads == {"toy_norm_h8__triton_rowwise": {(1,): 0.25, (16,): 0.25,
                                                             (256,): 0.25}}
    legend, figure = _legend_and_figure(db)
    bars = _bars(figure)
    assert len(bars) == 1  # triton_rowwise's points; the other traces give no spread
    segments = bars[0].lines[2][0].get_segments()
    # batch 16: median 0.16 ms, bar from 0.16 * 0.75 to 0.16 * 1.25
    assert any(abs(s[0][1] - 0.12) < 1e-9 and abs(s[1][1] - 0.2) < 1e-9 for s in segments)
    assert "interquartile range of the runs" in [t.get_text() for t in legend.get_texts()]


def test_no_spread_in_the_traces_draws_no_bar(tmp_path: Path) -> None:
    db = _db(tmp_path / "db")
    assert gather(db).panels[0].spreads == {}
    _, figure = _legend_and_figure(db)
    assert _bars(figure) == []


def test_the_page_says_why_the_original_was_not_timed(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    reason = "it is a closure (defined inside a function)"
    _db(tmp_path / "db", original={"description": UNTIMEABLE + reason}, timed_original=False)
    out = tmp_path / "report"
    assert main(["report", str(tmp_path / "db"), "--out", str(out)]) == 0
    said = f"{LONG} is not timed: {reason}"
    assert said in (out / "index.html").read_text()
    assert said in capsys.readouterr().out
    assert "not measured" not in (out / "index.html").read_text()


def test_an_original_without_a_trace_in_this_regime_says_how_to_measure_it(
        tmp_path: Path) -> None:
    _db(tmp_path / "db", timed_original=False)
    rows = gather(TraceDB.open(tmp_path / "db")).panels[0].rows
    assert rows[0].original_note == (f"{LONG}: no eager-timing trace here; `fib retune "
                                     "--timing eager` measures it")
