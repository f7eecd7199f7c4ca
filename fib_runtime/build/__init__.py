"""Build solutions into callables (by language: `loader.LANGUAGES`; python and triton, by
import) and bridge calling conventions."""

from fib_runtime.build.calling import destination_passing, value_returning
from fib_runtime.build.loader import BuildCache, Built, build_reference, build_solution

__all__ = ["BuildCache", "Built", "build_reference", "build_solution", "destination_passing",
           "value_returning"]
