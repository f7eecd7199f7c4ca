"""Which GPU (or CPU) this process runs on, and the normalised key that selection matches on."""

from __future__ import annotations

import functools
import importlib.metadata
import logging
import os
import platform
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

log = logging.getLogger("fib_runtime.hardware")

CPU_KEY = "CPU"
# target_hardware words with a meaning beyond one GPU model.
TARGET_ANY = frozenset({"any", "all", "*"})
TARGET_CPU = frozenset({"cpu"})
TARGET_NVIDIA = frozenset({"nvidia", "cuda", "gpu", "nvidia_gpu"})

# Words in device names that never name the model.
_NOISE = frozenset({
    "NVIDIA", "GEFORCE", "TESLA", "QUADRO", "PCIE", "SXM", "SXM2", "SXM4", "SXM5", "NVL",
    "HBM3", "HBM3E", "HBM2", "HBM2E", "MIG", "GENERATION", "LAPTOP", "GPU", "ADA", "MAX-Q",
})
# Words of CPU model names as /proc/cpuinfo, platform.processor() or platform.machine() give
# them: flashinfer-bench records one of these as the hardware of a CPU run.
_CPU_WORDS = frozenset({
    "CPU", "PROCESSOR", "INTEL", "XEON", "CORE", "PENTIUM", "CELERON", "ATOM", "EPYC", "RYZEN",
    "THREADRIPPER", "OPTERON", "ATHLON", "X86", "AMD64", "I386", "I686", "AARCH64",
    "ARM64", "ARM", "ARMV8", "NEOVERSE", "GRAVITON", "ALTRA", "CORTEX", "PPC64LE", "S390X",
})
# Words that make a name a GPU (or other accelerator) even next to a CPU vendor's name.
_ACCELERATOR_WORDS = frozenset({"GPU", "INSTINCT", "RADEON", "ARC", "MPS", "XPU", "FLEX"})
_MEMORY = re.compile(r"^\d+(GB|G|GIB)$")
_MODEL = re.compile(r"^[A-Z]{1,3}\d{1,4}[A-Z]{0,2}$")
_NUMBER = re.compile(r"^\d{3,4}(TI|S)?$")

# Compute capability by model key, for the `same_arch` policy.
_ARCH = {
    "H100": "sm90", "H200": "sm90", "H800": "sm90", "H20": "sm90", "GH200": "sm90",
    "A100": "sm80", "A800": "sm80", "A30": "sm80", "A10": "sm86", "A10G": "sm86",
    "A40": "sm86", "A6000": "sm86", "RTXA6000": "sm86", "RTX3090": "sm86",
    "L4": "sm89", "L40": "sm89", "L40S": "sm89", "L20": "sm89", "RTX4090": "sm89",
    "B200": "sm100", "B100": "sm100", "GB200": "sm100", "B300": "sm103", "GB300": "sm103",
    "RTX5090": "sm120", "V100": "sm70", "T4": "sm75",
}


@functools.lru_cache(maxsize=4096)
def hardware_key(name: str) -> str:
    """Normalise a device name as found in traces to one key per GPU model.

    `NVIDIA H100 80GB HBM3`, `NVIDIA H100 PCIe`, `H100` and `NVIDIA_H100` all give `H100`;
    `NVIDIA A800-SXM4-80GB` gives `A800`; `NVIDIA GeForce RTX 4090` gives `RTX4090`;
    anything naming a CPU (`AMD EPYC 7B13`, `Intel(R) Xeon(R) CPU @ 2.20GHz`, `x86_64`) gives
    `CPU`. Unknown shapes keep their first meaningful word.
    """
    text = name.strip().upper()
    if not text or text.startswith("CPU"):
        return CPU_KEY
    words = [w for w in re.split(r"[\s_\-/()]+", text) if w]
    if _CPU_WORDS.intersection(words) and not _ACCELERATOR_WORDS.intersection(words):
        return CPU_KEY
    meaningful = [w for w in words if w not in _NOISE and not _MEMORY.match(w)]
    for i, word in enumerate(meaningful):
        if word == "RTX" and i + 1 < len(meaningful):
            return "RTX" + meaningful[i + 1]
        if _MODEL.match(word):
            return word
        if _NUMBER.match(word) and i == 0:
            return word
    return meaningful[0] if meaningful else text


def arch_of_key(key: str) -> str | None:
    """The SM architecture of a GPU model key (None when unknown or CPU)."""
    return _ARCH.get(key)


def target_matches(targets: Iterable[str], key: str) -> bool:
    """Whether a solution's `target_hardware` list admits the device with this key.

    Empty or `any` admits everything, `cpu` only the CPU, `nvidia`/`cuda`/`gpu` any NVIDIA
    GPU, and any other word is a GPU name normalised with `hardware_key`.
    """
    targets = list(targets)
    if not targets:
        return True
    for target in targets:
        word = target.strip().lower()
        if word in TARGET_ANY:
            return True
        if word in TARGET_CPU:
            if key == CPU_KEY:
                return True
        elif word in TARGET_NVIDIA:
            if key != CPU_KEY:
                return True
        elif hardware_key(target) == key:
            return True
    return False


@dataclass(frozen=True)
class Hardware:
    """The device a process computes on."""

    name: str
    key: str
    device_index: int | None = None
    compute_capability: tuple[int, int] | None = None
    memory_bytes: int | None = None
    driver: str | None = None
    libs: dict[str, str] = field(default_factory=dict)


def library_versions() -> dict[str, str]:
    """Versions of the libraries whose changes can move a benchmark result."""
    libs = {"python": platform.python_version()}
    for dist in ("torch", "triton", "flashinfer-python", "fib-runtime"):
        try:
            libs[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    try:
        import torch

        if torch.version.cuda:
            libs["cuda"] = torch.version.cuda
    except ImportError:
        pass
    return libs


@functools.lru_cache(maxsize=16)
def current_hardware(device: int | None = None) -> Hardware:
    """The GPU this process uses (`device` or the current CUDA device), else the CPU."""
    libs = library_versions()
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    if not has_cuda:
        name = f"CPU {_cpu_model()}".strip()
        return Hardware(name=name, key=CPU_KEY, libs=libs)
    index = torch.cuda.current_device() if device is None else device
    props = torch.cuda.get_device_properties(index)
    name, driver = _nvml_name_and_driver(index)
    name = name or torch.cuda.get_device_name(index)
    return Hardware(
        name=name, key=hardware_key(name), device_index=index,
        compute_capability=(props.major, props.minor), memory_bytes=props.total_memory,
        driver=driver, libs=libs,
    )


def _nvml_name_and_driver(index: int) -> tuple[str | None, str | None]:
    """Device name and driver from NVML; (None, None) when NVML is unavailable."""
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            handle = pynvml.nvmlDeviceGetHandleByIndex(_physical_index(index))
            name = pynvml.nvmlDeviceGetName(handle)
            driver = pynvml.nvmlSystemGetDriverVersion()
        finally:
            pynvml.nvmlShutdown()
    except Exception as exc:  # NVML missing or refused: torch's name is good enough
        log.debug("NVML unavailable (%s); using torch's device name", exc)
        return None, None
    as_text = [v.decode() if isinstance(v, bytes) else v for v in (name, driver)]
    return as_text[0], as_text[1]


def _physical_index(index: int) -> int:
    """Map a CUDA ordinal to NVML's when CUDA_VISIBLE_DEVICES lists plain indices."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    parts = [p.strip() for p in visible.split(",") if p.strip()]
    if index < len(parts) and parts[index].isdigit():
        return int(parts[index])
    return index


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()
