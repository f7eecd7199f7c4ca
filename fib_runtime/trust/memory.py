"""Remembering what the user's own fib writes: trusted by content digest.

Only what this process itself wrote (or the user named) is remembered, never what it read:
`fib_runtime/__init__` registers `remember` as the store's listener of its own writes
(`store.hooks`), so `TraceDB.add_solution`, `add_definition` and `catalogue.install` reach it
without importing trust. Remembering never waits long for
another writer of the store (REMEMBER_WAIT_S), and skips the write when the store already
holds every digest.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable

import orjson

from fib_runtime.schema import Definition, Solution
from fib_runtime.schema.provenance import content_digest
from fib_runtime.trust.store import TrustStoreError, add_all, load_store

log = logging.getLogger("fib_runtime.trust")
REMEMBER_WAIT_S = 1.0


def definition_digest(definition: Definition) -> str:
    """sha256 over the whole definition record (its reference code included)."""
    body = orjson.dumps(definition.to_dict(), option=orjson.OPT_SORT_KEYS)
    return "sha256:" + hashlib.sha256(body).hexdigest()


def remember(solutions: Iterable[Solution] = (),
             definitions: Iterable[Definition] = ()) -> int:
    """Trust these records by digest: the user's own fib wrote them. Returns how many were
    new. Never raises: a store that cannot be written only costs a warning (the records
    then need `fib trust` to run)."""
    sols = {content_digest(s): {"name": s.name} for s in solutions}
    defs = {definition_digest(d): {"name": d.name} for d in definitions}
    known = load_store()
    items = {"solutions": {k: v for k, v in sols.items() if not known.has("solutions", k)},
             "definitions": {k: v for k, v in defs.items()
                             if not known.has("definitions", k)}}
    if not any(items.values()):
        return 0
    try:
        return add_all(items, wait_s=REMEMBER_WAIT_S)
    except (OSError, TrustStoreError, TimeoutError) as exc:
        log.warning("could not remember %d solutions and %d definitions as trusted: %s",
                    len(sols), len(defs), exc)
        return 0
