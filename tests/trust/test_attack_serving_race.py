"""Attack: a solution trusted by the digest of its content is swapped on disk, again and
again, while a server reloads and resolves new keys on another thread. Only the content
whose digest was checked may ever be imported: the hostile content leaves a marker when
imported. Run in a child process (its own sites and build cache)."""

from __future__ import annotations

from pathlib import Path

import orjson

from fib_runtime.store import TraceDB
from tests.trust.attack import child
from tests.trust.foreign import foreign_db, solution_path

TRUSTED = """def run(x, weight):
    return x * weight + 7
"""

SERVER = """
import json, os, sys, threading, time
from pathlib import Path
import torch
import fib_runtime as fib
from fib_runtime.files import write_atomic

root, path, trusted, hostile, marker, rounds = sys.argv[1:7]
path = Path(path)
trusted, hostile = open(trusted, "rb").read(), open(hostile, "rb").read()
sys.setswitchinterval(1e-5)  # many thread switches: the race shows in most runs

@fib.apply("toy_norm_h8")
def toy(x, weight):
    return x * weight

session = fib.enable_apply(root, {"check_interval_s": 0})
stop = threading.Event()
answers = set()

def serve():
    batch = 0
    while not stop.is_set():
        batch = batch % 512 + 1  # a new key each call: each is resolved (and built)
        answers.add(float(toy(torch.ones(batch, 8), torch.ones(8))[0, 0]))

server = threading.Thread(target=serve)
server.start()
swaps = 0
deadline = time.monotonic() + 8
try:
    while swaps < int(rounds) and time.monotonic() < deadline and not os.path.exists(marker):
        write_atomic(path, hostile)
        fib.reload()
        write_atomic(path, trusted)
        fib.reload()
        swaps += 1
finally:
    stop.set()
    server.join()
print(json.dumps({"swaps": swaps, "answers": sorted(answers),
                  "calls": fib.stats()["toy_norm_h8"]["calls"]}))
"""


def _race(tmp_path: Path, *, trust_hostile: bool, rounds: int) -> tuple[Path, dict]:
    marker = tmp_path / "hostile-imported.txt"
    root = foreign_db(tmp_path / "db", marker)
    path = solution_path(root, "fast")
    hostile_record = path.read_bytes()
    trusted_record = orjson.dumps({**orjson.loads(hostile_record), "sources": [
        {"path": "main.py", "content": TRUSTED}]})
    (tmp_path / "trusted.json").write_bytes(trusted_record)
    (tmp_path / "hostile.json").write_bytes(hostile_record)
    path.write_bytes(trusted_record)
    from fib_runtime.cli.main import main

    assert main(["trust", str(root), "--solution", "fast"]) == 0  # by the trusted digest
    if trust_hostile:
        path.write_bytes(hostile_record)
        assert main(["trust", str(root), "--solution", "fast"]) == 0
        path.write_bytes(trusted_record)
    assert TraceDB.open(root).solutions["fast"].sources[0].content == TRUSTED
    argv = [str(a) for a in (root, path, tmp_path / "trusted.json",
                             tmp_path / "hostile.json", marker, rounds)]
    result = child(f"import sys\nsys.argv = ['server', *{argv!r}]\n{SERVER}", timeout=60)
    assert result.returncode == 0, result.out
    [line] = [line for line in result.out.splitlines() if line.startswith('{"swaps"')]
    return marker, orjson.loads(line)


def test_swapping_a_trusted_solution_under_reload_never_imports_the_swap(
        tmp_path: Path) -> None:
    marker, seen = _race(tmp_path, trust_hostile=False, rounds=100)
    assert not marker.exists(), seen
    assert 101.0 not in seen["answers"] and 8.0 in seen["answers"], seen  # the trusted served
    assert seen["swaps"] >= 10 and seen["calls"] > 1000, seen  # a real race was run


def test_control_the_swapped_content_is_imported_once_it_is_trusted(tmp_path: Path) -> None:
    marker, seen = _race(tmp_path, trust_hostile=True, rounds=100)
    assert marker.exists(), seen  # the attack path imports swapped content when it may run

