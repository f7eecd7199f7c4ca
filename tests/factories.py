"""Small valid records for tests, as plain dicts."""

from __future__ import annotations

import uuid
from typing import Any

RMSNORM_REFERENCE = """import torch

def run(x, weight):
    xf = x.float()
    y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-5) * weight.float()
    return y.to(x.dtype)
"""


def definition(name: str = "toy_norm_h8", hidden: int = 8, **over: Any) -> dict[str, Any]:
    data = {
        "name": name, "op_type": "rmsnorm", "description": "toy", "tags": ["test"],
        "axes": {"batch_size": {"type": "var"}, "hidden_size": {"type": "const", "value": hidden}},
        "inputs": {"x": {"shape": ["batch_size", "hidden_size"], "dtype": "float32"},
                   "weight": {"shape": ["hidden_size"], "dtype": "float32"}},
        "outputs": {"y": {"shape": ["batch_size", "hidden_size"], "dtype": "float32"}},
        "reference": RMSNORM_REFERENCE,
    }
    data.update(over)
    return data


def solution(name: str = "toy_sol", definition: str = "toy_norm_h8", *,
             code: str = RMSNORM_REFERENCE, hardware: tuple[str, ...] = ("any",),
             dps: bool = False, **over: Any) -> dict[str, Any]:
    data = {
        "name": name, "definition": definition, "author": "tests",
        "spec": {"language": "python", "target_hardware": list(hardware),
                 "entry_point": "main.py::run", "destination_passing_style": dps},
        "sources": [{"path": "main.py", "content": code}],
    }
    data.update(over)
    return data


def workload(definition: str = "toy_norm_h8", batch: int = 4, **inputs: Any) -> dict[str, Any]:
    return {"definition": definition, "solution": None, "evaluation": None,
            "workload": {"uuid": str(uuid.uuid4()), "axes": {"batch_size": batch},
                         "inputs": inputs or {"x": {"type": "random"},
                                              "weight": {"type": "random"}}}}


def trace(definition: str = "toy_norm_h8", solution: str = "toy_sol", batch: int = 4, *,
          latency: float = 0.01, hardware: str = "NVIDIA H100 80GB HBM3",
          status: str = "PASSED") -> dict[str, Any]:
    passed = status == "PASSED"
    numerical = status in ("PASSED", "INCORRECT_NUMERICAL")
    data = workload(definition, batch)
    data["solution"] = solution
    data["evaluation"] = {
        "status": status, "log": "",
        "correctness": {"max_relative_error": 1e-4, "max_absolute_error": 1e-5}
        if numerical else None,
        "performance": {"latency_ms": latency, "reference_latency_ms": 0.02,
                        "speedup_factor": 0.02 / latency} if passed else None,
        "environment": {"hardware": hardware, "libs": {"torch": "2.13.0"}},
        "timestamp": "2026-11-21T12:00:00+00:00",
    }
    return data
