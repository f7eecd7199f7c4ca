"""A retune worker: a child process that owns one device and evaluates solutions on it, and
its handle in the parent (`WorkerHandle`: start it, ask it, kill and restart it when it
crashes or hangs).

It answers requests over a pipe, one at a time:
- `("prepare", {definition, workload, warmup, iters})`: materialise the workload's inputs,
  run and time the reference once; later evaluations reuse both.
- `("evaluate", {solution, warmup, iters, tolerance, timings})`: build (cached per solution),
  call once on fresh data, check the outputs on the canonical inputs, then time it in each
  timing regime asked for (see fib_runtime.measure.timing; a regime this device cannot time
  is reported).
Requests and answers are plain dicts. A crash or a hang here costs the parent one worker,
never the whole retune. The worker adopts the timing regimes, timers and input makers
registered in its parent (`measure.timing.adopt`), so an extension in the user's code is
measured there too.
"""

from __future__ import annotations

import faulthandler
import logging
import multiprocessing
import os
import signal
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from fib_runtime.build import BuildCache, build_reference, value_returning
from fib_runtime.errors import BuildError, InputError, WorkerLost
from fib_runtime.measure import inputs as input_makers
from fib_runtime.measure import timing as timers
from fib_runtime.measure.checks import check_call
from fib_runtime.measure.compare import as_tuple
from fib_runtime.measure.inputs import InputMaker, Inputs, materialise
from fib_runtime.measure.timing import Timer, get_timer, median_latency_ms
from fib_runtime.regimes import DEVICE, Regime
from fib_runtime.schema import Definition, Solution, Status, Workload
from fib_runtime.store import TraceDB

log = logging.getLogger("fib_runtime.retuning")
_LOG_LIMIT = 8000
_POLL_S = 0.05
_FAULT_LOG_TAIL = 4000
# What a worker adopts from its parent: its regimes with their timers, its input makers.
Extensions = tuple[list[tuple[Regime, Timer]], dict[str, InputMaker]]


def extensions() -> Extensions:
    """This process's registered timers (with their regimes) and input makers."""
    return timers.registered(), dict(input_makers.INPUT_MAKERS)


def _adopt(found: Extensions) -> None:
    pairs, makers = found
    timers.adopt(pairs)
    for name, maker in makers.items():
        input_makers.INPUT_MAKERS.setdefault(name, maker)


def _clip(text: str) -> str:
    return text if len(text) <= _LOG_LIMIT else "...\n" + text[-_LOG_LIMIT:]


@dataclass
class _Prepared:
    definition: Definition
    inputs: Inputs
    expected: tuple[Any, ...]
    passed: dict[str, Callable[..., Any]] = field(default_factory=dict)  # name -> its call


