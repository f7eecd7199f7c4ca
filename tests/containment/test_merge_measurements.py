"""Attack on `fib merge`'s dedup: measurements of one (solution, workload, GPU) that differ
in their timing regime (device, eager, CUDA graph) or in the content they measured (a
solution re-measured after a change) are different measurements; none may be dropped as a
duplicate. The control: the very same record merged twice is one."""

from __future__ import annotations

import copy
from pathlib import Path

from fib_runtime.cli.main import main
from fib_runtime.schema import Definition, Solution, Trace
from fib_runtime.schema.provenance import DIGEST_KEY, TIMING_KEY, digest_of, timing_of
from fib_runtime.store import TraceDB
from tests import factories

OLD_CODE = factories.RMSNORM_REFERENCE.replace("1e-5", "1e-5 * 1.0")


def _measured(base: dict, timing: str | None, digest: str | None,
              timestamp: str = "2026-11-21T12:00:00+00:00") -> Trace:
    data = copy.deepcopy(base)
    libs = data["evaluation"]["environment"]["libs"]
    if timing is not None:
        libs[TIMING_KEY] = timing
    if digest is not None:
        libs[DIGEST_KEY] = digest
    data["evaluation"]["timestamp"] = timestamp
    return Trace.from_dict(data)


def test_merge_keeps_every_regime_and_every_measured_content(tmp_path: Path) -> None:
    from fib_runtime.schema.provenance import content_digest

    src = TraceDB.open(tmp_path / "src", create=True)
    src.add_definition(Definition.from_dict(factories.definition()))
    old = Solution.from_dict(factories.solution(code=OLD_CODE))
    current = Solution.from_dict(factories.solution())
    src.add_solution(current)
    base = factories.trace()
    traces = [_measured(base, None, None),  # flashinfer-bench's own: device time, no stamp
              _measured(base, "eager", content_digest(old)),  # before the change
              _measured(base, "eager", content_digest(current)),  # re-measured after it
              _measured(base, "graph", content_digest(current)),
              _measured(base, "graph", content_digest(current), "2026-11-22T08:00:00+00:00")]
    src.append_traces(traces)
    assert main(["merge", str(tmp_path / "src"), str(tmp_path / "dest")]) == 0
    merged = TraceDB.open(tmp_path / "dest").traces_for("toy_norm_h8")

    def kinds(found: list[Trace]) -> list[tuple[str, str | None, str]]:
        return sorted((timing_of(t.evaluation), digest_of(t.evaluation),
                       t.evaluation.timestamp) for t in found)

    assert kinds(merged) == kinds(traces)
    # Control: merging again (and the same records from a second copy) adds nothing.
    (tmp_path / "copy").mkdir()
    assert main(["merge", str(tmp_path / "src"), str(tmp_path / "copy")]) == 0
    assert main(["merge", str(tmp_path / "src"), str(tmp_path / "copy"),
                 str(tmp_path / "dest")]) == 0
    assert kinds(TraceDB.open(tmp_path / "dest").traces_for("toy_norm_h8")) == kinds(traces)
