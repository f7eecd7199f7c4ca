"""`fib report`: what a database measured and what dispatch serves from it, gathered
(`gather`), drawn (`plots`) and laid out as text and an HTML page (`page`), with held-out
measurements overlaid (`held_out`). The command itself is fib_runtime.cli.report."""
