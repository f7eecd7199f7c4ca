"""Serving reads what it serves: the served-table file, this GPU model's traces only."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from fib_runtime.dispatch.runtime import Runtime
from fib_runtime.dispatch.served import write_served
from fib_runtime.errors import StoreError
from fib_runtime.schema import Trace
from fib_runtime.store import TraceDB
from tests.dispatch.helpers import H100, SCALE_CODE, make_db
from tests.factories import trace

CPU = "cpu"
A100 = "NVIDIA A100-SXM4-80GB"


@pytest.fixture(autouse=True)
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FIB_CACHE_PATH", str(tmp_path / "cache"))


@pytest.fixture
def fleet(tmp_path: Path) -> Path:
    """Two solutions measured here (CPU) at 3 keys, and on two other GPU models at 50."""
    timings = [(s, b, lat, CPU) for b in (8, 32, 128)
               for s, lat in (("one", 0.010), ("two", 0.020))]
    timings += [(s, b, 0.01 + i * 1e-4, hw) for hw in (H100, A100) for i in range(25)
                for b in (1 << (i % 10),) for s in ("one", "two")]
    make_db(tmp_path / "db", {"one": SCALE_CODE.format(tag=1), "two": SCALE_CODE.format(tag=2)},
            timings)
    return tmp_path / "db"


def winners(runtime: Runtime) -> dict[tuple[int, ...], str]:
    return {k: r.names[0] for k, r in runtime.tables["toy_norm_h8"].for_timing("device").items()}


def faster(root: Path, batch: int) -> None:
    """Two more measurements of `two` at `batch`: its median there drops below one's."""
    TraceDB.open(root).append_traces([Trace.from_dict(trace(
        solution="two", batch=batch, latency=0.001, hardware=CPU)) for _ in range(2)])


def test_a_cold_start_parses_only_this_gpu_models_traces(fleet: Path) -> None:
    runtime = Runtime(fleet, watch=False)
    assert runtime.table_loads == {"compiled": 1}
    assert runtime.db.parsed_traces == 6  # the CPU's; 100 others skipped unparsed
    assert runtime.db.skipped_traces == 100
    assert winners(runtime) == {(8,): "one", (32,): "one", (128,): "one"}


def test_a_warm_start_parses_no_trace_and_decides_the_same(fleet: Path) -> None:
    full = Runtime(TraceDB.open(fleet), watch=False)  # every trace parsed, as before
    written = write_served(fleet, ["CPU"])
    assert [p.relative_to(fleet).parts[:2] for p in written] == [(".fib", "tables")]
    warm = Runtime(fleet, watch=False)
    assert warm.table_loads == {"served": 1}
    assert (warm.db.parsed_traces, warm.db.skipped_traces) == (0, 0)
    assert warm.tables == full.tables
    # explain still shows the traces: read on first need, this hardware's only
    assert "one" in str(warm.measured().traces_for("toy_norm_h8", "CPU")[0].solution)


def test_the_host_cache_serves_the_next_start(fleet: Path) -> None:
    Runtime(fleet, watch=False)  # builds and keeps its table in this host's cache
    again = Runtime(fleet, watch=False)
    assert again.table_loads == {"served": 1}
    assert again.db.parsed_traces == 0


def test_a_stale_table_is_rebuilt_from_the_new_traces(fleet: Path) -> None:
    write_served(fleet, ["CPU"])
    faster(fleet, 32)
    runtime = Runtime(fleet, watch=False)
    assert runtime.table_loads == {"stale": 1, "compiled": 1}
    assert winners(runtime)[(32,)] == "two"


def test_a_corrupt_table_file_falls_back_to_the_traces_and_is_counted(fleet: Path) -> None:
    (path,) = write_served(fleet, ["CPU"])
    whole = path.read_bytes()
    for damaged in (whole[:len(whole) - 20],  # cut short: its digest says so
                    whole.replace(b'"one"', b'"two"'),  # changed: the digest again
                    b'{"format": 6, "fingerprint": 3, "hardware": "CPU"}\n',
                    b"\x00" * 64, b""):
        path.write_bytes(damaged)
        runtime = Runtime(fleet, watch=False)
        assert runtime.table_loads == {"corrupt": 1, "compiled": 1}, damaged
        assert winners(runtime) == {(8,): "one", (32,): "one", (128,): "one"}
        shutil.rmtree(fleet.parent / "cache", ignore_errors=True)  # no host copy either


def test_a_table_of_another_hardware_key_is_not_served(fleet: Path) -> None:
    (path,) = write_served(fleet, ["H100"])
    path.rename(path.with_name(path.name.replace("H100", "CPU")))  # misplaced
    runtime = Runtime(fleet, watch=False)
    assert runtime.table_loads == {"stale": 1, "compiled": 1}
    assert winners(runtime)[(8,)] == "one"


def test_a_reload_serves_the_old_table_until_the_new_one_is_ready(fleet: Path) -> None:
    runtime = Runtime(fleet, watch=False)
    before = runtime.snapshot
    faster(fleet, 8)
    assert runtime.changed()
    assert runtime.snapshot is before  # nothing swapped until reload publishes a new one
    runtime.reload()
    assert runtime.snapshot is not before and winners(runtime)[(8,)] == "two"


def test_only_the_definitions_served_are_parsed_from_the_file(fleet: Path) -> None:
    write_served(fleet, ["CPU"])
    runtime = Runtime(fleet, watch=False)
    tables = runtime.tables
    assert tables._parsed == {}  # type: ignore[attr-defined]  # nothing until asked
    assert runtime.dispatcher("toy_norm_h8") is not None
    assert list(tables._parsed) == ["toy_norm_h8"]  # type: ignore[attr-defined]


def test_tables_are_never_written_through_a_link_out_of_the_database(
        fleet: Path, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (fleet / ".fib").mkdir(exist_ok=True)
    (fleet / ".fib" / "tables").symlink_to(outside)
    with pytest.raises(StoreError, match="outside"):
        write_served(fleet, ["CPU"])
    assert list(outside.iterdir()) == []
