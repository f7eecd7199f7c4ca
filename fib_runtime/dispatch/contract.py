"""What a call must be for a solution to serve it: the solution's contract.

A solution is measured by retune on what the FlashInfer Trace format describes, and nothing
else: every tensor of the definition's dtype, contiguous, on the device it targets, and no
autograd. A call outside that is answered by the original function and counted under its
reason:

- `dtype`: a tensor argument's dtype is not the definition's (an fp32 call of a bfloat16
  definition; a float32 weight beside bfloat16 activations);
- `device`: the tensors are not on a device the solution runs on (a CPU tensor and a Triton
  kernel; a GPU other than the current one, where a kernel would launch);
- `layout`: a tensor argument is not contiguous (strided rows, a transposed view, a
  broadcast or strided weight) and the solution does not take any layout: kernels read
  their arguments through pointers. A solution whose entry module says
  `FIB_ANY_LAYOUT = True` takes every stride and storage offset itself (the catalogue's do,
  except the Triton paged decode; tests/dispatch/test_catalogue_contract.py holds them to it);
- `grad`: autograd records the call (grad mode on and a floating input requires grad):
  solutions have no backward, so training gets the original's gradients.

Where it is checked: the dtype of the first tensor input is part of the hot key (keys.HotKey),
and so is its device in a CUDA process, and grad mode; the first call of each key checks
every other tensor's dtype and device: decided once per key, and kept (the first call decides
for its key). What can change from call to call at one key is tested per call only where it
matters, by a wrapper generated once (`guard`) around the solution that key serves: for a
solution that does not take any layout (it reads raw pointers), every tensor's layout and
the dtype of every tensor but the first (a pointer kernel would read a float32 weight's bytes
as bfloat16; one that takes any layout reads each tensor in its own dtype, as torch and
Triton do), and `requires_grad` for keys made in grad mode. An inference key (grad mode off)
of a solution that takes any layout serves the solution itself. Under torch.compile the dtype
and grad tests are made at trace time (`traceable`), so a call that needs gradients traces
the original function instead of the opaque custom op.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from fib_runtime.build.loader import runs_on_cpu_anyway
from fib_runtime.hardware import CPU_KEY, TARGET_CPU, target_matches
from fib_runtime.schema import Definition
from fib_runtime.tensors import torch_dtype

DTYPE, DEVICE, LAYOUT, GRAD = "dtype", "device", "layout", "grad"


@dataclass(frozen=True)
class Contract:
    """One definition's contract, with its per-call guards generated once per kind."""

    n_inputs: int
    dtypes: tuple[Any, ...]  # per argument position (inputs, then outputs); None: a scalar
    primary: int | None  # the first tensor input: its dtype and device are in the hot key
    grad_inputs: tuple[int, ...]  # floating tensor inputs (what can require grad)

    @classmethod
    def of(cls, definition: Definition) -> Contract:
        specs = [*definition.inputs.values(), *definition.outputs.values()]
        dtypes = tuple(None if s.shape is None else torch_dtype(s.dtype) for s in specs)
        n_inputs = len(definition.inputs)
        tensors = [i for i in range(n_inputs) if dtypes[i] is not None]
        return cls(n_inputs, dtypes, tensors[0] if tensors else None,
                   tuple(i for i in tensors if dtypes[i].is_floating_point))

    # -- the per-call guards ---------------------------------------------------------------

    def guard(self, fn: Callable[..., Any], refuse: Callable[[tuple[Any, ...], str], Any], *,
              layout: bool, grad: bool, destination: bool) -> Callable[..., Any]:
        """`fn` behind the per-call tests it needs: for a solution that reads raw pointers
        (`layout`), every tensor argument contiguous and of the definition's dtype (the
        first input's dtype is in the hot key; the outputs too for a `destination`-passing
        call); and no input requiring grad (`grad`: the key was made in grad mode). A call
        that fails is `refuse(args, reason)`. `fn` itself when nothing is to be tested."""
        last = len(self.dtypes) if destination else self.n_inputs
        tensors = [i for i in range(last) if self.dtypes[i] is not None]
        tests = []
        if layout and tensors:
            contiguous = " and ".join(f"args[{i}].is_contiguous()" for i in tensors)
            tests.append(f"    if not ({contiguous}):\n        return refuse(args, {LAYOUT!r})\n")
            typed = " and ".join(f"args[{i}].dtype is dtypes[{i}]" for i in tensors
                                 if i != self.primary)
            if typed:
                tests.append(f"    if not ({typed}):\n        return refuse(args, {DTYPE!r})\n")
        if grad and self.grad_inputs:
            needs = " or ".join(f"args[{i}].requires_grad" for i in self.grad_inputs)
            tests.append(f"    if {needs}:\n        return refuse(args, {GRAD!r})\n")
        if not tests:
            return fn
        source = "def guarded(*args):\n" + "".join(tests) + "    return fn(*args)\n"
        namespace: dict[str, Any] = {"fn": fn, "refuse": refuse, "dtypes": self.dtypes}
        exec(compile(source, "<fib contract guard>", "exec"), namespace)
        guarded: Callable[..., Any] = namespace["guarded"]
        return guarded

    # -- once per key, and the reasons of refused calls -----------------------------------

    def wrong_dtype(self, dtype: Any) -> bool:
        """Is a hot key's first-input dtype not the definition's?"""
        return self.primary is not None and dtype is not self.dtypes[self.primary]

    def first_call(self, args: Sequence[Any]) -> str | None:
        """Why the first call of a key is outside the contract for the whole key (a tensor
        of another dtype, tensors on several devices), None if it is not."""
        tensors = [(a, d) for a, d in zip(args, self.dtypes, strict=False) if d is not None]
        if any(getattr(a, "dtype", None) is not d for a, d in tensors):
            return DTYPE
        if len({a.device for a, _ in tensors}) > 1:
            return DEVICE
        return None

    def traceable(self, args: Sequence[Any]) -> bool:
        """Under torch.compile, at trace time: may this value-returning call become the
        custom op? Its dtypes must be the definition's (the op's fake outputs have them),
        and autograd must not record it (the op has no backward)."""
        import torch

        for value, dtype in zip(args, self.dtypes[:self.n_inputs], strict=False):
            if dtype is not None and (not isinstance(value, torch.Tensor)
                                      or value.dtype is not dtype):
                return False
        return not (torch.is_grad_enabled()
                    and any(args[i].requires_grad for i in self.grad_inputs))


def several_devices() -> bool:
    """Can this process's tensors be on more than one device (a CUDA process)? Without
    CUDA every tensor is on the CPU, and the hot key needs no device term."""
    import torch

    return torch.cuda.is_available()


def serving_device() -> int:
    """The device index kernels launch on in this thread: the current CUDA device, or -1
    (the CPU) without CUDA."""
    import torch

    return torch.cuda.current_device() if torch.cuda.is_available() else -1


def runs_on(targets: Sequence[str], language: str, device: int) -> bool:
    """Does a solution with these `target_hardware` and language run on tensors of
    `device` (an index from `Tensor.get_device()`, -1 for the CPU)? A GPU tensor must be on
    the current CUDA device (where kernels launch) and the solution not CPU-only; a language
    may run on the CPU whatever the targets say (Triton in its interpreter, TRITON_INTERPRET=1:
    `build.loader.LANGUAGES`)."""
    if device < 0:
        return target_matches(targets, CPU_KEY) or runs_on_cpu_anyway(language)
    words = {t.strip().lower() for t in targets}
    return device == serving_device() and not (words and words <= TARGET_CPU)
