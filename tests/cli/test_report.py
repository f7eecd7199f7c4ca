"""`fib report`: PNGs and index.html per definition, hardware key and timing regime."""

from __future__ import annotations

import re
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from fib_runtime.cli.main import main
from fib_runtime.errors import FibError
from fib_runtime.ranking import rank
from fib_runtime.report.gather import gather, regime_argument
from fib_runtime.report.held_out import load_held_out
from fib_runtime.schema import Definition, Solution, Trace
from fib_runtime.schema.provenance import ORIGINAL_AUTHOR, TIMING_KEY, timing_of
from fib_runtime.store import TraceDB
from tests import factories

H100 = "NVIDIA H100 80GB HBM3"
H200 = "NVIDIA H200"
BATCHES = (1, 16, 256)
# (solution, regime) -> latency at batch 1; latencies grow with the batch. On the H100 the
# device winner is `tri`, the eager winner `cuda`, and in CUDA graphs the original wins.
H100_LATENCY = {("tri", "device"): 0.010, ("cuda", "device"): 0.020, ("orig", "device"): 0.050,
                ("tri", "eager"): 0.060, ("cuda", "eager"): 0.030, ("orig", "eager"): 0.040,
                ("tri", "graph"): 0.012, ("cuda", "graph"): 0.011, ("orig", "graph"): 0.009}


def _trace(definition: str, solution: str, axes: dict[str, int], latency: float,
           hardware: str, regime: str | None = None, status: str = "PASSED") -> Trace:
    data = factories.trace(definition, solution, latency=latency, hardware=hardware,
                           status=status)
    data["workload"]["axes"] = axes
    if regime is not None:
        data["evaluation"]["environment"]["libs"][TIMING_KEY] = regime
    return Trace.from_dict(data)


def _attn_definition() -> dict[str, Any]:
    """Two variable axes: batch_size takes 2 values, seq_len 4 (so seq_len is the x axis)."""
    return factories.definition(
        "toy_attn", axes={"batch_size": {"type": "var"}, "seq_len": {"type": "var"},
                          "hidden_size": {"type": "const", "value": 8}},
        inputs={"x": {"shape": ["batch_size", "seq_len", "hidden_size"], "dtype": "float32"},
                "weight": {"shape": ["hidden_size"], "dtype": "float32"}},
        outputs={"y": {"shape": ["batch_size", "seq_len", "hidden_size"], "dtype": "float32"}})


def build_db(root: Path) -> TraceDB:
    """toy_norm_h8: device and eager traces on the H100 (winners differ), device traces on
    the H200 (one failure), an original; toy_attn: two variable axes; toy_fail: failures."""
    db = TraceDB.open(root, create=True)
    db.add_definition(Definition.from_dict(factories.definition()))
    db.add_definition(Definition.from_dict(_attn_definition()))
    db.add_definition(Definition.from_dict(factories.definition("toy_fail")))
    for name in ("tri", "cuda"):
        db.add_solution(Solution.from_dict(factories.solution(name)))
    db.add_solution(Solution.from_dict(factories.solution("orig", author=ORIGINAL_AUTHOR)))
    db.add_solution(Solution.from_dict(factories.solution("attn_a", "toy_attn")))
    db.add_solution(Solution.from_dict(factories.solution("attn_b", "toy_attn")))
    db.add_solution(Solution.from_dict(factories.solution("broken", "toy_fail")))
    traces = []
    for batch in BATCHES:
        for (name, regime), latency in H100_LATENCY.items():
            traces.append(_trace("toy_norm_h8", name, {"batch_size": batch},
                                 latency * batch, H100, regime))
        traces.append(_trace("toy_norm_h8", "cuda", {"batch_size": batch}, 0.01 * batch, H200))
        traces.append(_trace("toy_norm_h8", "orig", {"batch_size": batch}, 0.02 * batch, H200))
        failed = batch == 256
        traces.append(_trace("toy_norm_h8", "tri", {"batch_size": batch}, 0.005 * batch, H200,
                             status="RUNTIME_ERROR" if failed else "PASSED"))
        traces.append(_trace("toy_fail", "broken", {"batch_size": batch}, 1.0, H100,
                             status="COMPILE_ERROR"))
    for batch in (1, 2):
        for seq in (128, 256, 512, 1024):
            axes = {"batch_size": batch, "seq_len": seq}
            traces.append(_trace("toy_attn", "attn_a", axes, 0.001 * seq, H100))
            traces.append(_trace("toy_attn", "attn_b", axes, 0.3 + 0.0005 * seq, H100))
    db.append_traces(traces)
    return db


