"""Shared fixtures: the official FlashInfer Trace data (skipped when absent) and GPU marking.

Without CUDA, Triton kernels run in its interpreter: the variable must be set before any
test module imports triton (torch.compile and flashinfer import it too), so it is set here.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

REPO = Path(__file__).resolve().parents[1]
OFFICIAL = REPO.parent / "shared" / "flashinfer-trace"


@pytest.fixture
def official() -> Path:
    """The official FlashInfer Trace data beside the checkout (developers' and CI machines)."""
    if not OFFICIAL.is_dir():
        pytest.skip("../shared/flashinfer-trace is not present")
    return OFFICIAL


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def isolated_paths(tmp_path_factory: pytest.TempPathFactory,
                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Never touch the user's database or caches, nor inherit their switches."""
    monkeypatch.setenv("FIB_CACHE_PATH", str(tmp_path_factory.getbasetemp() / "fib-cache"))
    monkeypatch.setenv("FIB_DATASET_PATH", str(tmp_path_factory.getbasetemp() / "fib-db"))
    for name in ("FIB_ENABLE_APPLY", "FIB_ENABLE_TRACING", "FIB_CAPTURE_CONFIG"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session")
def bench_data() -> ModuleType:
    """flashinfer-bench's data models (`flashinfer_bench.data`) for the compatibility tests.

    Skipped when it is not installed, except where FIB_REQUIRE_FLASHINFER_BENCH=1 (CI): there
    a missing install fails instead of skipping.
    """
    if os.environ.get("FIB_REQUIRE_FLASHINFER_BENCH") == "1":
        import flashinfer_bench.data as data

        return data
    return pytest.importorskip("flashinfer_bench.data")


@pytest.fixture(autouse=True)
def isolated_trust(tmp_path_factory: pytest.TempPathFactory,
                   monkeypatch: pytest.MonkeyPatch) -> Path:
    """A trust store of this test's own (never the user's), and no FIB_TRUST override."""
    path = tmp_path_factory.mktemp("trust") / "trust.json"
    monkeypatch.setenv("FIB_TRUST_PATH", str(path))
    monkeypatch.delenv("FIB_TRUST", raising=False)
    return path
