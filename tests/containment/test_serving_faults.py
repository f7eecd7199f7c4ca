"""Serving never fails because of us: each test is an attack (a broken build cache, a
hostile solution, a dangling link, a bad config from the environment) followed by the
proof that every call got an answer and that the right counter moved."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import threading
from pathlib import Path

import orjson
import pytest
import torch

import fib_runtime as fib
from fib_runtime.build import BuildCache, loader
from fib_runtime.errors import BuildError, SchemaError
from fib_runtime.schema import Solution, SourceFile
from fib_runtime.store import TraceDB
from fib_runtime.trust import remember
from tests.dispatch.helpers import SCALE_CODE, make_db
from tests.factories import solution

CPU = "cpu"
DEF = "toy_norm_h8"


@fib.apply(DEF)
def toy(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The fallback: tag 0."""
    return x * weight


def served(batch: int = 4) -> float:
    """The tag of whoever answered (x, weight = 1: each solution adds its own tag)."""
    return float(toy(torch.ones(batch, 8), torch.ones(8))[0, 0]) - 1.0


def tagged(tag: float) -> str:
    return SCALE_CODE.format(tag=tag)


def stats() -> dict:
    return fib.stats()[DEF]


# -- 1. the build cache on a full disk, a read-only folder, a path that is a file -------------

def _full_disk(monkeypatch: pytest.MonkeyPatch, cache: Path) -> None:
    write = loader._write_file

    def no_space(path: Path, data: bytes) -> None:
        if cache in path.parents:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        write(path, data)

    monkeypatch.setattr(loader, "_write_file", no_space)


def _read_only(monkeypatch: pytest.MonkeyPatch, cache: Path) -> None:
    cache.mkdir()
    if os.geteuid() != 0:
        cache.chmod(0o500)
        return
    # root writes through permissions: the file system refuses instead, as a read-only mount
    mkdir = Path.mkdir

    def read_only(self: Path, *args: object, **kwargs: object) -> None:
        if cache == self or cache in self.parents:
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        mkdir(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "mkdir", read_only)


def _a_file(monkeypatch: pytest.MonkeyPatch, cache: Path) -> None:
    cache.write_text("not a folder")


@pytest.mark.parametrize("fault", [_full_disk, _read_only, _a_file],
                         ids=["full_disk", "read_only", "path_is_a_file"])
def test_an_unusable_build_cache_still_serves(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              fault) -> None:  # type: ignore[no-untyped-def]
    db = tmp_path / "db"
    make_db(db, {"one": tagged(1)}, [("one", 4, 0.01, CPU)])
    cache = tmp_path / "cache"
    monkeypatch.setenv("FIB_CACHE_PATH", str(cache))
    fault(monkeypatch, cache)
    try:
        with fib.enable_apply(db):
            assert [served() for _ in range(3)] == [1.0, 1.0, 1.0]  # built privately
            counters = stats()
    finally:
        if cache.is_dir():
            cache.chmod(0o700)
    assert counters["hits"] == 3 and counters["fallbacks"] == {}
    assert "not writable" in counters["build_problems"]["one"]