@pytest.fixture
def db_root(tmp_path: Path) -> Path:
    build_db(tmp_path / "db")
    return tmp_path / "db"


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk (after checking the signature)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def winner(db: TraceDB, definition: str, hardware: str, regime: str, batch: int) -> str:
    """What the ranking ranks first over one regime's traces (computed here, independently)."""
    traces = [t for t in db.traces_for(definition, hardware)
              if timing_of(t.evaluation) == regime]
    results = rank(db.definitions[definition], traces, db.solutions, hardware,
                   **regime_argument(regime))
    return results[(batch,)].ranking.names[0]


def test_report_writes_pngs_html_and_per_regime_tables(
        db_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "report"
    assert main(["report", str(db_root), "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == ["toy_attn__H100__device.png", "toy_norm_h8__H100__device.png",
                    "toy_norm_h8__H100__eager.png", "toy_norm_h8__H100__graph.png",
                    "toy_norm_h8__H200__device.png"]
    # One subplot, 4 legend entries (2 rows): 6.8 x 4.6 in at 100 dpi; toy_attn: two
    # subplots (batch_size = 1, 2) side by side, 3 legend entries.
    assert png_size(out / "toy_norm_h8__H100__eager.png") == (680, 460)
    assert png_size(out / "toy_attn__H100__device.png") == (1020, 435)
    for name in pngs:
        assert (out / name).stat().st_size > 10_000  # lines and text, not a blank canvas
    page = (out / "index.html").read_text()
    assert sorted(re.findall(r"<img src='([^']+)'", page)) == pngs

    # The dispatched solution is the ranking's first of that regime: tri (device), cuda (eager).
    db = TraceDB.open(db_root)
    for regime, expected in (("device", "tri"), ("eager", "cuda"), ("graph", "orig")):
        for batch in BATCHES:
            assert winner(db, "toy_norm_h8", "H100", regime, batch) == expected
    device = stdout.split("toy_norm_h8 on H100, device timing")[1].split("\n\n")[0]
    eager = stdout.split("toy_norm_h8 on H100, eager timing")[1].split("\n\n")[0]
    # workload, dispatched, latency, original, its latency, speedup, candidates, not ranked
    assert re.search(r"batch_size=16\s+tri\s+0\.16 ms\s+orig\s+0\.8 ms\s+5\.00x\s+3\s+-",
                     device)
    assert re.search(r"batch_size=16\s+cuda\s+0\.48 ms\s+orig\s+0\.64 ms\s+1\.33x\s+3\s+-",
                     eager)
    graph = stdout.split("toy_norm_h8 on H100, graph timing")[1].split("\n\n")[0]
    assert re.search(r"batch_size=256\s+orig\s+2\.304 ms\s+orig\s+2\.304 ms\s+1\.00x", graph)
    # Regimes in the order device, eager, graph (not alphabetical).
    assert stdout.index("H100, device timing") < stdout.index("H100, eager timing") \
        < stdout.index("H100, graph timing")
    for batch in BATCHES:
        assert re.search(rf"batch_size={batch}\s+tri\s", device)
        assert re.search(rf"batch_size={batch}\s+cuda\s", eager)
    # The H200: tri failed at 256, so cuda serves there; tri serves below.
    h200 = stdout.split("toy_norm_h8 on H200, device timing")[1].split("\n\n")[0]
    assert re.search(r"batch_size=1\s+tri\s", h200)
    assert re.search(r"batch_size=256\s+cuda\s+2\.56 ms\s+orig\s+5\.12 ms\s+2\.00x\s+2\s+"
                     r"tri: RUNTIME_ERROR", h200)
    # No original column where the definition has no original.
    attn = stdout.split("toy_attn on H100, device timing")[1].split("\n\n")[0]
    assert "original" not in attn and re.search(r"seq_len=1024\s+attn_b\s+0\.812 ms\s+2", attn)
    # The same rows are in the page, and what could not be plotted is listed with why.
    assert "<td>batch_size=16</td><td>cuda</td><td>0.48 ms</td><td>orig</td>" in page
    assert "toy_fail on H100 device timing: only failures: COMPILE_ERROR x3" in page
    assert "<p class=note>No plot: only failures: COMPILE_ERROR x3</p>" in page
    assert "not plotted:" in stdout and "only failures" in stdout


def test_panels_choose_the_x_axis_and_group_the_others(db_root: Path) -> None:
    overview = gather(TraceDB.open(db_root), ["toy_attn", "toy_norm_h8"])
    attn = overview.panels[0]
    assert attn.x_axis() == "seq_len"
    groups = attn.groups()
    assert [g.fixed for g in groups] == [(("batch_size", 1),), (("batch_size", 2),)]
    assert groups[0].keys == ((1, 128), (1, 256), (1, 512), (1, 1024))
    norm = overview.panels[1]
    assert norm.x_axis() == "batch_size" and [g.fixed for g in norm.groups()] == [()]
    assert norm.originals == {"orig"} and norm.rows[0].original == "orig"


def _held_out(path: Path, points: list[dict[str, Any]]) -> Path:
    path.write_bytes(orjson.dumps({"held_out": points}))
    return path


def _point(solution: str, latency: float, dispatched: bool, **over: Any) -> dict[str, Any]:
    point = {"definition": "toy_norm_h8", "hardware": H100, "timing": "device",
             "axes": {"batch_size": 64}, "solution": solution, "latency_ms": latency,
             "dispatched": dispatched}
    point.update(over)
    return point


def test_held_out_points_are_overlaid(db_root: Path, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    plain = tmp_path / "plain"
    assert main(["report", str(db_root), "--out", str(plain), "--definition",
                 "toy_norm_h8"]) == 0
    capsys.readouterr()
    held = _held_out(tmp_path / "choice.json", [
        _point("tri", 0.7, True), _point("cuda", 0.6, False), _point("orig", 3.0, False),
        _point("cuda", 1.9, True, timing="eager"), _point("tri", 3.5, False, timing="eager"),
        _point("tri", 1.0, True, hardware="NVIDIA B200"),
        _point("tri", 1.0, True, definition="toy_norm_h16")])
    out = tmp_path / "held"
    assert main(["report", str(db_root), "--out", str(out), "--definition", "toy_norm_h8",
                 "--held-out", str(held)]) == 0
    stdout = capsys.readouterr().out
    # held-out workload, dispatched, latency, fastest timed, its latency, dispatched / fastest
    device = stdout.split("toy_norm_h8 on H100, device timing")[1].split("\n\n")[0]
    assert re.search(r"batch_size=64\s+tri\s+0\.7 ms\s+cuda\s+0\.6 ms\s+1\.17x", device)
    eager = stdout.split("toy_norm_h8 on H100, eager timing")[1].split("\n\n")[0]
    assert re.search(r"batch_size=64\s+cuda\s+1\.9 ms\s+cuda\s+1\.9 ms\s+1\.00x", eager)
    h200 = stdout.split("toy_norm_h8 on H200, device timing")[1].split("\n\n")[0]
    assert "held-out" not in h200
    assert "toy_norm_h8 on B200 device timing: 1 held-out points but no traces" in stdout
    assert "toy_norm_h16" not in stdout  # not among the definitions asked for
    assert main(["report", str(db_root), "--out", str(out), "--no-plots",
                 "--held-out", str(held)]) == 0
    assert "toy_norm_h16 on H100 device timing: 1 held-out points of a definition not in " \
        "the database" in capsys.readouterr().out
    # The overlay changes the drawing of the two H100 panels only.
    for name, changed in (("toy_norm_h8__H100__device.png", True),
                          ("toy_norm_h8__H100__eager.png", True),
                          ("toy_norm_h8__H200__device.png", False)):
        assert ((out / name).read_bytes() != (plain / name).read_bytes()) is changed, name
    assert "<h4>Held-out sizes</h4>" in (out / "index.html").read_text()


@pytest.mark.parametrize(("content", "field"), [
    (b'{"points": []}', "field 'held_out': required field is missing"),
    (orjson.dumps({"held_out": [_point("tri", -1.0, True)]}),
     "field 'held_out[0].latency_ms'"),
    (orjson.dumps({"held_out": [_point("tri", 1.0, True),
                                _point("tri", 1.0, True, axes={"batch_size": "64"})]}),
     "field 'held_out[1].axes.batch_size'"),
    (orjson.dumps({"held_out": [_point("tri", 1.0, True, timing="fast")]}),
     "field 'held_out[0].timing': unknown timing regime 'fast'"),
    (orjson.dumps({"held_out": [_point("tri", 1.0, "yes")]}), "field 'held_out[0].dispatched'"),
    (b"{not json", "not JSON"),
])
def test_malformed_held_out_file_names_file_and_field(
        db_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes,
        field: str) -> None:
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    with pytest.raises(FibError, match=re.escape(f"{path}: {field}")):
        load_held_out(path)
    out = tmp_path / "out"
    assert main(["report", str(db_root), "--out", str(out), "--held-out", str(path)]) == 1
    assert f"fib: error: {path}: {field}" in capsys.readouterr().err
    assert not out.exists()


def test_no_traces_gives_a_clear_message(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    db = TraceDB.open(tmp_path / "db", create=True)
    db.add_definition(Definition.from_dict(factories.definition()))
    db.add_solution(Solution.from_dict(factories.solution()))
    out = tmp_path / "out"
    assert main(["report", str(tmp_path / "db"), "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert "no benchmark traces for any definition" in stdout
    assert f"run `fib retune {tmp_path / 'db'}` first" in stdout
    assert not out.exists()
    assert main(["report", str(tmp_path / "db"), "--definition", "nope"]) == 1
    assert "unknown definition(s): nope" in capsys.readouterr().err


def test_without_matplotlib_tables_are_still_printed(
        db_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now fails
    out = tmp_path / "out"
    assert main(["report", str(db_root), "--out", str(out)]) == 2
    captured = capsys.readouterr()
    assert re.search(r"batch_size=16\s+cuda\s+0\.48 ms", captured.out)
    assert "(0 plots)" in captured.out
    assert "matplotlib is not installed" in captured.err
    assert "pip install 'fib-runtime[report]'" in captured.err
    assert not list(out.glob("*.png"))
    page = (out / "index.html").read_text()
    assert "<img" not in page and "pip install &#x27;fib-runtime[report]&#x27;" in page
    assert "<td>batch_size=16</td><td>cuda</td>" in page
    # Tables only: matplotlib is not needed, so it is not an error.
    assert main(["report", str(db_root), "--out", str(tmp_path / "t"), "--no-plots"]) == 0
    assert "tables only (--no-plots)" in (tmp_path / "t" / "index.html").read_text()


def test_a_panel_that_fails_to_draw_is_listed_and_the_others_drawn(
        db_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from fib_runtime.cli import report
    from fib_runtime.report import plots

    def draw(panel: Any, path: Path) -> Path:
        if panel.regime == "eager":
            raise ValueError("bad data")
        return plots.draw(panel, path)

    monkeypatch.setattr(report, "draw", draw)
    out = tmp_path / "out"
    assert main(["report", str(db_root), "--out", str(out), "--definition",
                 "toy_norm_h8"]) == 0
    assert "toy_norm_h8 on H100 eager timing: drawing failed: ValueError: bad data" in \
        capsys.readouterr().out
    assert sorted(p.name for p in out.glob("*.png")) == [
        "toy_norm_h8__H100__device.png", "toy_norm_h8__H100__graph.png",
        "toy_norm_h8__H200__device.png"]


def test_too_old_matplotlib_is_refused_with_the_install_hint(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import matplotlib

    from fib_runtime.report.plots import PlotsUnavailable, require_matplotlib

    monkeypatch.setattr(matplotlib, "__version__", "3.5.3")
    with pytest.raises(PlotsUnavailable, match=r"matplotlib 3\.5\.3 is too old .*>= 3\.7.*"
                       r"pip install 'fib-runtime\[report\]'"):
        require_matplotlib()


def test_library_does_not_import_matplotlib() -> None:
    code = ("import sys, fib_runtime, fib_runtime.cli.main as m, fib_runtime.report.plots; "
            "m.build_parser(); print('matplotlib' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "False"
