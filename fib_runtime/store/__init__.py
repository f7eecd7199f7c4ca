"""The trace database on disk: load, index, process-safe append, blobs.

Its face for the rest of fib-runtime: capture and dispatch import only these names (never
store.layout, store.shards or store.files), so the folder layout stays the store's own.
"""

from fib_runtime.store.db import LoadProblem, TraceDB
from fib_runtime.store.files import decisions_fingerprint, served_table_file
from fib_runtime.store.hooks import (
    announce_own_writes,
    check_copies_with,
    listen_to_own_writes,
)
from fib_runtime.store.layout import workload_blob
from fib_runtime.store.shards import check_shard_spec, shard_name, shard_spec
from fib_runtime.store.traffic import append_traffic, read_traffic

__all__ = ["LoadProblem", "TraceDB", "announce_own_writes", "append_traffic",
           "check_copies_with", "check_shard_spec", "decisions_fingerprint",
           "listen_to_own_writes", "read_traffic", "served_table_file", "shard_name",
           "shard_spec", "workload_blob"]