def test_no_writable_folder_at_all_falls_back_and_counts(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "db"
    make_db(db, {"one": tagged(1)}, [("one", 4, 0.01, CPU)])
    blocker = tmp_path / "blocker"
    blocker.write_text("a file")
    monkeypatch.setenv("FIB_CACHE_PATH", str(blocker / "cache"))
    monkeypatch.setattr(loader, "_private_root", lambda: blocker / "private")
    with fib.enable_apply(db):
        assert [served() for _ in range(3)] == [0.0, 0.0, 0.0]
        counters = stats()
    assert counters["fallbacks"] == {"unavailable": 3}
    assert counters["build_problems"]["one"].startswith("unavailable: one: its sources")


# -- 2. source paths that cannot be written --------------------------------------------------

@pytest.mark.parametrize("path", ["a\0b.py", ".", "./main2.py", "pkg//a.py", "pkg/",
                                  "x" * 256 + ".py", "d" * 300 + "/a.py"],
                         ids=["nul", "dot", "dot_part", "empty_part", "trailing_slash",
                              "long_name", "long_folder"])
def test_unwritable_source_paths_are_refused_at_load(tmp_path: Path, path: str) -> None:
    data = solution("bad", DEF, code=tagged(9))
    data["sources"].append({"path": path, "content": "x = 1\n"})
    with pytest.raises(SchemaError) as caught:
        Solution.from_dict(data)
    assert caught.value.field == "sources[1].path"
    # In a database the file is a load problem and the others still serve.
    make_db(tmp_path, {"good": tagged(2)}, [("bad", 4, 0.01, CPU), ("good", 4, 0.02, CPU)])
    target = tmp_path / "solutions" / "tests" / "rmsnorm" / DEF / "bad.json"
    target.write_bytes(orjson.dumps(data))
    with fib.enable_apply(tmp_path) as session:
        assert served() == 2.0
    assert any(p.field == "sources[1].path" and "bad.json" in p.file
               for p in session.runtime.db.load_errors)


def test_a_file_and_a_folder_of_the_same_name(tmp_path: Path) -> None:
    data = solution("clash", DEF, code=tagged(9))
    data["sources"] += [{"path": "pkg", "content": "x = 1\n"},
                         {"path": "pkg/a.py", "content": "x = 2\n"}]
    with pytest.raises(SchemaError, match="also a source file"):
        Solution.from_dict(data)


def test_sources_that_fail_to_write_at_build_fall_back(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """What only the file system can refuse (here a clash the schema would have caught,
    forced in past it) is a build failure: unavailable, answered by the next one."""
    monkeypatch.setenv("FIB_CACHE_PATH", str(tmp_path / "cache"))
    make_db(tmp_path / "db", {"good": tagged(2)},
            [("clash", 4, 0.01, CPU), ("good", 4, 0.02, CPU)])
    base = Solution.from_dict(solution("clash", DEF, code=tagged(9)))
    clash = Solution(base.name, base.definition, base.author, base.spec,
                     (*base.sources, SourceFile("pkg", "x = 1\n"),
                      SourceFile("pkg/a.py", "x = 2\n")))
    built = BuildCache().get(clash)
    assert isinstance(built, BuildError) and "cannot be written" in str(built)
    db = TraceDB.open(tmp_path / "db")
    db.solutions["clash"] = clash
    remember([clash])  # forced in past the writer: trusted as the user's own
    with fib.enable_apply(db):
        assert [served() for _ in range(2)] == [2.0, 2.0]
        counters = stats()
    assert counters["build_problems"]["clash"].startswith("unavailable: clash")
    assert counters["hits"] == 2 and counters["fallbacks"] == {}


def test_a_solution_name_over_255_bytes_is_a_load_problem_and_calls_fall_back(
        tmp_path: Path) -> None:
    """A record name names a path inside the database (the store confines it to 200 bytes):
    the long-named solution is refused at load, the calls are answered by the fallback."""
    from fib_runtime.store import TraceDB

    long_name = "n" * 300
    make_db(tmp_path, {}, [(long_name, 4, 0.01, CPU)])
    target = tmp_path / "solutions" / "tests" / "long.json"
    target.parent.mkdir(parents=True)
    target.write_bytes(orjson.dumps(solution(long_name, DEF, code=tagged(7))))
    problems = TraceDB.open(tmp_path).load_errors
    assert any("long.json" in str(p) and "'name'" in str(p) for p in problems)
    with fib.enable_apply(tmp_path):
        assert [served() for _ in range(2)] == [0.0, 0.0]
        assert stats()["hits"] == 0


# -- 3. a solution that raises while being quarantined, from many threads -------------------

SLOW_RAISE = """import time

def run(x, weight):
    time.sleep(0.0005)
    raise RuntimeError("kernel exploded")
"""


def test_quarantine_under_sixteen_threads_answers_every_call(tmp_path: Path) -> None:
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # many thread switches inside the race window
    make_db(tmp_path, {"bad": SLOW_RAISE}, [("bad", 4, 0.01, CPU)])
    answers: list[float] = []
    escaped: list[BaseException] = []
    try:
        with fib.enable_apply(tmp_path, {"default": {"quarantine_after": 3}}):
            start = threading.Barrier(16)

            def worker() -> None:
                start.wait()
                for _ in range(100):
                    try:
                        answers.append(served())
                    except BaseException as exc:
                        escaped.append(exc)

            threads = [threading.Thread(target=worker) for _ in range(16)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            counters = stats()
    finally:
        sys.setswitchinterval(old)
    assert escaped == [] and answers == [0.0] * 1600
    assert counters["calls"] == 1600 and counters["hits"] == 0
    assert counters["quarantined"] == ["bad"] and 3 <= counters["errors"]["bad"] <= 3 + 16
    assert counters["fallbacks"]["error"] == counters["errors"]["bad"]


def test_a_choice_made_just_before_a_quarantine_is_not_kept(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    """Another thread quarantines the solution between this call's decision and its
    caching: the stale choice must not stay served (each later call would run the
    quarantined solution, then the fallback)."""
    from fib_runtime.dispatch.dispatcher import Dispatcher

    make_db(tmp_path, {"bad": SLOW_RAISE, "good": tagged(2)},
            [("bad", 4, 0.01, CPU), ("good", 4, 0.02, CPU)])
    decide = Dispatcher.decide

    def quarantined_meanwhile(self: Dispatcher, key: tuple, convention: str, *regime):  # type: ignore[no-untyped-def]
        decision = decide(self, key, convention, *regime)
        with self.lock:
            self.counters.quarantined.add("bad")
            self._forget()
        return decision

    with fib.enable_apply(tmp_path):
        monkeypatch.setattr(Dispatcher, "decide", quarantined_meanwhile)
        assert served() == 2.0  # the stale choice raised; the next candidate answered
        monkeypatch.setattr(Dispatcher, "decide", decide)
        assert [served() for _ in range(4)] == [2.0] * 4
        counters = stats()
    assert counters["errors"] == {"bad": 1} and counters["hits"] == 5


# -- 4. SystemExit, KeyboardInterrupt and other BaseExceptions from a solution ---------------

@pytest.mark.parametrize("body", ["import sys\n    sys.exit(3)", "raise KeyboardInterrupt",
                                  "raise SystemExit('bye')", "raise GeneratorExit"],
                         ids=["sys_exit", "keyboard_interrupt", "system_exit", "generator_exit"])
def test_base_exceptions_from_a_solution_fall_back_and_quarantine(tmp_path: Path,
                                                                  body: str) -> None:
    code = f"def run(x, weight):\n    {body}\n"
    make_db(tmp_path, {"exits": code, "good": tagged(2)},
            [("exits", 4, 0.01, CPU), ("good", 4, 0.02, CPU), ("exits", 8, 0.01, CPU)])
    with fib.enable_apply(tmp_path, {"default": {"quarantine_after": 2}}):
        assert [served(4) for _ in range(3)] == [2.0, 2.0, 2.0]  # the next candidate
        assert served(8) == 0.0  # quarantined, and key 8 has no other: the fallback
        counters = stats()
    assert counters["errors"] == {"exits": 2} and counters["quarantined"] == ["exits"]
    assert counters["fallbacks"] == {"unavailable": 1}


def test_the_fallbacks_own_keyboard_interrupt_reaches_the_caller(tmp_path: Path) -> None:
    make_db(tmp_path, {"one": tagged(1)}, [("one", 4, 0.01, "NVIDIA H100 80GB HBM3")])

    @fib.apply(DEF)
    def interrupted(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        raise KeyboardInterrupt

    with fib.enable_apply(tmp_path), pytest.raises(KeyboardInterrupt):
        interrupted(torch.ones(4, 8), torch.ones(8))


def test_strict_mode_reraises_a_solutions_system_exit(tmp_path: Path) -> None:
    make_db(tmp_path, {"exits": "def run(x, weight):\n    raise SystemExit(5)\n"},
            [("exits", 4, 0.01, CPU)])
    with fib.enable_apply(tmp_path, {"default": {"strict": True}}), \
            pytest.raises(SystemExit):
        served()


# -- 6. a dangling symbolic link in the database --------------------------------------------

def _dangling_db(root: Path) -> Path:
    make_db(root, {"one": tagged(1)}, [("one", 4, 0.01, CPU)])
    link = root / "traces" / "rmsnorm" / "gone.jsonl"
    link.symlink_to(root / "nowhere.jsonl")
    (root / "solutions" / "gone.json").symlink_to(root / "nowhere.json")
    return link


def test_a_dangling_link_is_a_load_problem_not_an_error(tmp_path: Path) -> None:
    _dangling_db(tmp_path)
    with fib.enable_apply(tmp_path) as session:
        assert served() == 1.0
        assert not session.runtime.changed()
    problems = {p.file: p.reason for p in TraceDB.open(tmp_path).load_errors}
    assert problems == {"traces/rmsnorm/gone.jsonl": "a dangling symbolic link (skipped)",
                        "solutions/gone.json": "a dangling symbolic link (skipped)"}


def test_env_start_with_a_dangling_link_and_a_bad_capture_config(tmp_path: Path) -> None:
    """The issue's process: FIB_ENABLE_APPLY on a database with a dangling link still
    dispatches; FIB_ENABLE_TRACING with a broken config is reported once and stays off."""
    db = tmp_path / "db"
    _dangling_db(db)
    config = tmp_path / "capture.json"
    config.write_bytes(orjson.dumps({"flush_interval_s": "2"}))
    script = ("import torch, fib_runtime as fib, fib_runtime.autostart as a\n"
              "@fib.apply('toy_norm_h8')\n"
              "def toy(x, weight):\n    return x * weight\n"
              "print([float(toy(torch.ones(4, 8), torch.ones(8))[0, 0]) for _ in 'ab'])\n"
              "print(fib.stats()['toy_norm_h8']['hits'], len(a.problems),\n"
              "      fib.capture_stats()['active'])\n")
    env = {**os.environ, "FIB_ENABLE_APPLY": "1", "FIB_ENABLE_TRACING": "1",
           "FIB_CAPTURE_CONFIG": str(config), "FIB_DATASET_PATH": str(db),
           "FIB_CACHE_PATH": str(tmp_path / "cache")}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["[2.0, 2.0]", "2 1 False"]
    reports = [line for line in result.stderr.splitlines() if "stays off" in line]
    assert len(reports) == 1 and "FIB_ENABLE_TRACING" in reports[0]
    assert f"{config}: capture config: field 'flush_interval_s'" in reports[0]


# -- 5. a bad config from the environment while serving -------------------------------------

@pytest.mark.parametrize("config", [{"flush_interval_s": "2"}, {"flush_interval_s": -1},
                                    {"queue_size": 1.5}, {"default": {"sample": "all"}},
                                    {"handle_signals": "no"}],
                         ids=["string", "negative", "float_size", "sample", "signals"])
def test_env_capture_with_a_bad_config_stays_off_and_serves(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, config: dict) -> None:
    from fib_runtime import autostart
    from fib_runtime.capture.session import active_session

    path = tmp_path / "capture.json"
    path.write_bytes(orjson.dumps(config))
    monkeypatch.setenv("FIB_ENABLE_TRACING", "1")
    monkeypatch.setenv("FIB_CAPTURE_CONFIG", str(path))
    monkeypatch.setattr(autostart, "problems", [])
    autostart.start_capture()  # what the first call of a process runs
    assert active_session() is None and served() == 0.0
    assert len(autostart.problems) == 1 and str(path) in autostart.problems[0]
