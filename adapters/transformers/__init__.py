"""fib-runtime for HF transformers models: `apply(model)` routes the model's RMSNorms and
SiLU-and-mul MLPs (gate/up fused once) through fib-runtime definitions, generated from the
definition families where the catalogue has none; `remove(model)` restores the original
forwards.

    from fib_runtime.adapters.transformers import apply
    routing = apply(model, db="path/to/db")
    print(routing)                     # routed modules and skipped ones with reasons
"""

from fib_runtime.adapters.transformers.patch import KINDS, apply, remove
from fib_runtime.adapters.transformers.routing import Routing

__all__ = ["KINDS", "Routing", "apply", "remove"]
