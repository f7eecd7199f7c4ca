"""The cluster driver's scheduling on a fake Ray (no Ray needed): per-hardware queues, lost
actors replaced and their work redone, the loss limit, deadlines."""

from __future__ import annotations

import sys
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from fib_runtime.cli.main import main
from fib_runtime.hardware import hardware_key
from fib_runtime.retuning import RetuneConfig, cluster, retune
from fib_runtime.schema import Solution
from fib_runtime.store import TraceDB
from tests import factories
from tests.retune.helpers import DEF, SOLUTIONS, make_db


class RayError(Exception):
    pass


class _Ref:
    """A call on a fake actor; it runs when the driver gets it."""

    def __init__(self, actor: _Actor, method: str, args: tuple[Any, ...]) -> None:
        self.actor, self.method, self.args = actor, method, args

    def ready(self) -> bool:
        return self.actor.dead or not (self.method == "run" and self.actor.node.hangs)

    def value(self) -> Any:
        if self.actor.dead:
            raise RayError("the actor died")
        return _METHODS[self.method](self.actor, *self.args)


class _Method:
    def __init__(self, actor: _Actor, name: str) -> None:
        self.actor, self.name = actor, name

    def remote(self, *args: Any) -> _Ref:
        return _Ref(self.actor, self.name, args)


class _Actor:
    def __init__(self, node: _Node) -> None:
        self.node, self.dead = node, False
        node.actors += 1
        self.start, self.run, self.stop = (_Method(self, n) for n in ("start", "run", "stop"))


def _start(actor: _Actor) -> dict[str, Any]:
    return {"name": f"NVIDIA {actor.node.key}", "key": actor.node.key, "libs": {},
            "gpus": [0], "pid": 1}


def _run(actor: _Actor, definition: dict[str, Any], workload: dict[str, Any],
         solutions: list[dict[str, Any]], settings: dict[str, Any], tolerance: Any
         ) -> dict[str, Any]:
    if actor.node.dies:
        actor.dead = True
        raise RayError("the actor died mid-task")
    passed = {"status": "PASSED", "latency_ms": 1.0, "log": "",
              "correctness": {"max_absolute_error": 0.0, "max_relative_error": 0.0}}
    actor.node.evaluations += len(solutions)
    return {"results": [(s["name"], passed, 2.0) for s in solutions], "unusable": None}


_METHODS = {"start": _start, "run": _run, "stop": lambda actor: None}


class _Node:
    def __init__(self, node_id: str, key: str, gpus: int, *, dies: bool = False,
                 hangs: bool = False) -> None:
        self.node_id, self.key, self.gpus = node_id, key, gpus
        self.dies, self.hangs = dies, hangs
        self.actors = self.evaluations = 0


class FakeRay:
    exceptions = SimpleNamespace(RayError=RayError)
    util = SimpleNamespace(scheduling_strategies=SimpleNamespace(
        NodeAffinitySchedulingStrategy=lambda node, soft: node))

    def __init__(self, *nodes: _Node) -> None:
        self.by_id = {n.node_id: n for n in nodes}

    def nodes(self) -> list[dict[str, Any]]:
        return [{"NodeID": n.node_id, "Alive": True, "NodeManagerAddress": n.node_id,
                 "Resources": {"GPU": float(n.gpus), "CPU": 4.0}} for n in self.by_id.values()]

    def remote(self, cls: type) -> Any:
        fake = self

        class _Class:
            def options(self, **options: Any) -> Any:
                node = fake.by_id[options["scheduling_strategy"]]
                assert options["num_gpus"] == 1
                return SimpleNamespace(remote=lambda *args: _Actor(node))

        return _Class()

    def wait(self, refs: list[_Ref], num_returns: int, timeout: float) -> tuple[list, list]:
        ready = [r for r in refs if r.ready()][:num_returns]
        if not ready:
            time.sleep(0.01)
        return ready, [r for r in refs if r not in ready]

    def get(self, refs: Any, timeout: float | None = None) -> Any:
        if isinstance(refs, list):
            return [self.get(r) for r in refs]
        return refs.value()

    def kill(self, actor: _Actor) -> None:
        actor.dead = True


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> dict[str, FakeRay]:
    holder: dict[str, FakeRay] = {}
    monkeypatch.setattr(cluster, "connect", lambda cluster: holder["ray"])
    return holder


def _keys(db_root: Path) -> Counter[tuple[str, str, int, str]]:
    db = TraceDB.open(db_root, strict=True)
    return Counter((hardware_key(t.evaluation.environment.hardware), t.solution or "",
                    t.workload.axes["batch_size"], t.evaluation.status.value)
                   for t in db.traces_for(DEF) if t.evaluation is not None)


