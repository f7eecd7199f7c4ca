"""Capture policies (per definition, with a default) and their JSON config file."""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

from fib_runtime.config_fields import (
    check_bool,
    check_choice,
    check_int,
    check_number,
    check_policies,
    names,
    parse_config,
    read_config,
)
from fib_runtime.errors import CaptureConfigError, FibError

DUMP_MODES = ("none", "int", "named", "all")
KEY_MODES = ("axes", "kv_bucket")
CONFIG_ENV = "FIB_CAPTURE_CONFIG"
_E = CaptureConfigError
MAX_FLUSH_INTERVAL_S = 86400.0  # longer waits overflow the writer thread's timer


@dataclass(frozen=True)
class CapturePolicy:
    """What to record for one definition.

    per_key        records kept per hot-path key (1 = dedup, k = first k, None = no limit);
                   the hot-path key is the var-axis key, or its `shape_axes` part with
                   key="kv_bucket"
    sample         probability that a call still eligible for recording is recorded
    max_workloads  workloads recorded per definition (None = no cap)
    max_blob_bytes tensor bytes dumped per definition (None = no cap)
    dump           which input tensors are saved: none (recorded as random), int (integer
                   and bool tensors, e.g. kv_indptr), named (`dump_inputs`), all
    key            "axes" (dedup on the var-axis key) or "kv_bucket" (dedup on `shape_axes`
                   plus the power-of-two bucket of the average KV length, read from a copy of
                   the `kv_indptr` input on the writer thread)
    shape_axes     var axes forming the shape part of a kv_bucket key (None = the var axes of
                   the non-integer inputs)
    """

    per_key: int | None = 1
    sample: float = 1.0
    max_workloads: int | None = 10_000
    max_blob_bytes: int | None = 256 << 20
    dump: str = "none"
    dump_inputs: tuple[str, ...] = ()
    key: str = "axes"
    shape_axes: tuple[str, ...] | None = None
    kv_indptr: str = "kv_indptr"

    def __post_init__(self) -> None:
        check_int(self.per_key, "per_key", _E, low=1, none_ok=True)
        check_int(self.max_workloads, "max_workloads", _E, low=0, none_ok=True)
        check_int(self.max_blob_bytes, "max_blob_bytes", _E, low=0, none_ok=True)
        check_number(self.sample, "sample", _E, high=1.0)
        check_choice(self.dump, "dump", _E, DUMP_MODES)
        object.__setattr__(self, "dump_inputs", names(self.dump_inputs, "dump_inputs", _E))
        check_choice(self.key, "key", _E, KEY_MODES)
        object.__setattr__(self, "shape_axes",
                           names(self.shape_axes, "shape_axes", _E, none_ok=True))
        if type(self.kv_indptr) is not str:
            raise CaptureConfigError(f"field 'kv_indptr': must be an input name, "
                                     f"got {self.kv_indptr!r}")
        if self.dump == "named" and not self.dump_inputs:
            raise CaptureConfigError("field 'dump_inputs': required when dump is 'named'")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["dump_inputs"] = list(self.dump_inputs)
        if self.shape_axes is not None:
            out["shape_axes"] = list(self.shape_axes)
        return out


@dataclass(frozen=True)
class CaptureConfig:
    """Session settings and the policy of each definition.

    `definitions` maps a definition name or an fnmatch pattern (e.g. "gqa_paged_*") to its
    policy; an exact name wins over patterns, patterns are tried in order, else `default`.
    In JSON, each entry lists only the fields that differ from `default`. `shard` ("auto"
    or a template with {host} and {pid}) makes each process append to its own shard files
    instead of the locked canonical ones (fleet capture; $FIB_CAPTURE_SHARD overrides it).
    """

    default: CapturePolicy = field(default_factory=CapturePolicy)
    definitions: Mapping[str, CapturePolicy] = field(default_factory=dict)
    queue_size: int = 4096
    flush_interval_s: float = 2.0
    max_total_blob_bytes: int | None = 1 << 30
    seed: int | None = None
    handle_signals: bool = True
    shard: str | None = None

    def __post_init__(self) -> None:
        check_policies(self.default, self.definitions, CapturePolicy, _E,
                       "names or patterns")
        check_int(self.queue_size, "queue_size", _E, low=1)
        check_int(self.max_total_blob_bytes, "max_total_blob_bytes", _E, low=0, none_ok=True)
        # inf or a huge value overflows the writer's wait and kills it; NaN makes it spin.
        check_number(self.flush_interval_s, "flush_interval_s", _E, low_included=False,
                     high=MAX_FLUSH_INTERVAL_S)
        if self.seed is not None and type(self.seed) is not int:
            raise CaptureConfigError(f"field 'seed': must be an integer or null, "
                                     f"got {self.seed!r}")
        check_bool(self.handle_signals, "handle_signals", _E)
        if self.shard is not None:
            _check_shard(self.shard)

    def policy_for(self, definition: str) -> CapturePolicy:
        exact = self.definitions.get(definition)
        if exact is not None:
            return exact
        for pattern, policy in self.definitions.items():
            if fnmatch.fnmatchcase(definition, pattern):
                return policy
        return self.default

    # -- JSON ---------------------------------------------------------------------------

    @classmethod
    def from_dict(cls, data: Any, *, file: str | Path | None = None) -> CaptureConfig:
        """Parse `{"default": {...}, "definitions": {name or pattern: {...}}, <setting>: ...}`;
        `file` (where it was read from) prefixes every error message."""
        return parse_config(cls, CapturePolicy, data, _E, "capture config", file)

    def to_dict(self) -> dict[str, Any]:
        base = self.default.to_dict()
        return {
            "default": base,
            "definitions": {name: {k: v for k, v in p.to_dict().items() if base[k] != v}
                            for name, p in self.definitions.items()},
            "queue_size": self.queue_size, "flush_interval_s": self.flush_interval_s,
            "max_total_blob_bytes": self.max_total_blob_bytes, "seed": self.seed,
            "handle_signals": self.handle_signals, "shard": self.shard,
        }

    @classmethod
    def load(cls, path: str | Path) -> CaptureConfig:
        """Read a JSON config file (CaptureConfigError names the file and field)."""
        path, data = read_config(path, _E, "capture config")
        return cls.from_dict(data, file=path)

    def save(self, path: str | Path) -> None:
        Path(path).write_bytes(orjson.dumps(self.to_dict(), option=orjson.OPT_INDENT_2))

    @classmethod
    def from_env(cls) -> CaptureConfig:
        """The config named by $FIB_CAPTURE_CONFIG, else the defaults."""
        path = os.environ.get(CONFIG_ENV)
        return cls.load(path) if path else cls()


def _check_shard(shard: Any) -> None:
    from fib_runtime.store import check_shard_spec

    if not isinstance(shard, str):
        raise CaptureConfigError(f"field 'shard': must be a string or null, got {shard!r}")
    try:
        check_shard_spec(shard)
    except FibError as exc:
        raise CaptureConfigError(f"field 'shard': {exc}") from None

