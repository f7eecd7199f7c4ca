"""Capture through fib.apply: decorator, keywords, function form, with dispatch on, from env."""

from __future__ import annotations

from pathlib import Path

import orjson
import torch

import fib_runtime as fib
from fib_runtime.capture import capture_stats, disable_capture, enable_capture
from fib_runtime.store import TraceDB
from tests.capture.conftest import NORM, lines, make_db, run_child
from tests.dispatch.helpers import SCALE_CODE
from tests.dispatch.helpers import make_db as make_dispatch_db


@fib.apply(NORM)
def toy(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return x * weight


def batches(root: Path) -> list[int]:
    return sorted(line["workload"]["axes"]["batch_size"] for line in lines(root))


def test_capture_through_apply(db: TraceDB, tmp_path: Path) -> None:
    weight = torch.full((8,), 2.0)
    enable_capture(db, {"flush_interval_s": 3600})
    for batch in (2, 3, 2):
        x = torch.ones(batch, 8)
        assert torch.equal(toy(x, weight), x * weight)  # the original still runs
    toy(torch.ones(5, 8), weight=weight)  # keywords are normalised before the recorder
    fib.apply(NORM, args=(torch.ones(7, 8), weight), fallback=lambda x, w: x * w)
    disable_capture()
    assert batches(tmp_path) == [2, 3, 5, 7]
    assert capture_stats()["total"]["seen"] == 5
    toy(torch.ones(9, 8), weight)  # capture is off: the site went back to the original
    assert capture_stats()["total"]["seen"] == 5


def test_capture_and_dispatch_together(tmp_path: Path) -> None:
    make_dispatch_db(tmp_path, {"one": SCALE_CODE.format(tag=1)}, [("one", 32, 0.01, "cpu")])
    with fib.enable_apply(tmp_path), enable_capture(
            tmp_path, {"flush_interval_s": 3600, "default": {"dump": "all"}}):
        x = torch.randn(32, 8)
        out = toy(x, torch.ones(8))
        assert torch.allclose(out, x + 1)  # solution 'one' served the call
        toy(torch.randn(32, 8), torch.ones(8))  # same key: not recorded again
        assert fib.stats()[NORM]["hits"] == 2
    db = TraceDB.open(tmp_path, strict=True)
    [trace] = db.workloads_for(NORM)
    assert trace.workload.axes == {"batch_size": 32}
    assert torch.equal(db.load_tensor(trace.workload.inputs["x"]), x)


ENV_CHILD = """
import torch
import fib_runtime as fib

@fib.apply("toy_norm_h8")
def toy(x, weight):
    return x * weight

for batch in (1, 2, 3, 1, 2, 1):
    toy(torch.ones(batch, 8), torch.ones(8))
print(fib.capture_stats()["total"]["seen"])
"""


def test_tracing_env_var_starts_capture(tmp_path: Path) -> None:
    root = tmp_path / "db"
    make_db(root)
    config = tmp_path / "capture.json"
    config.write_bytes(orjson.dumps({"default": {"per_key": 2}, "flush_interval_s": 3600}))
    child = run_child(ENV_CHILD, env={"FIB_ENABLE_TRACING": "1", "FIB_DATASET_PATH": str(root),
                                      "FIB_CAPTURE_CONFIG": str(config)})
    out, err = child.communicate(timeout=120)
    assert child.returncode == 0, err
    assert out.split() == ["6"]
    assert batches(root) == [1, 1, 2, 2, 3]  # per_key=2 from the config, flushed at exit
