"""Build solutions into callables: python and triton by import, cuda/cpp with torch's builder."""

from fib_runtime.build.calling import destination_passing, value_returning
from fib_runtime.build.loader import Built, build_reference, build_solution

__all__ = ["Built", "build_reference", "build_solution", "destination_passing",
           "value_returning"]
