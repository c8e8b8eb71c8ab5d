"""Exposure decides the operator: who can reach the app decides who may restart the engine and
run benchmarks (`launch.exposure`), and every UI worker is told so by `app.py`.

The matrix of flags is checked as a table; then the UI's real processes (the workers and the
front, built by `app.ui_group` exactly as `app.py` builds them, without an engine) are asked
through the public port, as a visitor's client asks: refused on the server side wherever the
app can be reached from the network without a key, with one worker and with two, the Docker
image's own command among them.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import tempfile

import pytest

import app
from launch.exposure import decide_exposure, is_loopback
from tests.conftest import ROOT, free_port, wait_for

# (host, share, auth, key) -> who operates; written out, not recomputed.
MATRIX = [
    ("127.0.0.1", False, None, None, "everyone"),
    ("localhost", False, None, None, "everyone"),
    ("::1", False, None, None, "everyone"),
    ("127.0.0.2", False, None, None, "everyone"),
    ("127.0.0.1", False, None, "k", "key"),
    ("127.0.0.1", False, "u:p", None, "nobody"),
    ("127.0.0.1", False, "u:p", "k", "key"),
    ("127.0.0.1", True, None, None, "nobody"),
    ("127.0.0.1", True, "u:p", "k", "key"),
    ("0.0.0.0", False, None, None, "nobody"),
    ("0.0.0.0", False, None, "k", "key"),
    ("0.0.0.0", False, "u:p", None, "nobody"),
    ("::", False, None, None, "nobody"),
    ("192.168.1.5", False, None, None, "nobody"),
    ("demo.example.org", False, None, None, "nobody"),
    ("", False, None, None, "nobody"),
]


@pytest.mark.parametrize("host,share,auth,key,operator", MATRIX)
def test_who_operates_follows_who_can_reach_the_app(host, share, auth, key, operator):
    exposure = decide_exposure(share, auth, host, key)
    assert exposure.operator == operator
    assert exposure.public == (
        operator == "nobody" or (operator == "key" and bool(exposure.reasons))
    )


def test_loopback_is_told_by_the_address_not_by_its_spelling():
    assert is_loopback("127.8.9.10") and is_loopback("[::1]")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.0.0.1")
    assert not is_loopback("127.0.0.1.example.org")  # a host name, whatever it starts with


def docker_argv() -> list[str]:
    """The flags the Docker image's default command gives app.py."""
    text = (ROOT / "Dockerfile").read_text()
    entry = json.loads(re.search(r"^ENTRYPOINT (\[.*\])$", text, re.M).group(1))
    cmd = json.loads(re.search(r"^CMD (\[.*\])$", text, re.M).group(1))
    argv = entry + cmd
    return argv[argv.index("app.py") + 1 :]


def test_the_docker_images_default_command_locks_the_operator_controls():
    args = app.parse_args(docker_argv())
    assert decide_exposure(args.share, args.auth, args.host, args.operator_key).operator == (
        "nobody"
    )


class UiOnly:
    """The UI's processes of an app started with `flags` (no engine behind them): the
    workers and the front, as app.py starts them."""

    def __init__(self, flags: list[str], env: dict[str, str] | None = None):
        self.port = free_port()
        self.env = env or {}
        saved = {k: os.environ.get(k) for k in self.env}
        os.environ.update(self.env)
        try:
            args = app.parse_args([*flags, "--port", str(self.port), "--model", "tiny-random"])
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        socket_path = os.path.join(tempfile.mkdtemp(), "absent.sock")  # no server behind
        self.group = app.ui_group(args, socket_path, app.config_from_args(args))
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self):
        self.group.start()
        wait_for(self.group.served, 120, "the page served through the front", 0.5)
        return self

    def __exit__(self, *exc):
        self.group.stop()


def operator_answers(url: str, auth: tuple[str, str] | None, key: str | None) -> list[str]:
    """What a visitor's client is told when it asks to restart the engine and to run a
    benchmark (after entering `key`, if given): 'refused: ...' or 'allowed: ...'."""
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    client = Client(url, verbose=False, auth=auth)
    answers = []
    try:
        if key is not None:
            client.predict(key, api_name="/unlock_operator")
        for call in (
            lambda: client.predict(api_name="/restart_engine"),
            lambda: client.predict("replay", 2, 16, None, api_name="/run_benchmark"),
        ):
            try:
                call()
                answers.append("allowed")
            except AppError as err:
                locked = "Operator controls" in str(err)
                answers.append(("refused: " if locked else "allowed: ") + str(err)[:80])
    finally:
        client.close()
    return answers


REACHABLE = [
    (["--host", "0.0.0.0", "--ui-workers", "1"], {}, None),
    (["--host", "0.0.0.0", "--ui-workers", "2"], {}, None),
    (["--share", "--ui-workers", "2"], {}, None),
    (["--auth", "teacher:pw", "--ui-workers", "1"], {}, ("teacher", "pw")),
    (docker_argv() + ["--ui-workers", "2"], {}, None),
]


@pytest.mark.slow
@pytest.mark.parametrize("flags,env,auth", REACHABLE)
def test_an_app_others_can_reach_refuses_restart_and_benchmark_without_a_key(flags, env, auth):
    with UiOnly(flags, env) as ui:
        answers = operator_answers(ui.url, auth, key=None)
        assert all(a.startswith("refused") for a in answers), answers
        # the same from the other worker, where there are two
        if "2" in flags:
            assert operator_answers(ui.url, auth, key=None) == answers


@pytest.mark.slow
@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_private_app_lets_its_user_operate_and_a_key_locks_it(workers):
    with UiOnly(["--ui-workers", workers]) as ui:  # loopback, no key: the user at the keyboard
        answers = operator_answers(ui.url, None, key=None)
        assert not any(a.startswith("refused") for a in answers), answers
    env = {"QWEN_DEMO_OPERATOR_KEY": "open-sesame"}
    with UiOnly(["--host", "0.0.0.0", "--ui-workers", workers], env) as ui:
        assert all(a.startswith("refused") for a in operator_answers(ui.url, None, "wrong"))
        answers = operator_answers(ui.url, None, "open-sesame")
        assert not any(a.startswith("refused") for a in answers), answers


def test_a_worker_is_never_left_to_guess_who_operates():
    """A worker started without the app's decision refuses to start."""
    run = subprocess.run(
        [sys.executable, "-m", "ui", "--socket", "/nonexistent.sock"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2 and "--operator" in run.stderr
    for flags, operator in ((["--host", "0.0.0.0"], "nobody"), ([], "everyone")):
        args = app.parse_args([*flags, "--model", "tiny-random", "--ui-workers", "2"])
        group = app.ui_group(args, "/x.sock", app.config_from_args(args))
        for worker in group.workers:
            assert shlex.join(["--operator", operator]) in shlex.join(worker.argv)
