"""ui.chat.UpdatePacer: how often one chat may redraw. At least `min_s` apart, and further
apart as more chats stream at once, so that all of them together stay within `per_second`
redraws (interval = max(min_s, active / per_second)).

Pure: the figures below are written out, not computed by the rule under test.
"""

import pytest

from ui.chat import UpdatePacer


@pytest.mark.parametrize(
    "active, seconds",
    [
        (0, 0.05),  # nobody streaming: the minimum
        (1, 0.05),  # one chat alone: every 50 ms
        (15, 0.05),  # 15 / 300 = 0.05: still the minimum
        (16, 0.05333),
        (30, 0.1),
        (150, 0.5),
        (300, 1.0),
        (600, 2.0),
    ],
)
def test_the_default_interval_grows_with_the_chats_streaming(active, seconds):
    pacer = UpdatePacer()
    pacer.active = active
    assert pacer.interval() == pytest.approx(seconds, abs=1e-5)


@pytest.mark.parametrize(
    "active, seconds",
    [(0, 0.2), (1, 0.2), (20, 0.2), (30, 0.3), (100, 1.0)],
)
def test_a_slower_pacer_keeps_its_own_minimum_and_rate(active, seconds):
    pacer = UpdatePacer(per_second=100, min_s=0.2)
    pacer.active = active
    assert pacer.interval() == pytest.approx(seconds)


def test_all_chats_together_stay_within_the_redraw_rate_and_none_goes_faster_than_the_minimum():
    pacer = UpdatePacer(per_second=300, min_s=0.05)
    previous = 0.0
    for active in range(1, 2001):
        pacer.active = active
        interval = pacer.interval()
        assert interval >= 0.05, active
        assert active / interval <= 300 + 1e-9, active  # redraws a second, all chats together
        assert interval >= previous, active  # never faster under more load
        previous = interval
