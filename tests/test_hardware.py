from __future__ import annotations

import pytest

from fib_runtime.hardware import (
    CPU_KEY,
    arch_of_key,
    current_hardware,
    hardware_key,
    target_matches,
)


@pytest.mark.parametrize(("name", "key"), [
    ("NVIDIA H100 80GB HBM3", "H100"), ("NVIDIA H100 PCIe", "H100"), ("H100", "H100"),
    ("NVIDIA_H100", "H100"), ("NVIDIA H100 NVL", "H100"),
    ("NVIDIA H100 80GB HBM3 MIG 1g.10gb", "H100"),
    ("NVIDIA H200", "H200"), ("NVIDIA H200 NVL", "H200"), ("NVIDIA_H200", "H200"),
    ("NVIDIA H200 141GB HBM3e", "H200"),
    ("NVIDIA A800-SXM4-80GB", "A800"), ("NVIDIA A100-SXM4-80GB", "A100"),
    ("NVIDIA A100-PCIE-40GB", "A100"), ("A800", "A800"),
    ("NVIDIA B200", "B200"), ("NVIDIA_B200", "B200"), ("NVIDIA GB200", "GB200"),
    ("NVIDIA GeForce RTX 4090", "RTX4090"), ("NVIDIA RTX A6000", "RTXA6000"),
    ("Tesla V100-SXM2-16GB", "V100"), ("Tesla T4", "T4"), ("NVIDIA L40S", "L40S"),
    ("NVIDIA A10G", "A10G"), ("NVIDIA H20", "H20"), ("NVIDIA GH200 480GB", "GH200"),
    ("cpu", CPU_KEY), ("CPU AMD EPYC 7B13", CPU_KEY),
])
def test_real_device_names_normalise_to_one_key_per_model(name: str, key: str) -> None:
    assert hardware_key(name) == key


@pytest.mark.parametrize("name", [
    # What flashinfer-bench records on a CPU: /proc/cpuinfo's model name, else
    # platform.processor() or platform.machine().
    "AMD EPYC 7B13", "AMD EPYC 9654 96-Core Processor", "Intel(R) Xeon(R) CPU @ 2.20GHz",
    "Intel(R) Xeon(R) Platinum 8480+", "Intel(R) Core(TM) i9-13900K",
    "AMD Ryzen 9 7950X 16-Core Processor", "x86_64", "aarch64", "arm", "Neoverse-N1",
])
def test_cpu_model_names_are_the_cpu_key(name: str) -> None:
    assert hardware_key(name) == CPU_KEY


@pytest.mark.parametrize("name", [
    "AMD Instinct MI300X", "Intel(R) Data Center GPU Max 1550", "Apple GPU (MPS)",
])
def test_accelerators_of_cpu_vendors_are_not_the_cpu(name: str) -> None:
    assert hardware_key(name) != CPU_KEY


@pytest.mark.parametrize(("targets", "key", "expected"), [
    ([], "H100", True), (["any"], CPU_KEY, True), (["cpu"], CPU_KEY, True),
    (["cpu"], "H100", False), (["nvidia"], "H200", True), (["nvidia"], CPU_KEY, False),
    (["NVIDIA_H100"], "H100", True), (["NVIDIA_H100"], "H200", False),
    (["NVIDIA_B200", "H200"], "H200", True),
])
def test_target_hardware_convention(targets: list[str], key: str, expected: bool) -> None:
    assert target_matches(targets, key) is expected


def test_arch_groups_models() -> None:
    assert arch_of_key("H100") == arch_of_key("H200") == "sm90"
    assert arch_of_key("A100") != arch_of_key("H100")
    assert arch_of_key(CPU_KEY) is None


def test_current_hardware_reports_libraries() -> None:
    hw = current_hardware()
    assert hw.key == hardware_key(hw.name)
    assert "torch" in hw.libs and "python" in hw.libs


@pytest.mark.gpu
def test_current_gpu_has_a_model_key() -> None:
    hw = current_hardware()
    assert hw.key != CPU_KEY and hw.compute_capability is not None and hw.memory_bytes
