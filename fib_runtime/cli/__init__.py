"""The `fib` command line."""
