"""Trust: no code from a database runs unless the user trusted it (see docs/trust.md)."""

from fib_runtime.trust.memory import definition_digest, remember
from fib_runtime.trust.policy import (
    TRUST_ENV,
    Trust,
    Untrusted,
    UntrustedMerge,
    refuse_laundering,
    root_key,
)
from fib_runtime.trust.store import PATH_ENV, TrustStoreError, load_store, stamp, store_path

__all__ = ["PATH_ENV", "TRUST_ENV", "Trust", "TrustStoreError", "Untrusted", "UntrustedMerge",
           "definition_digest", "load_store", "refuse_laundering", "remember", "root_key",
           "stamp", "store_path"]
