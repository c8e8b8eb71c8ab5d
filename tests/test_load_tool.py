"""The load tool (perf.load) spreads a wave over processes, as it must above 256 users.

One Python process streaming 1,000 sessions is itself the limit, so the tool deals a wave's
users out to one process per 256 (or `--processes N`); each opens its users' pages and all
start their sessions at one moment. Here 12 users over 3 processes against the session's app
(real engine on the CPU): every user's session comes back, streamed, from every process.
"""

from __future__ import annotations

import asyncio

import pytest

from perf import load

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    ("users", "asked", "expected"),
    [(1, None, 1), (256, None, 1), (257, None, 2), (512, None, 2), (1000, None, 4), (3, 8, 3)],
)
def test_one_load_process_per_256_users_unless_told(users, asked, expected):
    assert load.processes_for(users, asked) == expected


@pytest.mark.timeout(300)
def test_a_wave_spread_over_three_processes_brings_back_every_session(app):
    assert app.wait_idle()["unfinished"] == 0
    argv = ["--ui", app.ui_url, "--api", app.api_url, "--users", "12", "--processes", "3"]
    argv += ["--max-tokens", "8", "--paths", "ui,api", "--timeout", "200"]
    waves = asyncio.run(load.run(load.parse_args(argv)))
    print("\n" + load.table(waves))
    for wave in waves:
        assert (wave.processes, wave.sessions) == (3, 12), wave.path
        assert wave.failures == 0, f"{wave.path}: {wave.errors[:3]}"
        assert wave.chunks_min > 1, f"{wave.path}: a session got its reply in one piece"
        # All started at the agreed moment: no session's first chunk waited for another
        # process to open its pages (each first chunk within the wave, not before it).
        assert 0 < wave.first_p50_s <= wave.first_max_s <= wave.last_max_s < 200
    assert app.wait_idle()["unfinished"] == 0
