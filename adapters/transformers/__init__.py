"""fib-runtime for HF transformers models: `apply(model)` routes the model's RMSNorms,
SiLU-and-mul MLPs (gate/up as one GEMM) and rotary embedding through fib-runtime definitions
in the model's dtype (bfloat16, float16 or float32), generated from the definition families
where the catalogue has none, and its attention through transformers' AttentionInterface to
the GQA ragged-prefill definitions (attention.py); `remove(model)` restores the originals.
Calls that need gradients run the modules' own forwards; weights changed after `apply` are
served.

    from fib_runtime.adapters.transformers import apply
    routing = apply(model, db="path/to/db")
    print(routing)                     # routed modules and skipped ones with reasons
"""

from fib_runtime.adapters.transformers.patch import KINDS, apply, remove
from fib_runtime.adapters.transformers.routing import Routing

__all__ = ["KINDS", "Routing", "apply", "remove"]
