"""Call counts per key, kept beside the records (`DB/.fib/traffic/<definition>.jsonl`, and
`<definition>.<shard>.jsonl` per capture shard: a fleet's processes append without locks).

Capture's flushes append, per definition, how often each key was called since the last
flush on this GPU model: one line `{"hardware", "axes", "calls"}` per key. Retune reads the
sums to order its work by traffic and to say how much of the traffic its measurements
cover. The counts live beside the FlashInfer Trace files, not in them: a count that grows
while serving never rewrites a workload line, and flashinfer-bench loads the folder as it is.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

import orjson

from fib_runtime.keys import Key, axes_to_key, key_to_axes
from fib_runtime.schema import Definition
from fib_runtime.store.files import append_records, inside

log = logging.getLogger("fib_runtime.store")
TRAFFIC = ".fib/traffic"


def traffic_file(root: Path, definition: str, shard: str | None = None) -> Path:
    """The definition's counts file; a capture shard's own (`<definition>.<shard>.jsonl`)."""
    name = definition if shard is None else f"{definition}.{shard}"
    return inside(root, f"{TRAFFIC}/{name}.jsonl")


def append_traffic(root: Path, definition: Definition, hardware: str,
                   calls: Mapping[Key, int], shard: str | None = None) -> None:
    """Add the calls of each key (since the last append) to the definition's counts: under
    the file's lock, or, for a capture shard, to its own file without one."""
    append_records(root, traffic_file(root, definition.name, shard),
                   ({"hardware": hardware, "axes": key_to_axes(definition, key), "calls": n}
                    for key, n in calls.items() if n > 0), lock=shard is None)


def read_traffic(root: Path, definition: Definition) -> Counter[tuple[str, Key]]:
    """The calls counted per (hardware key, workload key); lines that do not parse (a writer
    cut short) are skipped and logged."""
    counts: Counter[tuple[str, Key]] = Counter()
    folder = traffic_file(root, definition.name).parent
    paths = [folder / f"{definition.name}.jsonl",
             *sorted(folder.glob(f"{definition.name}.*.jsonl"))]
    lines = []
    for path in paths:
        try:
            lines += path.read_bytes().splitlines()
        except FileNotFoundError:
            continue
    bad = 0
    for line in lines:
        try:
            record = orjson.loads(line)
            counts[str(record["hardware"]), axes_to_key(definition, record["axes"])] += \
                int(record["calls"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            bad += 1
    if bad:
        log.warning("%s: %d unreadable lines skipped", folder, bad)
    return counts
