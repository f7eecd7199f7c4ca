"""Capture counters of one definition, and their sum over a session."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class DefinitionStats:
    """Counters of one definition.

    The hot path counts calls of keys already done in its own closure (see recorder.py);
    the fields below are written under the session's admission lock (`slow_calls`,
    `admitted`, `graph_captured`, `reserved_bytes`, `dropped`) or by the writer alone
    (`recorded`, `blob_bytes`, `jsonl_bytes`, `write_dropped`), so the two never share a lock.
    """

    slow_calls: int = 0
    admitted: int = 0
    graph_captured: int = 0
    reserved_bytes: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    recorded: int = 0
    blob_bytes: int = 0
    jsonl_bytes: int = 0
    write_dropped: Counter[str] = field(default_factory=Counter)

    def as_dict(self, fast_hits: int) -> dict[str, Any]:
        dropped = self.dropped + self.write_dropped
        return {
            "seen": fast_hits + self.slow_calls,
            "admitted": self.admitted,
            "recorded": self.recorded,
            "dropped": dict(sorted(dropped.items())),
            "dropped_total": sum(dropped.values()),
            "graph_captured": self.graph_captured,
            "blob_bytes": self.blob_bytes,
            "bytes_written": self.blob_bytes + self.jsonl_bytes,
        }


def total(per_definition: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The sum of per-definition stats dicts."""
    out: dict[str, Any] = {"seen": 0, "admitted": 0, "recorded": 0, "dropped": Counter(),
                           "dropped_total": 0, "graph_captured": 0, "blob_bytes": 0,
                           "bytes_written": 0}
    for stats in per_definition.values():
        for key, value in stats.items():
            if key == "dropped":
                out["dropped"].update(value)
            else:
                out[key] += value
    out["dropped"] = dict(sorted(out["dropped"].items()))
    return out
