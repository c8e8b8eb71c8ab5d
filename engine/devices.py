"""What accelerator is present, asked of NVML so that the serving process never touches CUDA.

(vLLM's engine process owns the GPU; initialising CUDA here first would force slower process
start-up and waste GPU memory.)
"""

from __future__ import annotations

import functools
import subprocess


@functools.lru_cache(maxsize=1)
def gpu() -> tuple[str, tuple[int, int]] | None:
    """(name, compute capability) of GPU 0, or None when there is no NVIDIA GPU."""
    try:
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        name = pynvml.nvmlDeviceGetName(handle)
        name = name.decode() if isinstance(name, bytes) else name
        return name, tuple(pynvml.nvmlDeviceGetCudaComputeCapability(handle))
    except Exception:
        pass
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,compute_cap", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
        name, cap = out.splitlines()[0].rsplit(",", 1)
        major, minor = cap.strip().split(".")
        return name.strip(), (int(major), int(minor))
    except Exception:
        return None


def device_name(config) -> str:
    """Human-readable device of a configuration: the GPU's name, or CPU."""
    found = gpu()
    return "CPU" if config.on_cpu or found is None else found[0]
