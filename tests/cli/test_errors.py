"""Every `fib` command, misused as a user would: one line on stderr naming the path, and a
non-zero exit (README: "Errors print one line"); `--debug` keeps the traceback.

- a file where a folder belongs (real), a read-only folder (real: as a user who cannot
  write it; root writes through permissions, so root runs the call as `nobody`), a full
  disk (real: writes that land on /dev/full, which answers ENOSPC);
- standard output closed by its reader (`fib ls | head -1`): exit 141;
- bad numbers: refused by the parser (exit 2), in one line.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from fib_runtime import files
from fib_runtime.catalogue import install
from fib_runtime.cli.main import main
from fib_runtime.store import TraceDB
from tests.cli.test_report import build_db

FIB = [sys.executable, "-m", "fib_runtime.cli.main"]
NOBODY = 65534


@pytest.fixture
def place() -> Iterator[Path]:
    """A folder every user may enter (pytest's own tmp folders are root's alone), holding
    `afile` (a file), `ro/` (read-only), `db/` (the catalogue) and `traced/` (traces)."""
    root = Path(tempfile.mkdtemp(prefix="fib-errors-"))
    root.chmod(0o755)
    (root / "afile").write_text("not a folder\n")
    (root / "ro").mkdir(mode=0o555)
    install(TraceDB.open(root / "db", create=True))
    build_db(root / "traced")
    for path in root.rglob("*"):
        path.chmod(0o755 if path.is_dir() and path.name != "ro" else
                   0o555 if path.is_dir() else 0o644)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """`fib argv` in this process: its exit status and what it wrote on stderr."""
    status = main(argv)
    return status, capsys.readouterr().err


@contextlib.contextmanager
def unprivileged() -> Iterator[None]:
    """Run as a user for whom `ro/` is read-only (root ignores a folder's mode)."""
    if os.geteuid() != 0:
        yield
        return
    os.setegid(NOBODY)
    os.seteuid(NOBODY)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# -- a file where a folder belongs -------------------------------------------------------

FILE_FOR_FOLDER = [
    (["catalogue", "install", "{p}/afile"], "{p}/afile: not a database folder (a file is there)"),
    (["catalogue", "install", "{p}/afile/db"], "{p}/afile/db: Not a directory"),
    (["merge", "{p}/db", "{p}/afile"], "{p}/afile: not a database folder (a file is there)"),
    (["merge", "{p}/db", "{p}/afile/db"], "{p}/afile/db: Not a directory"),
    (["merge", "{p}/afile", "{p}/new"], "{p}/afile: no such database folder"),  # merge.py
    (["demo", "{p}/afile/db", "--iters", "1"], "{p}/afile/db: Not a directory"),
    (["report", "{p}/traced", "--out", "{p}/afile"], "{p}/afile: File exists"),
    (["report", "{p}/traced", "--out", "{p}/afile/r"], "{p}/afile/r: Not a directory"),
    (["report", "{p}/traced", "--held-out", "{p}/db"], "cannot read the held-out file"),
    (["report", "{p}/afile"], "{p}/afile: not a database folder (a file is there)"),
    (["retune", "{p}/afile"], "{p}/afile: not a database folder (a file is there)"),
    (["ls", "{p}/afile"], "{p}/afile: not a database folder (a file is there)"),
    (["validate", "{p}/afile"], "{p}/afile: not a database folder (a file is there)"),
    (["explain", "rmsnorm_h4096", "--axes", "batch_size=1", "--db", "{p}/afile"],
     "{p}/afile: not a database folder (a file is there)"),
    (["trust", "{p}/afile"], "{p}/afile: not a database folder (a file is there)"),
]


@pytest.mark.parametrize(("argv", "said"), FILE_FOR_FOLDER,
                         ids=[" ".join(a[:2]) + f" #{i}" for i, (a, _) in
                              enumerate(FILE_FOR_FOLDER)])
def test_a_file_where_a_folder_belongs(argv: list[str], said: str, place: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    status, err = run([a.format(p=place) for a in argv], capsys)
    assert status == 1
    assert said.format(p=place) in one_line(err)


def test_explain_on_a_missing_database_creates_nothing(
        place: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, err = run(["explain", "rmsnorm_h4096", "--axes", "batch_size=1", "--db",
                       str(place / "missing")], capsys)
    assert status == 1 and f"{place}/missing: no such database folder" in one_line(err)
    assert not (place / "missing").exists()


# -- a read-only folder --------------------------------------------------------------------

READ_ONLY = [
    (["catalogue", "install", "{p}/ro"], "{p}/ro/definitions: Permission denied"),
    (["catalogue", "install", "{p}/ro/db"], "{p}/ro/db: Permission denied"),
    (["merge", "{p}/db", "{p}/ro"], "{p}/ro/definitions: Permission denied"),
    (["demo", "{p}/ro/db", "--iters", "1"], "{p}/ro/db: Permission denied"),
    (["report", "{p}/traced", "--out", "{p}/ro"], "{p}/ro/toy_attn__H100__device.png: "
     "Permission denied"),
    (["report", "{p}/traced", "--out", "{p}/ro/r"], "{p}/ro/r: Permission denied"),
    (["trust", "{p}/db"], "{p}/ro/trust.json.lock: Permission denied"),
]


@pytest.mark.parametrize(("argv", "said"), READ_ONLY,
                         ids=[" ".join(a[:2]) + f" #{i}" for i, (a, _) in
                              enumerate(READ_ONLY)])
def test_a_read_only_folder(argv: list[str], said: str, place: Path,
                            capsys: pytest.CaptureFixture[str],
                            monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("matplotlib")
    from fib_runtime.report import plots  # imported while every file can be read

    plots.require_matplotlib()
    import matplotlib.backends.backend_agg
    import matplotlib.figure  # noqa: F401
    monkeypatch.setenv("FIB_TRUST_PATH", str(place / "ro" / "trust.json"))
    monkeypatch.setenv("FIB_CACHE_PATH", str(place / "ro" / "cache"))
    with unprivileged():
        status, err = run([a.format(p=place) for a in argv], capsys)
    assert status == 1
    assert said.format(p=place) in one_line(err)


# -- a full disk ---------------------------------------------------------------------------

needs_dev_full = pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full")


@needs_dev_full
def test_report_on_a_full_disk(place: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = place / "full"
    out.mkdir()
    (out / "index.html").symlink_to("/dev/full")
    status, err = run(["report", str(place / "traced"), "--out", str(out), "--no-plots"],
                      capsys)
    assert status == 1
    assert one_line(err) == f"fib: error: {out}/index.html: No space left on device"


@needs_dev_full
def test_catalogue_install_on_a_full_disk(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Every record the store writes goes through a temporary file: here it lands on
    /dev/full, so the write fails as on a full disk (ENOSPC, from the kernel)."""
    made = files.tempfile.mkstemp

    def on_a_full_disk(**kwargs: object) -> tuple[int, str]:
        fd, path = made(**kwargs)  # type: ignore[call-overload]
        os.dup2(os.open("/dev/full", os.O_WRONLY), fd)
        return fd, path

    monkeypatch.setattr(files.tempfile, "mkstemp", on_a_full_disk)
    status, err = run(["catalogue", "install", str(tmp_path / "db")], capsys)
    assert status == 1
    line = one_line(err)
    assert line.startswith(f"fib: error: {tmp_path}/db/definitions/")
    assert line.endswith(".json: No space left on device")
    assert not list((tmp_path / "db").rglob("*.tmp"))  # nothing half-written is left


# -- a closed pipe -------------------------------------------------------------------------

@pytest.mark.parametrize("argv", [["ls", "{p}/db"], ["catalogue", "ls"], ["hw"],
                                  ["report", "{p}/traced", "--no-plots", "--out", "{p}/r"]],
                         ids=["ls", "catalogue ls", "hw", "report"])
def test_output_closed_by_its_reader(argv: list[str], place: Path) -> None:
    """`fib ls | head -1`: the reader is gone before fib writes (deterministic here)."""
    proc = subprocess.Popen([*FIB, *(a.format(p=place) for a in argv)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait() == 141
    assert one_line(err) == ("fib: error: standard output was closed before everything was "
                             "written (broken pipe)")


def test_one_line_from_the_console_script_and_a_traceback_with_debug(place: Path) -> None:
    argv = [*FIB, "catalogue", "install", str(place / "afile" / "db")]
    plain = subprocess.run(argv, capture_output=True, text=True)
    assert plain.returncode == 1 and plain.stdout == ""
    assert one_line(plain.stderr) == f"fib: error: {place}/afile/db: Not a directory"
    debug = subprocess.run([*FIB, "--debug", *argv[len(FIB):]], capture_output=True, text=True)
    assert debug.returncode == 1 and "Traceback" in debug.stderr
    assert "NotADirectoryError" in debug.stderr


# -- bad numbers ---------------------------------------------------------------------------

BAD_NUMBERS = [
    (["demo", "--iters", "0"], "fib demo: error: argument --iters: must be an integer >= 1, "
     "got 0"),
    (["retune", "--iters", "0"], "argument --iters: must be an integer >= 1, got 0"),
    (["retune", "--warmup", "-1"], "argument --warmup: must be an integer >= 0, got -1"),
    (["retune", "--timeout", "0"], "argument --timeout: must be a finite number > 0, got 0"),
    (["retune", "--timeout", "nan"], "argument --timeout: must be a finite number > 0"),
    (["retune", "--iters", "many"], "argument --iters: expected an integer, got 'many'"),
    (["validate", "db", "--min-age", "-5"], "argument --min-age: must be a finite number >= 0"),
    (["hw", "--device", "-1"], "fib hw: error: argument --device: must be an integer >= 0"),
]


@pytest.mark.parametrize(("argv", "said"), BAD_NUMBERS,
                         ids=[" ".join(a) for a, _ in BAD_NUMBERS])
def test_bad_numbers_are_refused_by_the_parser(argv: list[str], said: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    assert said in one_line(capsys.readouterr().err)
