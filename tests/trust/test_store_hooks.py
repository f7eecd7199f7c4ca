"""The store reaches trust only through its hooks (`fib_runtime.store.hooks`), wired by
`import fib_runtime`: an own write is remembered, a copy is not, and a merge that would
launder untrusted code into a folder trusted as such is refused by the library call too."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fib_runtime.store import TraceDB
from fib_runtime.store.merge import merge
from fib_runtime.trust import Trust, UntrustedMerge
from fib_runtime.trust.store import add
from tests.trust.foreign import DEF, foreign_db


def test_any_use_of_the_store_has_trust_listening() -> None:
    """A process that imports only the store still remembers its own writes."""
    code = ("from fib_runtime.store import hooks; from fib_runtime import trust; "
            "assert hooks._listeners == [trust.remember], hooks._listeners; "
            "assert hooks._copy_checks == [trust.refuse_laundering], hooks._copy_checks")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr


def test_an_own_write_is_remembered_and_a_copy_is_not(tmp_path: Path) -> None:
    copied = TraceDB.open(foreign_db(tmp_path / "copied", tmp_path / "ran.txt"))
    hostile = copied.solutions["fast"]
    mine = TraceDB.open(tmp_path / "mine", create=True)
    mine.add_definition(copied.definitions[DEF], own=False)
    mine.add_solution(hostile, own=False)  # a copy: nothing is announced
    assert Trust(mine.root).solution(hostile) is None
    assert Trust(mine.root).definition(copied.definitions[DEF]) is None
    mine.add_solution(hostile, replace=True)  # own (the default): trust remembers it
    assert Trust(mine.root).solution(hostile) == "its content is trusted"


def test_a_library_merge_into_a_trusted_folder_is_refused(tmp_path: Path) -> None:
    source = foreign_db(tmp_path / "foreign", tmp_path / "ran.txt")
    dest = TraceDB.open(tmp_path / "dest", create=True)
    add("databases", {str(dest.root.resolve()): {}})
    with pytest.raises(UntrustedMerge, match="solution fast"):
        merge([source], dest.root)
    assert not TraceDB.open(dest.root).solutions  # nothing written
    merge([source], tmp_path / "elsewhere")  # a folder not trusted as such takes it
    assert "fast" in TraceDB.open(tmp_path / "elsewhere").solutions
