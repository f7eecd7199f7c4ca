"""Dispatch: @fib.apply, the per-GPU decision table, key extraction, miss policy."""
