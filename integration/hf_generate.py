"""HF transformers `generate()` end to end: apply -> capture -> retune -> dispatch, timed.

Random-weight models with Llama-3.1-8B and Qwen3-8B layer shapes (a few layers, bf16;
nothing is downloaded). Per model: greedy generation of the unpatched model (the
reference), `fib_runtime.adapters.transformers.apply`, capture while generating at every
batch size, retune of the routed definitions, then generation with dispatch on, compared
with the reference (greedy tokens of the first steps, and last-position prompt logits).
Tokens/s of five modes, interleaved in rounds (medians): the unpatched model in eager mode,
fib-runtime, Liger-Kernel (`apply_liger_kernel_to_*`, if installed), `torch.compile` of the
unpatched model's forward and `torch.compile` of a fib-runtime-routed copy (`fib_compile`:
the routed ops are `torch.ops.fib` custom ops in the compiled graph). With `--profile`, CUDA
kernels per decode step of each mode.

    python3 integration/hf_generate.py --device cuda --json benchmarks/results/hf_generate_h200.json
    python3 integration/hf_generate.py --device cpu --tiny --rounds 1   # the CPU dry run

`gate_step(model="llama", batch=1)` is the step the gate times (`fib verify
integration.hf_generate:gate_step --arg model=llama --arg batch=1 --db DB`): one forward of
a routed random-weight model over a fixed prompt.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from fib_runtime.adapters.transformers import KINDS, apply

import fib_runtime as fib
from fib_runtime.retuning import retune

MODES = ("eager", "fib", "liger", "compile", "fib_compile")
# (config class, liger patch function, full-size constants, tiny constants)
SHAPES: dict[str, tuple[str, str, dict[str, Any], dict[str, Any]]] = {
    "llama": ("LlamaConfig", "apply_liger_kernel_to_llama",
              {"hidden_size": 4096, "intermediate_size": 14336, "num_attention_heads": 32,
               "num_key_value_heads": 8, "rms_norm_eps": 1e-5, "rope_theta": 500000.0},
              {"hidden_size": 64, "intermediate_size": 160, "num_attention_heads": 4,
               "num_key_value_heads": 2, "rms_norm_eps": 1e-5}),
    "qwen3": ("Qwen3Config", "apply_liger_kernel_to_qwen3",
              {"hidden_size": 4096, "intermediate_size": 12288, "num_attention_heads": 32,
               "num_key_value_heads": 8, "head_dim": 128, "rms_norm_eps": 1e-6},
              {"hidden_size": 96, "intermediate_size": 192, "num_attention_heads": 4,
               "num_key_value_heads": 2, "head_dim": 32, "rms_norm_eps": 1e-6}),
}
MODEL_CLASSES = {"LlamaConfig": "LlamaForCausalLM", "Qwen3Config": "Qwen3ForCausalLM"}


def build(name: str, args: argparse.Namespace) -> Any:
    import transformers

    config_cls, _, full, tiny = SHAPES[name]
    config = getattr(transformers, config_cls)(
        **(tiny if args.tiny else full), num_hidden_layers=args.layers, vocab_size=args.vocab,
        max_position_embeddings=4096, bos_token_id=1, eos_token_id=None, pad_token_id=0)
    torch.manual_seed(0)
    with torch.device(args.device):
        model = getattr(transformers, MODEL_CLASSES[config_cls])(config)
    return model.to(torch.bfloat16).eval()


def generate(model: Any, ids: torch.Tensor, new_tokens: int) -> torch.Tensor:
    with torch.no_grad():
        return model.generate(ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                              do_sample=False, pad_token_id=0)[:, ids.shape[1]:]


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


Globals = dict[tuple[Any, str], dict[str, Any]]  # (module, name) -> mode -> value


@contextlib.contextmanager
def module_globals(table: Globals, mode: str) -> Iterator[None]:
    """Liger and fib-runtime's rope routing replace a modeling module's
    `apply_rotary_pos_emb`: each mode runs with its own (the others with transformers')."""
    for (module, name), values in table.items():
        setattr(module, name, values.get(mode, values["eager"]))
    yield


def fib_globals(model: Any) -> Globals:
    """The module globals `apply` replaced (they keep the original as `__wrapped__`)."""
    modeling = sys.modules[type(model).__module__]
    current = getattr(modeling, "apply_rotary_pos_emb", None)
    original = getattr(current, "__wrapped__", None)
    if original is None:
        return {}
    return {(modeling, "apply_rotary_pos_emb"): {"eager": original, "fib": current}}


def liger_copy(base: Any, name: str, table: Globals) -> Any | None:
    """A copy of `base` patched by Liger-Kernel; the module globals it changed go into
    `table` under mode 'liger'."""
    try:
        import liger_kernel.transformers as liger
    except Exception:  # not installed, or not importable with this transformers
        return None
    model = copy.deepcopy(base)
    modeling = sys.modules[type(base).__module__]
    before = dict(vars(modeling))
    getattr(liger, SHAPES[name][1])(model=model, rope=True, rms_norm=True, swiglu=True,
                                    cross_entropy=False, fused_linear_cross_entropy=False)
    for key, value in list(vars(modeling).items()):
        if key in before and before[key] is not value and not isinstance(value, type):
            values = table.setdefault((modeling, key), {"eager": before[key]})
            values["liger"] = value
            setattr(modeling, key, before[key])  # set again only for liger's turns
    return model


def kernels_per_step(run: Callable[[int], Any]) -> float:
    """CUDA kernels per decode step: (kernels of 6 new tokens - of 2) / 4."""
    from torch.profiler import ProfilerActivity, profile

    counts = []
    for steps in (2, 6):
        run(steps)
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            run(steps)
            torch.cuda.synchronize()
        counts.append(sum(e.count for e in prof.key_averages()
                          if e.device_type == torch.autograd.DeviceType.CUDA))
    return (counts[1] - counts[0]) / 4


def run_model(name: str, args: argparse.Namespace, db_root: Path, log: Callable[..., None]
              ) -> dict[str, Any]:
    started = time.perf_counter()
    base = build(name, args)
    prompts = {b: torch.randint(1, args.vocab, (b, args.prompt), device=args.device,
                                generator=torch.Generator(args.device).manual_seed(b))
               for b in args.batches}
    reference = {b: generate(base, ids, args.new_tokens) for b, ids in prompts.items()}
    with torch.no_grad():
        ref_logits = {b: base(ids).logits[:, -1].float() for b, ids in prompts.items()}

    models: dict[str, Any] = {"eager": base}
    fib_model = copy.deepcopy(base)
    db = db_root  # one database for every model: their sites live in one process
    ops = KINDS if args.attention else None  # None: the adapter's default kinds
    routing = apply(fib_model, db=db, ops=ops)
    log(str(routing))
    with fib.enable_capture(db):
        for ids in prompts.values():
            generate(fib_model, ids, args.new_tokens)
    phases = {"capture_s": time.perf_counter() - started}
    start = time.perf_counter()
    summary = retune(db, definitions=routing.definitions,
                     devices="cpu" if args.device == "cpu" else None, warmup=3,
                     iters=args.retune_iters, progress=False)
    phases["retune_s"] = time.perf_counter() - start
    log(summary.table())
    session = fib.enable_apply(db, {"check_interval_s": 0})
    models["fib"] = fib_model
    table = fib_globals(base)
    if "liger" in args.modes:
        liger = liger_copy(base, name, table)
        if liger is None:
            log("liger-kernel is not installed: no liger mode")
        else:
            models["liger"] = liger
    if "compile" in args.modes and name in args.compile_models:
        compiled = copy.deepcopy(base)
        compiled.forward = torch.compile(compiled.forward, dynamic=True)
        models["compile"] = compiled
    if "fib_compile" in args.modes and name in args.compile_models:
        routed = copy.deepcopy(base)
        apply(routed, db=db, ops=ops)  # its own sites, served from the same database
        routed.forward = torch.compile(routed.forward, dynamic=True)
        models["fib_compile"] = routed
        table.update({k: {**v, "fib_compile": v.get("fib", v["eager"])}
                      for k, v in fib_globals(routed).items()})
    modes = [m for m in args.modes if m in models]

    def run(mode: str, ids: torch.Tensor, steps: int) -> torch.Tensor:
        with module_globals(table, mode):
            return generate(models[mode], ids, steps)

    checks: dict[str, Any] = {}
    for mode in modes:
        start = time.perf_counter()
        rows = {}
        for b, ids in prompts.items():
            tokens = run(mode, ids, args.new_tokens)
            with module_globals(table, mode), torch.no_grad():
                logits = models[mode](ids).logits[:, -1].float()
            same = (tokens[:, :args.check_steps] == reference[b][:, :args.check_steps])
            rows[b] = {"first_steps_identical": bool(same.all()),
                       "rows_identical_first_steps": int(same.all(dim=1).sum()),
                       "all_steps_identical_fraction": float(
                           (tokens == reference[b]).float().mean()),
                       "prompt_logits_max_abs_diff": float((logits - ref_logits[b]).abs().max()),
                       "logits_scale": float(ref_logits[b].abs().max())}
        checks[mode] = {"warmup_s": time.perf_counter() - start, "batches": rows}
        log(f"{name} {mode}: warm-up {checks[mode]['warmup_s']:.1f} s, checks "
            + ", ".join(f"b{b}: {'same' if r['first_steps_identical'] else 'DIFF'} "
                        f"dlogit {r['prompt_logits_max_abs_diff']:.3g}"
                        for b, r in rows.items()))

    samples: dict[str, dict[int, list[float]]] = {m: {b: [] for b in prompts} for m in modes}
    rng = random.Random(0)
    for _ in range(args.rounds):
        for b, ids in prompts.items():
            order = list(modes)
            rng.shuffle(order)
            for mode in order:
                sync(args.device)
                start = time.perf_counter()
                run(mode, ids, args.new_tokens)
                sync(args.device)
                samples[mode][b].append(b * args.new_tokens / (time.perf_counter() - start))
    tps = {m: {b: statistics.median(v) for b, v in s.items()} for m, s in samples.items()}
    kernels = {}
    if args.profile and args.device.startswith("cuda"):
        for mode in (m for m in modes if m != "compile"):
            kernels[mode] = kernels_per_step(lambda n, mode=mode: run(mode, prompts[1], n))
    stats = fib.stats()
    session.__exit__()
    phases["total_s"] = time.perf_counter() - started
    return {"routing": {"routed": routing.routed, "skipped": routing.skipped,
                        "hooks": routing.hooks, "generated": routing.generated},
            "retune": {"counts": summary.counts(), "table": summary.table()},
            "checks": checks, "tokens_per_s": tps, "samples": samples,
            "kernels_per_decode_step_batch1": kernels, "phases": phases,
            "dispatch_stats": {d: stats.get(d, {}) for d in routing.definitions}}


def table(name: str, result: dict[str, Any]) -> str:
    tps = result["tokens_per_s"]
    modes = list(tps)
    lines = [f"{name}: tokens/s (median), speedup of fib over each mode",
             "batch  " + "  ".join(f"{m:>11}" for m in modes) + "  fib/eager  fib/liger"
             "  fib_compile/compile"]
    for b in tps["eager"]:
        cells = "  ".join(f"{tps[m][b]:11.1f}" for m in modes)
        ratios = [f"{tps['fib'][b] / tps[m][b]:9.2f}x" if m in tps else "        -"
                  for m in ("eager", "liger")]
        ratios.append(f"{tps['fib_compile'][b] / tps['compile'][b]:9.2f}x"
                      if "fib_compile" in tps and "compile" in tps else "        -")
        lines.append(f"{b:<5}  {cells}  {'  '.join(ratios)}")
    return "\n".join(lines)


def gate_step(model: str = "llama", batch: int = 1, layers: int = 4, prompt: int = 16,
              tiny: int = 0, db: str | None = None) -> Callable[[], Any]:
    """The step `fib verify` times: one forward of a routed random-weight model (`model`
    shapes, `layers` layers) over a fixed prompt of `batch` rows (`tiny=1`: tiny sizes)."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    args = argparse.Namespace(tiny=bool(tiny), layers=layers, vocab=32768 if not tiny else 512,
                              device=device)
    routed = build(model, args)
    apply(routed, db=db)
    ids = torch.randint(1, args.vocab, (batch, prompt), device=device,
                        generator=torch.Generator(device).manual_seed(batch))

    def step() -> Any:
        with torch.no_grad():
            return routed(ids).logits

    return step


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tiny", action="store_true", help="tiny hidden sizes (CPU dry run)")
    parser.add_argument("--models", default="llama,qwen3")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--vocab", type=int, default=32768)
    parser.add_argument("--batches", default="1,8,32,64")
    parser.add_argument("--prompt", type=int, default=16)
    parser.add_argument("--attention", action="store_true",
                        help="route attention too (apply(ops=KINDS)); off: the default kinds")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--check-steps", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--retune-iters", type=int, default=20)
    parser.add_argument("--compile-models", default="llama",
                        help="models that get the torch.compile mode (its warm-up is long)")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--db", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    args.batches = [int(b) for b in args.batches.split(",")]
    args.modes = [m for m in args.modes.split(",") if m]

    def log(*parts: Any) -> None:
        print(*parts, flush=True)

    db_root = args.db or Path(tempfile.mkdtemp(prefix="fib-hf-"))
    import transformers

    results: dict[str, Any] = {
        "device": args.device, "torch": torch.__version__,
        "transformers": transformers.__version__,
        "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None,
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "models": {}}
    for name in args.models.split(","):
        results["models"][name] = result = run_model(name, args, db_root, log)
        log(table(name, result))
        if result["kernels_per_decode_step_batch1"]:
            log("kernels per decode step (batch 1):", result["kernels_per_decode_step_batch1"])
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