class _Worker:
    def __init__(self, device: str, db_root: str) -> None:
        self.device = device
        self.db = TraceDB(Path(db_root))  # only for blobs: nothing is loaded
        self.builds = BuildCache()
        self.prepared: _Prepared | None = None

    def sync(self) -> None:
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.synchronize(self.device)

    def prepare(self, request: dict[str, Any]) -> dict[str, Any]:
        self.prepared = None
        definition = Definition.from_dict(request["definition"])
        workload = Workload.from_dict(request["workload"])
        try:
            inputs = materialise(definition, workload, device=self.device,
                                 load_tensor=lambda d: self.db.load_tensor(d))
            reference = build_reference(definition)
            expected = tuple(_detach(as_tuple(reference(*inputs.args))))
            self.sync()
            latencies = {}  # the reference in each regime: each trace's speedup_factor
            for timing in request.get("timings") or [DEVICE.name]:
                timer = get_timer(timing)
                if timer.unavailable(self.device) is not None:
                    continue
                try:
                    latencies[timing] = timer.measure(
                        reference, inputs.args, device=self.device, refill=inputs.refill,
                        warmup=request["warmup"], iters=request["iters"])
                except Exception:  # e.g. a reference that cannot be graph-captured
                    if timing == DEVICE.name:
                        raise
                    self.sync()
                inputs.restore()
            latency = latencies.get(DEVICE.name) or median_latency_ms(
                reference, inputs.args, device=self.device, refill=inputs.refill,
                warmup=request["warmup"], iters=request["iters"])
            inputs.restore()
        except InputError as exc:
            return {"ok": False, "reason": str(exc)}
        except Exception as exc:
            return {"ok": False, "reason": f"the reference fails on this workload: "
                    f"{type(exc).__name__}: {exc}\n{_clip(traceback.format_exc())}"}
        self.prepared = _Prepared(definition, inputs, expected)
        return {"ok": True, "reference_latency_ms": float(latency),
                "reference_latencies_ms": {t: float(v) for t, v in latencies.items()}}

    def evaluate(self, request: dict[str, Any]) -> dict[str, Any]:
        result = self._evaluate(request)
        result.setdefault("timings", list(request.get("timings") or [DEVICE.name]))
        return result

    def _evaluate(self, request: dict[str, Any]) -> dict[str, Any]:
        prepared = self.prepared
        if prepared is None:
            raise RuntimeError("evaluate before a successful prepare")
        solution = Solution.from_dict(request["solution"])
        built = self.builds.get(solution)
        if isinstance(built, BuildError):
            return {"status": Status.COMPILE_ERROR.value, "log": _clip(str(built))}
        call = value_returning(built, prepared.definition)
        inputs = prepared.inputs
        try:
            # The first call sees other data than the check, so a solution that keeps the
            # result of its first call cannot pass.
            inputs.refill(0)
            call(*inputs.args)
            inputs.restore()
            got = call(*inputs.args)
            self.sync()
        except ImportError as exc:  # e.g. flashinfer missing: unbuildable here
            return self._failed(Status.COMPILE_ERROR, exc)
        except (Exception, SystemExit) as exc:
            return self._failed(Status.RUNTIME_ERROR, exc)
        try:  # by the definition's check kind (a sampler is called again, many times)
            check = check_call(prepared.definition, call, inputs.args, got, prepared.expected,
                               request.get("tolerance"))
        except (Exception, SystemExit) as exc:
            return self._failed(Status.RUNTIME_ERROR, exc)
        inputs.restore()
        result: dict[str, Any] = {"status": check.status.value, "log": _clip(check.log)}
        if check.max_absolute_error is not None:
            result["correctness"] = {"max_absolute_error": check.max_absolute_error,
                                     "max_relative_error": check.max_relative_error,
                                     "extra": check.extra}
        if check.status is not Status.PASSED:
            return result
        prepared.passed[solution.name] = call
        timings = list(request.get("timings") or [DEVICE.name])
        latencies: dict[str, float] = {}
        unavailable: dict[str, str] = {}
        for timing in timings:
            timer = get_timer(timing)
            reason = timer.unavailable(self.device)
            if reason is not None:
                unavailable[timing] = reason
                continue
            try:
                latencies[timing] = timer.measure(
                    call, inputs.args, device=self.device, refill=inputs.refill,
                    warmup=request["warmup"], iters=request["iters"])
            except (Exception, SystemExit) as exc:
                # A solution that runs but cannot be timed in one regime (e.g. not
                # capturable in a CUDA graph) is not measured there; it still ranks in the
                # others. Any failure in device time, or one that broke the device, fails it.
                if timing == DEVICE.name or not self._healthy():
                    return self._failed(Status.RUNTIME_ERROR, exc)
                unavailable[timing] = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"[:300]
            inputs.restore()
        result.update(timings=timings, latencies_ms={t: float(v) for t, v in latencies.items()},
                      spreads={t: getattr(v, "spread", 0.0) for t, v in latencies.items()},
                      unavailable=unavailable)
        if latencies:
            result["latency_ms"] = float(next(iter(latencies.values())))
        return result

    def interleave(self, request: dict[str, Any]) -> dict[str, Any]:
        """The eager times of passing solutions of the prepared workload, timed together in
        rounds (measure.timing.eager_interleaved_ms); empty where that fails."""
        prepared = self.prepared
        if prepared is None:
            raise RuntimeError("interleave before a successful prepare")
        calls = {name: prepared.passed[name] for name in request["solutions"]
                 if name in prepared.passed}
        try:
            got = timers.eager_interleaved_ms(
                calls, prepared.inputs.args, device=self.device, refill=prepared.inputs.refill,
                warmup=request["warmup"], iters=request["iters"])
        except (Exception, SystemExit) as exc:  # the solo times stand
            self.sync()
            return {"latencies_ms": {}, "spreads": {}, "log": _clip(f"{type(exc).__name__}: {exc}")}
        finally:
            prepared.inputs.restore()
        return {"latencies_ms": {n: float(v) for n, v in got.items()},
                "spreads": {n: v.spread for n, v in got.items()}}

    def _failed(self, status: Status, exc: BaseException) -> dict[str, Any]:
        log = f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"
        fatal = not self._healthy()
        if fatal:
            self.prepared = None
        return {"status": status.value, "log": _clip(log), "fatal": fatal}

    def _healthy(self) -> bool:
        """After an error, whether the device still works (a CUDA fault poisons the context)."""
        if not self.device.startswith("cuda"):
            return True
        import torch

        try:
            torch.cuda.synchronize(self.device)
            torch.cuda.empty_cache()
        except Exception:
            return False
        return True


def _detach(outputs: tuple[Any, ...]) -> list[Any]:
    import torch

    return [o.detach().clone() if isinstance(o, torch.Tensor) else o for o in outputs]


