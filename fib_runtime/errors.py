"""Errors that users can cause; each names the file, line and field where it can."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path


class FibError(Exception):
    """Base class of every error fib-runtime raises on purpose."""


class SchemaError(FibError):
    """A record does not follow the FlashInfer Trace schema."""

    def __init__(
        self, message: str, *, file: str | None = None, line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.reason = message
        self.file = file
        self.line = line
        self.field = field
        super().__init__(self._render())

    def _render(self) -> str:
        where = self.file or "<data>"
        if self.line is not None:
            where += f":{self.line}"
        if self.field:
            where += f": field '{self.field}'"
        return f"{where}: {self.reason}"

    def located(self, file: str | None, line: int | None = None) -> SchemaError:
        """The same error, placed in a file (and line)."""
        return SchemaError(self.reason, file=file, line=line, field=self.field)


class StoreError(FibError):
    """The trace database cannot be read or written as asked."""


class ShapeError(FibError):
    """Tensors do not agree with a definition's axes."""


class BuildError(FibError):
    """A solution cannot be turned into a callable on this machine."""


class ConfigError(FibError):
    """A config (file or dict) is malformed; the message names the file and field."""


class CaptureConfigError(ConfigError):
    """A capture config (file or dict) is malformed; the message names the file and field."""


class DispatchConfigError(ConfigError):
    """A dispatch config (file or dict) is malformed; the message names the file and field."""


class InputError(FibError):
    """A workload's inputs cannot be materialised (missing blob, unknown axis, ...)."""


class RetuneError(FibError):
    """A retune cannot start as asked (unknown definition, solution or device) or stopped."""


class ClusterError(FibError):
    """The Ray cluster cannot be used (Ray missing, no connection, no usable node)."""


class WorkerLost(FibError):
    """A benchmark worker died or did not answer in time; `status` is RUNTIME_ERROR or
    TIMEOUT."""

    def __init__(self, status: str, log_text: str) -> None:
        super().__init__(log_text)
        self.status = status
        self.log = log_text


class TracesNotWritten(RetuneError):
    """Retune stopped because a trace could not be written (full disk, read-only mount, a
    record the store refuses). `lost` measured results were not written; what is on disk is
    whole (an append is all-or-nothing), so a later retune resumes where this one stopped."""

    def __init__(self, root: object, cause: Exception, lost: int, written: int) -> None:
        super().__init__(f"{root}: retune stopped, a trace could not be written ({cause}); "
                         f"{lost} measured results were not written and {written} were; the "
                         "files are whole, run retune again once the database is writable to "
                         "measure the rest")
        self.cause, self.lost, self.written = cause, lost, written


@contextlib.contextmanager
def naming(path: str | Path) -> Iterator[None]:
    """An OSError raised inside that names no file (a write on a full disk) names `path`."""
    try:
        yield
    except OSError as exc:
        if exc.filename is not None or exc.errno is None:
            raise
        raise type(exc)(exc.errno, exc.strerror, str(path)) from exc
