"""Fleet capture: processes append to their own shard files without locks; `fib merge`
folds the shards into one database where every workload appears once."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fib_runtime.capture import disable_capture, enable_capture
from fib_runtime.cli.main import main
from fib_runtime.errors import FibError
from fib_runtime.store import TraceDB, read_traffic
from fib_runtime.store.shards import SHARD_ENV, shard_spec
from tests.capture.conftest import NORM, make_db, run_child

PROCESSES = 4
SHARED, OWN = 150, 20

WORKER = """
import sys
from fib_runtime.capture import capture_stats, disable_capture, enable_capture
root, worker, SHARED, OWN = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
config = {"flush_interval_s": 0.01, "default": {"max_workloads": None}}
record = enable_capture(root, config).recorder_for("toy_norm_h8")
for i in range(1, SHARED + 1):  # every process sees these
    record((i,), ())
for i in range(OWN):            # and some of its own
    record((10_000 + worker * 100 + i,), ())
disable_capture()
assert capture_stats()["total"]["dropped_total"] == 0, capture_stats()["total"]
"""


def test_four_processes_write_shards_and_merge_keeps_each_workload_once(tmp_path: Path
                                                                        ) -> None:
    fleet, dest = tmp_path / "fleet", tmp_path / "merged"
    make_db(fleet)
    children = [run_child(WORKER, str(fleet), str(w), str(SHARED), str(OWN),
                          env={SHARD_ENV: "auto"}) for w in range(PROCESSES)]
    for child in children:
        _, err = child.communicate(timeout=240)
        assert child.returncode == 0, err
    folder = fleet / "workloads" / "rmsnorm"
    shards = sorted(p.name for p in folder.iterdir())
    assert len(shards) == PROCESSES and f"{NORM}.jsonl" not in shards
    assert all(name.startswith(f"{NORM}.") and name.endswith(".jsonl") for name in shards)
    assert not (fleet / ".fib" / "locks").exists()  # no lock was taken
    loaded = TraceDB.open(fleet, strict=True)  # the loader reads shards as they are
    assert len(loaded.workloads_for(NORM)) == PROCESSES * (SHARED + OWN)
    # Each process counted its calls in a traffic file of its own shard; read, they add up.
    traffic = read_traffic(fleet, loaded.definitions[NORM])
    assert len(list((fleet / ".fib" / "traffic").glob(f"{NORM}.*.jsonl"))) == PROCESSES
    assert sum(traffic.values()) == PROCESSES * (SHARED + OWN)
    assert {key: n for (_, key), n in traffic.items() if key[0] <= SHARED} == {
        (i,): PROCESSES for i in range(1, SHARED + 1)}

    assert main(["merge", str(fleet), str(dest)]) == 0
    merged = TraceDB.open(dest, strict=True)
    batches = sorted(t.workload.axes["batch_size"] for t in merged.workloads_for(NORM))
    expected = sorted([*range(1, SHARED + 1),
                       *(10_000 + w * 100 + i for w in range(PROCESSES) for i in range(OWN))])
    assert batches == expected  # every workload once
    files = sorted(p.name for p in (dest / "workloads" / "rmsnorm").iterdir())
    assert files == [f"{NORM}.jsonl"]
    before = (dest / "workloads" / "rmsnorm" / f"{NORM}.jsonl").read_bytes()
    assert main(["merge", str(fleet), str(dest)]) == 0  # a rerun adds nothing
    assert (dest / "workloads" / "rmsnorm" / f"{NORM}.jsonl").read_bytes() == before


def test_default_stays_the_locked_canonical_file(tmp_path: Path) -> None:
    make_db(tmp_path)
    with enable_capture(tmp_path, {"handle_signals": False}) as session:
        session.recorder_for(NORM)((3,), ())
    assert [p.name for p in (tmp_path / "workloads" / "rmsnorm").iterdir()] == [f"{NORM}.jsonl"]


def test_config_template_names_the_shard(tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    make_db(tmp_path)
    monkeypatch.delenv(SHARD_ENV, raising=False)
    config = {"handle_signals": False, "shard": "replica7-{pid}"}
    with enable_capture(tmp_path, config) as session:
        session.recorder_for(NORM)((3,), ())
    names = [p.name for p in (tmp_path / "workloads" / "rmsnorm").iterdir()]
    assert names == [f"{NORM}.replica7-{os.getpid()}.jsonl"]
    disable_capture()


@pytest.mark.parametrize(("env", "configured", "expected"), [
    (None, None, None), ("0", "auto", None), ("auto", None, "{host}-{pid}"),
    ("1", None, "{host}-{pid}"), (None, "r{pid}", "r{pid}"), ("x-{host}", "r{pid}", "x-{host}"),
])
def test_shard_spec_env_wins(monkeypatch: pytest.MonkeyPatch, env: str | None,
                             configured: str | None, expected: str | None) -> None:
    if env is None:
        monkeypatch.delenv(SHARD_ENV, raising=False)
    else:
        monkeypatch.setenv(SHARD_ENV, env)
    assert shard_spec(configured) == expected


def test_bad_template_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(SHARD_ENV, "{rank}")
    with pytest.raises(FibError, match="rank"):
        shard_spec(None)
    monkeypatch.delenv(SHARD_ENV)
    with pytest.raises(FibError, match="field 'shard'"):
        enable_capture(make_db(tmp_path), {"shard": "{gpu}"})
