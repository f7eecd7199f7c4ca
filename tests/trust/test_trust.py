"""Trust, written as the attacks: a database copied from elsewhere runs no code until the user
trusts it (the database, its author or one solution); a hostile copy of a catalogue solution
is not the catalogue's; a broken trust store trusts nothing and breaks nothing."""

from __future__ import annotations

import logging
import multiprocessing
from pathlib import Path

import pytest
import torch

import fib_runtime as fib
from fib_runtime.catalogue import load_catalogue
from fib_runtime.cli.main import main
from fib_runtime.dispatch.runtime import Runtime
from fib_runtime.schema import Solution, SourceFile
from fib_runtime.store import TraceDB, layout
from fib_runtime.trust import Trust, Untrusted, load_store, remember
from fib_runtime.trust.store import add
from tests.trust.foreign import DEF, foreign_db, solution_path, write_json

RETUNE = ["--devices", "cpu", "--warmup", "1", "--iters", "3", "--no-progress"]


@fib.apply(DEF)
def toy(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The original function."""
    return x * weight


def answer(batch: int = 4) -> float:
    """0.0: the original answered; 100.0: the database's solution did."""
    return float(toy(torch.ones(batch, 8), torch.ones(8))[0, 0]) - 1.0


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / "ran.txt"


@pytest.fixture
def copied(tmp_path: Path, marker: Path) -> Path:
    return foreign_db(tmp_path / "db", marker, reference_marker=tmp_path / "reference.txt")


def test_a_copied_database_runs_nothing_anywhere(copied: Path, marker: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    db = TraceDB.open(copied)
    assert "fast" in db.solutions and not db.load_errors
    assert main(["validate", str(copied)]) == 0
    assert main(["ls", str(copied)]) == 0
    assert main(["explain", DEF, "--axes", "batch_size=4", "--db", str(copied)]) == 0
    out = capsys.readouterr().out
    assert "fast  [untrusted]" in out and "decision:    fallback (untrusted)" in out
    assert main(["retune", str(copied), *RETUNE]) == 0
    out = capsys.readouterr().out
    assert "not run, untrusted: 2" in out and "solution fast (author evil)" in out
    with fib.enable_apply(copied):
        assert answer() == 0.0  # the original answered
        assert answer() == 0.0
        stats = fib.stats()[DEF]
        assert stats["fallbacks"] == {"untrusted": 2}
    assert not marker.exists()
    assert not (copied.parent / "reference.txt").exists()
    assert len(TraceDB.open(copied).traces_for(DEF)) == 1  # retune wrote nothing


def test_fib_trust_db_then_it_runs(copied: Path, marker: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["trust", str(copied)]) == 0
    out = capsys.readouterr().out
    assert "1 solutions" in out and "solution fast  (author evil)" in out
    with fib.enable_apply(copied):
        assert answer() == 100.0
    assert marker.read_text() == "called"
    marker.unlink()
    assert main(["retune", str(copied), *RETUNE]) == 0
    assert "not run, untrusted" not in capsys.readouterr().out
    assert (copied.parent / "reference.txt").exists() and marker.exists()


def test_trusting_the_author_or_the_solution_or_the_folder(copied: Path, marker: Path) -> None:
    solution = TraceDB.open(copied).solutions["fast"]
    for command, undo in ((["--author", "evil"], ["--author", "evil", "--revoke"]),
                          ([str(copied), "--solution", "fast"],
                           [str(copied), "--solution", "fast", "--revoke"]),
                          ([str(copied), "--root"], [str(copied), "--root", "--revoke"])):
        assert Trust(copied).solution(solution) is None
        assert main(["trust", *command]) == 0
        assert Trust(copied).solution(solution) is not None, command
        assert main(["trust", *undo]) == 0
    assert Trust(copied).solution(solution) is None
    assert main(["trust", "--author", "evil"]) == 0
    with fib.enable_apply(copied):
        assert answer() == 100.0
    assert marker.exists()


def test_another_author_with_the_same_name_is_not_trusted(tmp_path: Path, marker: Path) -> None:
    copied = foreign_db(tmp_path / "db", marker, author="good")
    assert main(["trust", "--author", "goo"]) == 0  # a prefix is not the author
    with fib.enable_apply(copied):
        assert answer() == 0.0
    assert not marker.exists()


def test_trusting_while_serving_takes_effect_on_reload(copied: Path, marker: Path) -> None:
    from fib_runtime.dispatch import sites

    with fib.enable_apply(copied, {"check_interval_s": 0}):
        assert answer() == 0.0
        runtime = sites.current_runtime()
        assert runtime is not None and not runtime.changed()
        assert main(["trust", str(copied)]) == 0
        assert runtime.changed()  # the watcher reloads on it
        fib.reload()
        assert answer() == 100.0


def test_solutions_written_through_the_api_are_trusted(tmp_path: Path, marker: Path) -> None:
    copied = foreign_db(tmp_path / "copied", marker)
    hostile = TraceDB.open(copied).solutions["fast"]
    mine = TraceDB.open(tmp_path / "mine", create=True)
    mine.add_definition(TraceDB.open(copied).definitions[DEF])
    mine.add_solution(hostile)  # the user's own fib writes it: remembered by content
    assert Trust(copied).solution(hostile) == "its content is trusted"
    other = Solution.from_dict({**hostile.to_dict(), "sources": [
        {"path": "main.py", "content": hostile.sources[0].content + "\n# changed\n"}]})
    assert Trust(copied).solution(other) is None  # the digest covers the code


def test_merge_does_not_launder_an_untrusted_solution(tmp_path: Path, marker: Path) -> None:
    from fib_runtime.store.merge import merge

    copied = foreign_db(tmp_path / "copied", marker)
    merge([copied], tmp_path / "dest")
    merged = TraceDB.open(tmp_path / "dest")
    assert "fast" in merged.solutions
    assert Trust(merged.root).solution(merged.solutions["fast"]) is None


def _catalogue_solution() -> Solution:
    return next(s for s in load_catalogue().solutions if s.definition.startswith("rmsnorm"))


def _write_raw(root: Path, solution: Solution) -> Path:
    return write_json(layout.solution_file(root, solution.author, "rmsnorm",
                                           solution.definition, solution.name),
                      solution.to_dict())


def test_a_hostile_fib_runtime_author_is_not_the_catalogue(tmp_path: Path, marker: Path) -> None:
    shipped = _catalogue_solution()
    assert shipped.author == "fib-runtime"
    source = shipped.sources[0]
    hostile = Solution.from_dict({**shipped.to_dict(), "sources": [SourceFile(
        source.path, source.content + f"\nimport pathlib\npathlib.Path({str(marker)!r})"
        ".write_text('imported')\n").to_dict()]})
    catalogue = load_catalogue()
    root = tmp_path / "db"
    write_json(layout.definition_file(root, "rmsnorm", shipped.definition),
               catalogue.definitions[shipped.definition].to_dict())
    _write_raw(root, hostile)
    runtime = Runtime(root, watch=False)
    built = runtime.build(hostile.name)
    assert isinstance(built, Untrusted)
    assert not marker.exists()
    assert Trust(root).solution(shipped) == "shipped with fib-runtime"  # the real one is


def test_the_shipped_catalogue_copied_raw_is_trusted(tmp_path: Path) -> None:
    shipped = _catalogue_solution()
    root = tmp_path / "db"
    write_json(layout.definition_file(root, "rmsnorm", shipped.definition),
               load_catalogue().definitions[shipped.definition].to_dict())
    _write_raw(root, shipped)
    db = TraceDB.open(root)
    trust = Trust(root, db.definitions)
    assert trust.solution(db.solutions[shipped.name]) == "shipped with fib-runtime"
    assert trust.definition(db.definitions[shipped.definition]) == "shipped with fib-runtime"


def test_catalogue_install_remembers_without_a_write_per_solution(tmp_path: Path) -> None:
    assert main(["catalogue", "install", str(tmp_path / "db")]) == 0
    store = load_store()
    assert len(store.entries["solutions"]) == len(load_catalogue().solutions)


def test_a_corrupt_store_trusts_nothing_and_breaks_nothing(
        copied: Path, marker: Path, isolated_trust: Path,
        caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> None:
    main(["trust", str(copied)])
    isolated_trust.write_text("{ not json")
    with caplog.at_level(logging.WARNING, logger="fib_runtime.trust"), \
            fib.enable_apply(copied):
        assert answer() == 0.0
    assert not marker.exists()
    assert remember([TraceDB.open(copied).solutions["fast"]]) == 0  # no raise, no overwrite
    assert isolated_trust.read_text() == "{ not json"
    assert main(["trust", str(copied)]) == 1
    assert "cannot be read" in capsys.readouterr().err


def test_fib_trust_all_for_containers(copied: Path, marker: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FIB_TRUST", "all")
    with fib.enable_apply(copied):
        assert answer() == 100.0


def test_list_shows_each_solutions_standing(copied: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["trust", str(copied), "--list"]) == 0
    assert "fast: NOT trusted" in capsys.readouterr().out
    main(["trust", "--author", "evil"])
    capsys.readouterr()
    assert main(["trust", str(copied), "--list"]) == 0
    out = capsys.readouterr().out
    assert "authors: evil" in out and "fast: author 'evil' is trusted" in out


def _add_many(path: str, start: int) -> None:
    add("solutions", {f"sha256:{i:064x}": {"name": str(i)} for i in range(start, start + 25)},
        Path(path))


def test_concurrent_writers_lose_no_entry(isolated_trust: Path) -> None:
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_add_many, args=(str(isolated_trust), 25 * i))
               for i in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert [w.exitcode for w in workers] == [0, 0, 0, 0]
    assert len(load_store(isolated_trust).entries["solutions"]) == 100


def test_a_database_copied_under_the_trusted_name_is_not_the_trusted_folder(
        tmp_path: Path, marker: Path) -> None:
    trusted = tmp_path / "db"
    trusted.mkdir()
    assert main(["trust", str(trusted), "--root"]) == 0
    elsewhere = foreign_db(tmp_path / "other" / "db", marker)
    assert Trust(elsewhere).solution(TraceDB.open(elsewhere).solutions["fast"]) is None
    assert solution_path(elsewhere, "fast").exists()


def test_explain_imports_trusted_candidates_only(copied: Path, marker: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """What docs/trust.md says of `fib explain`: it builds a trusted candidate to show
    whether it builds (its import runs), never an untrusted one."""
    assert main(["explain", DEF, "--axes", "batch_size=4", "--db", str(copied)]) == 0
    assert "fast  [untrusted]" in capsys.readouterr().out and not marker.exists()
    assert main(["trust", str(copied), "--solution", "fast"]) == 0
    assert main(["explain", DEF, "--axes", "batch_size=4", "--db", str(copied)]) == 0
    assert "fast  [ok]" in capsys.readouterr().out
    assert marker.read_text() == "imported"
