"""Measuring primitives every layer shares: the timers of the timing regimes (`timing`), the
inputs of a workload (`inputs`) and the check of a call's outputs (`compare`). Used by
retune, verify, dispatch's shadow check and the demo."""
