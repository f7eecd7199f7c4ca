"""Glue between fib-runtime and code we do not own (flashinfer, torch, engines)."""
