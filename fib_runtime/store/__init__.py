"""The trace database on disk: load, index, process-safe append, blobs."""

from fib_runtime.store.db import LoadProblem, TraceDB

__all__ = ["LoadProblem", "TraceDB"]
