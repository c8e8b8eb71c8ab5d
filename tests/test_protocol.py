"""protocol: the UI <-> server messages. A chat request's validation and its defaults per mode,
and every event written by `encode` read back by `decode` as the same event."""

import pytest

from protocol import (
    BenchmarkDone,
    BenchmarkProgress,
    Cancelled,
    ChatDelta,
    ChatDone,
    ChatRequest,
    StreamError,
    decode,
    encode,
)

USER = [{"role": "user", "content": "什么是 warp？"}]


@pytest.mark.parametrize(
    ("thinking", "expected"),
    [(True, (0.6, 0.95, 20)), (False, (0.7, 0.8, 20))],
)
def test_left_out_sampling_takes_qwen3s_recommendation_for_the_mode(thinking, expected):
    request = ChatRequest.parse({"messages": USER, "thinking": thinking})
    params = request.params
    assert (params.temperature, params.top_p, params.top_k) == expected
    assert params.max_new_tokens == 512


def test_given_sampling_is_kept_and_survives_the_round_trip():
    body = {"messages": USER, "thinking": False, "params": {"temperature": 0.2, "top_k": 5}}
    request = ChatRequest.parse(body)
    assert (request.params.temperature, request.params.top_k, request.params.top_p) == (
        0.2,
        5,
        0.8,
    )
    assert ChatRequest.parse(request.to_json()) == request


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([], "JSON object"),
        ({"messages": []}, "non-empty list"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "role"),
        ({"messages": [{"role": "user", "content": 3}]}, "role"),
        ({"messages": [{"role": "user", "content": "  "}]}, "not empty"),
        ({"messages": [*USER, {"role": "assistant", "content": "a"}]}, "last message"),
        ({"messages": USER, "thinking": "yes"}, "thinking"),
        ({"messages": USER, "params": []}, "params"),
        ({"messages": USER, "params": {"temperature": "hot"}}, "temperature must be a number"),
        ({"messages": USER, "params": {"top_k": True}}, "top_k must be a number"),
        ({"messages": USER, "params": {"max_new_tokens": 2.5}}, "whole number"),
        ({"messages": USER, "params": {"top_p": 0}}, "top_p"),
        ({"messages": USER, "params": {"temperature": 9}}, "temperature"),
    ],
)
def test_a_bad_request_is_refused_saying_what_is_wrong(body, message):
    with pytest.raises(ValueError, match=message):
        ChatRequest.parse(body)


@pytest.mark.parametrize(
    "event",
    [
        ChatDelta("思考", "答案", 3),
        ChatDone(12, 0.05, 0.4, "stop", 2),
        ChatDone(1, None, 0.01, None, 0),
        BenchmarkProgress({"completed": 3, "total": 8}, [{"index": 1}]),
        BenchmarkDone({"workload": "replay", "samples": []}),
        Cancelled(),
        StreamError("server busy", "busy", 503),
    ],
)
def test_every_event_reads_back_as_itself(event):
    line = encode(event)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert decode(line) == event


@pytest.mark.parametrize("line", ["[1, 2]", '{"done": true}', '{"error": "x"}', "not json"])
def test_a_line_that_is_no_event_is_a_value_error(line):
    with pytest.raises(ValueError):
        decode(line)