def test_each_hardware_kind_measures_on_its_own_gpus(fake: dict[str, FakeRay],
                                                     tmp_path: Path) -> None:
    h100, h200 = _Node("a", "H100", 2), _Node("b", "H200", 1)
    fake["ray"] = FakeRay(h100, h200)
    db = make_db(tmp_path, {"good": SOLUTIONS["good"]}, batches=(1, 2, 3))
    db.add_solution(Solution.from_dict(factories.solution(
        "h100_only", DEF, code=factories.RMSNORM_REFERENCE, hardware=("H100",))))
    summary = retune(db.root, cluster="ray", progress=False)
    traces = _keys(db.root)
    assert set(traces.values()) == {1}
    assert {(k, s) for k, s, _, _ in traces} == {("H100", "good"), ("H100", "h100_only"),
                                                 ("H200", "good")}
    assert len(traces) == 3 * 3
    assert h200.evaluations == 3 and h100.evaluations == 6  # never the other kind's work
    assert sorted(summary.hardware) == ["NVIDIA H100 (H100)", "NVIDIA H200 (H200)"]
    assert {o.device.split("[")[0] for o in summary.outcomes} == {"a", "b"}
    again = retune(db.root, cluster="ray", progress=False)
    assert again.outcomes == [] and again.skipped == 9


def test_lost_actor_is_replaced_and_the_loss_limit_gives_a_status(
        fake: dict[str, FakeRay], tmp_path: Path) -> None:
    flaky = _Node("a", "H100", 1, dies=True)
    fake["ray"] = FakeRay(flaky)
    make_db(tmp_path, {"good": SOLUTIONS["good"]}, batches=(1, 2))
    retune(tmp_path, cluster="ray", progress=False)
    traces = _keys(tmp_path)
    assert traces == Counter({("H100", "good", 1, "RUNTIME_ERROR"): 1,
                              ("H100", "good", 2, "RUNTIME_ERROR"): 1})
    per_item = cluster.MAX_LOSSES + 1
    assert flaky.actors == 1 + 2 * per_item  # each loss: a fresh actor
    log = TraceDB.open(tmp_path).traces_for(DEF)[0].evaluation.log
    assert f"lost {per_item} times" in log


def test_an_actor_past_its_deadline_is_killed_and_gets_timeout(
        fake: dict[str, FakeRay], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cluster, "_START_SLACK_S", 0.05)
    monkeypatch.setattr(cluster, "MAX_LOSSES", 0)
    fake["ray"] = FakeRay(_Node("a", "H100", 1, hangs=True))
    make_db(tmp_path, {"good": SOLUTIONS["good"]}, batches=(1,))
    retune(tmp_path, cluster="ray", progress=False, timeout=0.05,
           config=RetuneConfig(reference_timeout=0.05))
    assert _keys(tmp_path) == Counter({("H100", "good", 1, "TIMEOUT"): 1})


def test_plan_slots_one_per_gpu_or_one_per_cpu_node() -> None:
    gpu = [{"NodeID": "a", "Alive": True, "Resources": {"GPU": 2.0, "CPU": 8.0}},
           {"NodeID": "b", "Alive": True, "Resources": {"CPU": 8.0}},
           {"NodeID": "c", "Alive": False, "Resources": {"GPU": 8.0}}]
    assert [(s.node, s.gpu) for s in cluster.plan_slots(gpu)] == [("a", True), ("a", True)]
    cpu = [{"NodeID": "a", "Alive": True, "Resources": {"CPU": 8.0}},
           {"NodeID": "b", "Alive": True, "Resources": {"CPU": 1.0}}]
    assert [(s.node, s.gpu) for s in cluster.plan_slots(cpu)] == [("a", False), ("b", False)]


def test_cli_retune_cluster_flag(fake: dict[str, FakeRay], tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    fake["ray"] = FakeRay(_Node("a", "H100", 1))
    make_db(tmp_path, {"good": SOLUTIONS["good"]}, batches=(1, 2))
    assert main(["retune", str(tmp_path), "--cluster", "ray", "--no-progress"]) == 0
    assert _keys(tmp_path) == Counter({("H100", "good", 1, "PASSED"): 1,
                                       ("H100", "good", 2, "PASSED"): 1})
    assert main(["retune", str(tmp_path), "--cluster", "ray", "--devices", "cpu"]) == 1
    assert "either devices or a cluster" in capsys.readouterr().err


def test_without_ray_the_error_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(cluster.ClusterError, match=r"fib-runtime\[ray\]"):
        cluster.connect("ray")


def test_no_worker_starts_anywhere_is_an_error(fake: dict[str, FakeRay], tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(actor: Any) -> dict[str, Any]:
        raise RayError("cannot start")

    monkeypatch.setitem(_METHODS, "start", broken)
    fake["ray"] = FakeRay(_Node("a", "H100", 2))
    make_db(tmp_path, {"good": SOLUTIONS["good"]}, batches=(1,))
    with pytest.raises(cluster.ClusterError, match="no worker could start"):
        retune(tmp_path, cluster="ray", progress=False)