def _exit_with_parent(parent: int) -> None:
    """Exit once the parent is gone (killed with SIGKILL it cannot stop us; a hung kernel
    would otherwise keep the device busy forever)."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)


def main(conn: Connection, device: str, db_root: str, fault_log: str,
         parent: Extensions | None = None) -> None:
    """Entry point of the worker process (multiprocessing spawn target)."""
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True,
                     name="fib-worker-watchdog").start()
    with open(fault_log, "w") as handle:
        faulthandler.enable(handle)  # a segfault or abort leaves its stack in the log file
        if device == "cpu":  # a CPU worker on a GPU machine must see (and report) no GPU
            os.environ["CUDA_VISIBLE_DEVICES"] = ""
        import torch

        from fib_runtime.hardware import current_hardware

        index = None
        if device.startswith("cuda"):
            index = torch.device(device).index or 0
            torch.cuda.set_device(index)
        hardware = current_hardware(index)
        if parent is not None:
            _adopt(parent)
        conn.send({"name": hardware.name, "key": hardware.key, "libs": hardware.libs})
        worker = _Worker(device, db_root)
        handlers = {"prepare": worker.prepare, "evaluate": worker.evaluate,
                    "interleave": worker.interleave}
        while True:
            try:
                kind, request = conn.recv()
            except EOFError:
                return
            if kind == "stop":
                return
            conn.send(handlers[kind](request))


# -- the parent side ------------------------------------------------------------------------


@dataclass(frozen=True)
class DeviceInfo:
    """What a worker reports about its device."""

    name: str
    key: str
    libs: dict[str, str]


class WorkerHandle:
    """One worker process on one device ("cpu" or "cuda:N"), restarted on demand."""

    def __init__(self, device: str, db_root: Path, *, startup_timeout: float = 300.0,
                 parent: Extensions | None = None) -> None:
        self.device = device
        self.db_root = db_root
        self.startup_timeout = startup_timeout
        # What the worker adopts (default: this process's registrations, when it starts).
        self.parent = parent
        self.info: DeviceInfo | None = None
        self._process: Any = None
        self._conn: Any = None
        self._fault_log: Path | None = None

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.is_alive()

    def start(self) -> DeviceInfo:
        """Start the process (if not running) and wait until it reports its device."""
        if self.alive:
            assert self.info is not None
            return self.info
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe()
        if self._fault_log is not None:  # the previous process's, already reported
            self._fault_log.unlink(missing_ok=True)
        fd, fault_log = tempfile.mkstemp(prefix="fib-worker-", suffix=".log")
        os.close(fd)
        self._fault_log = Path(fault_log)
        self._process = ctx.Process(
            target=main, args=(child, self.device, str(self.db_root), fault_log,
                               self.parent if self.parent is not None else extensions()),
            name=f"fib-retune-{self.device}", daemon=True)
        self._process.start()
        child.close()
        self._conn = parent
        info = self._receive(self.startup_timeout, "starting")
        self.info = DeviceInfo(info["name"], info["key"], dict(info["libs"]))
        return self.info

    def request(self, kind: str, payload: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Send one request and wait for its answer; WorkerLost if the worker dies or hangs."""
        self.start()
        try:
            self._conn.send((kind, payload))
        except (BrokenPipeError, OSError):
            raise self._lost("RUNTIME_ERROR", "the worker was gone before the request") from None
        return self._receive(timeout, kind)

    def _receive(self, timeout: float, what: str) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while not self._conn.poll(_POLL_S):
            if not self._process.is_alive():
                raise self._lost("RUNTIME_ERROR", f"the worker process died while {what}: "
                                 f"{_describe_exit(self._process.exitcode)}")
            if time.monotonic() > deadline:
                raise self._lost("TIMEOUT", f"no answer within {timeout:g} s while {what}; "
                                 "the worker was killed")
        try:
            return self._conn.recv()
        except (EOFError, OSError):
            self._process.join(5)
            raise self._lost("RUNTIME_ERROR", f"the worker process died while {what}: "
                             f"{_describe_exit(self._process.exitcode)}") from None

    def _lost(self, status: str, message: str) -> WorkerLost:
        self.kill()
        tail = self._read_fault_log()
        log.warning("worker on %s lost (%s); it will be restarted", self.device, status)
        return WorkerLost(status, message + (f"\n{tail}" if tail else ""))

    def _read_fault_log(self) -> str:
        if self._fault_log is None or not self._fault_log.exists():
            return ""
        text = self._fault_log.read_text(errors="replace").strip()
        return text[-_FAULT_LOG_TAIL:]

    def kill(self) -> None:
        """End the process now (the next request starts a fresh one)."""
        if self._process is not None:
            if self._process.is_alive():
                self._process.kill()
            self._process.join(10)
            self._process = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def stop(self) -> None:
        """Ask the worker to exit, then make sure it has; remove its fault log."""
        if self.alive:
            try:
                self._conn.send(("stop", {}))
                self._process.join(5)
            except (BrokenPipeError, OSError):
                pass
        self.kill()
        if self._fault_log is not None:
            self._fault_log.unlink(missing_ok=True)
            self._fault_log = None


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by signal {signal.Signals(-code).name} (exit code {code})"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"
