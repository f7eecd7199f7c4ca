"""Cluster retune on a local two-node Ray cluster (127.0.0.1, CPU resources only): the
same traces as a local retune, a killed worker survived, a rerun measures nothing."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

if not os.environ.get("FIB_TEST_RAY"):
    pytest.skip("slow (a local Ray cluster): scripts/test-ray.sh runs it (FIB_TEST_RAY=1)",
                allow_module_level=True)
# Ray reads these when imported: loopback addresses only, no usage report.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
ray = pytest.importorskip("ray")

from fib_runtime.retuning import retune  # noqa: E402
from fib_runtime.schema import Solution  # noqa: E402
from fib_runtime.store import TraceDB  # noqa: E402
from tests import factories  # noqa: E402
from tests.retune.helpers import DEF, SOLUTIONS, make_db  # noqa: E402

pytestmark = pytest.mark.ray
PICKED = ("good", "wrong_value", "no_import", "aborts", "hangs")
BATCHES = (2, 3)
FAST = {"warmup": 1, "iters": 3, "timeout": 6.0, "progress": False}

KILLS_ITS_WORKER_ONCE = """import os, signal, pathlib, time
import torch

MARK = pathlib.Path({mark!r})

def run(x, weight):
    if not MARK.exists():
        MARK.touch()
        os.kill(os.getppid(), signal.SIGKILL)  # the parent: the Ray actor of this GPU
        time.sleep(30)
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-5) * weight.float())
"""


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """A head and a second node, one CPU each, on 127.0.0.1; the driver connects to it."""
    from ray.cluster_utils import Cluster

    tmp = tempfile.mkdtemp(prefix="fibray", dir="/tmp")  # short: Ray's socket paths
    saved = os.environ.get("RAY_TMPDIR")
    os.environ["RAY_TMPDIR"] = tmp
    os.makedirs(f"{tmp}/ray")
    nodes = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "include_dashboard": False, "temp_dir": f"{tmp}/ray"})
    try:
        nodes.add_node(num_cpus=1)
        ray.init(address=nodes.address, log_to_driver=False)
        alive = [n for n in ray.nodes() if n["Alive"]]
        assert len(alive) == 2
        assert {n["NodeManagerAddress"] for n in alive} == {"127.0.0.1"}
        yield nodes.address
    finally:
        ray.shutdown()
        nodes.shutdown()
        if saved is None:
            os.environ.pop("RAY_TMPDIR", None)
        else:
            os.environ["RAY_TMPDIR"] = saved
        shutil.rmtree(tmp, ignore_errors=True)


def _triples(db_root: Path) -> Counter[tuple[str, int, str]]:
    db = TraceDB.open(db_root, strict=True)
    return Counter((t.solution or "", t.workload.axes["batch_size"], t.evaluation.status.value)
                   for t in db.traces_for(DEF) if t.evaluation is not None)


def test_cluster_retune_equals_local_and_a_rerun_measures_nothing(cluster: str,
                                                                  tmp_path: Path) -> None:
    picked = {name: SOLUTIONS[name] for name in PICKED}
    make_db(tmp_path / "local", picked, batches=BATCHES)
    make_db(tmp_path / "cluster", picked, batches=BATCHES)
    retune(tmp_path / "local", **FAST)
    summary = retune(tmp_path / "cluster", cluster=cluster, **FAST)

    local, spread = _triples(tmp_path / "local"), _triples(tmp_path / "cluster")
    assert spread == local  # same statuses, one trace per triple
    assert set(spread.values()) == {1} and len(spread) == len(PICKED) * len(BATCHES)
    assert {s for s, _, _ in spread} == set(PICKED)
    statuses = {s: st for s, _, st in spread}
    assert statuses["good"] == "PASSED" and statuses["aborts"] == "RUNTIME_ERROR"
    assert statuses["hangs"] == "TIMEOUT" and statuses["no_import"] == "COMPILE_ERROR"
    assert len({o.device for o in summary.outcomes}) == 2  # both nodes worked

    # the rerun from the command line, a fresh process that connects by address
    again = subprocess.run(
        [sys.executable, "-m", "fib_runtime.cli.main", "retune", str(tmp_path / "cluster"),
         "--cluster", cluster, "--no-progress", "--timeout", "6"],
        capture_output=True, text=True, timeout=300, check=False)
    assert again.returncode == 0, again.stderr
    assert f"evaluated: 0 (none); already measured: {len(PICKED) * len(BATCHES)}" \
        in again.stdout
    assert _triples(tmp_path / "cluster") == spread


def test_a_worker_killed_mid_task_is_replaced_and_its_work_redone(cluster: str,
                                                                   tmp_path: Path) -> None:
    db = make_db(tmp_path / "db", {"good": SOLUTIONS["good"]}, batches=BATCHES)
    code = KILLS_ITS_WORKER_ONCE.format(mark=str(tmp_path / "killed-once"))
    db.add_solution(Solution.from_dict(factories.solution("killer", DEF, code=code)))
    summary = retune(db.root, cluster=cluster, **FAST)
    assert (tmp_path / "killed-once").exists()  # an actor was killed mid-evaluation
    triples = _triples(db.root)
    assert set(triples.values()) == {1}
    assert {(s, b) for s, b, _ in triples} == {(s, b) for s in ("good", "killer")
                                               for b in BATCHES}
    assert {st for _, _, st in triples} == {"PASSED"}
    assert len(summary.outcomes) == 2 * len(BATCHES)
