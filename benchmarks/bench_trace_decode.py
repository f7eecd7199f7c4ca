"""Trace line decoding: the schema's full parser against lighter ones, on the same lines.

Run: python benchmarks/bench_trace_decode.py [--traces N] [--rounds R]
Modes, interleaved in rounds on one set of bench_store.make_db lines (garbage collector off,
as while TraceDB.open loads; each mode keeps what it decoded):
- `orjson only`: orjson.loads of each line (the floor of any orjson-based reader);
- `from_dict`: orjson.loads + Trace.from_dict (the schema's full check; what TraceDB.open
  did before the typed decoder);
- `hardware filter`: orjson.loads + the hardware key read from the dict, then from_dict only
  for this GPU model's lines (what a serving process that must rebuild its table does);
- `typed decoder`: fib_runtime.store.decoding.decode_line, what TraceDB.open does now
  (msgspec Structs that validate while they parse, then the schema's records; the same
  records as `from_dict`);
- `typed + hardware filter`: the same with this GPU model's key (other lines not built).
Writes benchmarks/results/bench_trace_decode.json. Goal (issue 30): >= 200k traces/s.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import print_table, write_json
from bench_store import make_db

from fib_runtime.hardware import hardware_key
from fib_runtime.schema import Trace
from fib_runtime.store.decoding import OTHER_HARDWARE, decode_line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--traces", type=int, default=60_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        make_db(Path(tmp), args.traces, 10)
        lines = [line for p in sorted(Path(tmp, "traces").rglob("*.jsonl"))
                 for line in p.read_bytes().split(b"\n") if line]
    keys: dict[str, str] = {}

    def served_key(name: str) -> str:
        key = keys.get(name)
        if key is None:
            key = keys[name] = hardware_key(name)
        return key

    def only_orjson() -> list[object]:
        return [orjson.loads(line) for line in lines]

    def full() -> list[object]:
        loads, parse = orjson.loads, Trace.from_dict
        return [parse(loads(line)) for line in lines]

    def filtered() -> list[object]:
        loads, parse, kept = orjson.loads, Trace.from_dict, []
        for line in lines:
            data = loads(line)
            if served_key(data["evaluation"]["environment"]["hardware"]) == "H100":
                kept.append(parse(data))
        return kept

    def typed(hardware: str | None) -> list[object]:
        seen: dict[str, str] = {}
        return [t for t in (decode_line(line, hardware, seen) for line in lines)
                if t is not OTHER_HARDWARE]

    modes = {"orjson only": only_orjson, "from_dict": full, "hardware filter": filtered,
             "typed decoder": lambda: typed(None),
             "typed + hardware filter": lambda: typed("H100")}
    times: dict[str, list[float]] = {m: [] for m in modes}
    gc.disable()  # as TraceDB.open does while it loads; every mode keeps what it decoded
    for _ in range(args.rounds):
        for name, fn in modes.items():
            start = time.perf_counter()
            kept = fn()
            times[name].append(time.perf_counter() - start)
            del kept
    gc.enable()
    rows, out = [], {}
    for name, samples in times.items():
        rate = len(lines) / statistics.median(samples)
        rows.append([name, f"{rate:,.0f}", "yes" if rate >= 200_000 else "no"])
        out[name] = {"seconds": samples, "traces_per_second": rate}
    print_table(["decoder", "traces/s (median)", ">= 200k/s"], rows)
    print(f"wrote {write_json('bench_trace_decode', {'traces': len(lines), 'modes': out})}")


if __name__ == "__main__":
    main()
