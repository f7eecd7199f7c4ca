"""`fib hw`: this machine's device and its hardware key."""

from __future__ import annotations

import argparse

from fib_runtime.cli.options import integer
from fib_runtime.hardware import current_hardware


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("hw", help="show this machine's device and hardware key")
    parser.add_argument("--device", type=integer(0), default=None, help="CUDA device index")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    hw = current_hardware(args.device)
    print(f"name:     {hw.name}")
    print(f"key:      {hw.key}")
    if hw.device_index is not None:
        major, minor = hw.compute_capability or (0, 0)
        print(f"device:   cuda:{hw.device_index} (sm_{major}{minor})")
        print(f"memory:   {(hw.memory_bytes or 0) / 2**30:.1f} GiB")
        print(f"driver:   {hw.driver or 'unknown'}")
    print("libs:     " + ", ".join(f"{k} {v}" for k, v in sorted(hw.libs.items())))
    return 0
