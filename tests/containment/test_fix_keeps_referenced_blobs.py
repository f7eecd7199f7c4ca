"""Attack on `fib validate --fix`: a workload line written by another JSON writer spells its
blob path with escapes (`\\u00e9`, `\\u0073`, `\\/`): the blob is still referenced and must
not be deleted. The control: an old blob that nothing refers to is removed."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from fib_runtime.cli.main import main
from fib_runtime.schema import Definition, Trace
from fib_runtime.store import TraceDB, layout
from tests import factories

OLD = time.time() - 3600


def test_fix_keeps_a_blob_referenced_through_json_escapes(tmp_path: Path) -> None:
    db = TraceDB.open(tmp_path, create=True)
    db.add_definition(Definition.from_dict(factories.definition()))
    import torch

    rel = "blob/workloads/rmsnorm/toy_norm_h8/caf\u00e9_batch.safetensors"
    db.save_tensors(rel, {"x": torch.ones(2, 8)})
    orphan = "blob/workloads/rmsnorm/toy_norm_h8/orphan.safetensors"
    db.save_tensors(orphan, {"x": torch.ones(2, 8)})
    for path in (rel, orphan):
        os.utime(tmp_path / path, (OLD, OLD))
    record = factories.workload(batch=2, x={"type": "safetensors", "path": rel,
                                            "tensor_key": "x"}, weight={"type": "random"})
    line = json.dumps(record, ensure_ascii=True).replace("/", "\\/").replace(
        "_batch", "_bat\\u0063h")  # valid JSON; another writer's spelling of the same path
    assert Trace.from_dict(json.loads(line)).workload.inputs["x"].path == rel
    workloads = layout.workload_file(tmp_path, "rmsnorm", "toy_norm_h8")
    workloads.parent.mkdir(parents=True, exist_ok=True)
    workloads.write_text(line + "\n")
    assert main(["validate", str(tmp_path), "--fix"]) == 0
    assert (tmp_path / rel).is_file()  # still referenced
    assert not (tmp_path / orphan).exists()  # control: --fix does remove an orphan
    fresh = TraceDB.open(tmp_path)
    assert not fresh.missing_blobs and len(fresh.workloads_for("toy_norm_h8")) == 1
