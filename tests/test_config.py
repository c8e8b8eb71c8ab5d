"""engine.config: profiles, overrides from code and the command line, validation."""

import argparse

import pytest

from engine.config import BENCH_BATCH, PROFILES, add_config_arguments, config_from_args, make_config


def test_profiles_differ_where_they_should():
    h100, cpu, orig = make_config("h100"), make_config("cpu"), make_config("rtx5090")
    assert h100.kv_cache_dtype == "fp8_e4m3" and h100.async_scheduling
    assert cpu.on_cpu and cpu.dtype == "float32" and cpu.enforce_eager
    assert orig.quantization == "fp8" and BENCH_BATCH in orig.cudagraph_capture_sizes
    assert orig.engine_kwargs()["compilation_config"] == {"cudagraph_mode": "FULL_AND_PIECEWISE"}
    assert set(PROFILES) == {"cpu", "h100", "rtx5090", "vllm-defaults"}
    # h100: no prefix caching, and a CUDA graph that covers the whole batch of 358
    assert h100.engine_kwargs()["enable_prefix_caching"] is False
    sizes = h100.engine_kwargs()["cudagraph_capture_sizes"]
    assert min(s for s in sizes if s >= BENCH_BATCH) - BENCH_BATCH <= 2
    assert max(sizes) == h100.max_num_seqs and sizes == sorted(sizes)


def test_auto_picks_cpu_without_a_gpu():
    assert make_config("auto").profile == "cpu"


def test_overrides_and_engine_kwargs():
    cfg = make_config("h100", max_num_seqs=256, block_size=64, model=None)
    kwargs = cfg.engine_kwargs()
    assert kwargs["max_num_seqs"] == 256 and kwargs["block_size"] == 64
    assert "quantization" not in kwargs  # None values are left to vLLM
    assert kwargs["stream_interval"] == 16


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"max_model_len": 10}, "max_model_len"),
        ({"gpu_memory_utilization": 1.5}, "gpu_memory_utilization"),
        ({"max_batch": 0}, "max_batch"),
        ({"load_format": "magic"}, "load_format"),
        ({"compile_backend": "magic"}, "compile_backend"),
        ({"batch_submit": "later"}, "batch_submit"),
        ({"no_such_setting": 1}, "unknown engine settings"),
    ],
)
def test_bad_values_are_refused(overrides, message):
    with pytest.raises(ValueError, match=message):
        make_config("cpu", **overrides)


def test_unknown_profile():
    with pytest.raises(ValueError, match="unknown profile"):
        make_config("tpu")


def test_command_line_flags_reach_the_config():
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    args = parser.parse_args(
        [
            "--profile",
            "h100",
            "--max-num-seqs",
            "384",
            "--async-scheduling",
            "false",
            "--cudagraph-capture-sizes",
            "1,2,358",
            "--compile-backend",
            "eager",
        ]
    )
    cfg = config_from_args(args)
    assert cfg.engine_kwargs()["compilation_config"] == {"backend": "eager"}
    assert (cfg.profile, cfg.max_num_seqs, cfg.async_scheduling) == ("h100", 384, False)
    assert cfg.cudagraph_capture_sizes == (1, 2, 358)
    with pytest.raises(SystemExit):
        parser.parse_args(["--async-scheduling", "maybe"])


def test_no_torch_compile_keeps_cuda_graphs_and_the_batch_prefills_in_one_step():
    cfg = make_config("h100")
    assert cfg.engine_kwargs()["compilation_config"] == {"mode": 0}
    compiled = make_config("h100", compile_backend="inductor")
    assert compiled.engine_kwargs()["compilation_config"] == {"backend": "inductor"}
    assert cfg.engine_kwargs()["cudagraph_capture_sizes"]  # graphs still captured
    assert make_config("h100").max_num_batched_tokens >= 14_193  # the course batch's prompts
    assert make_config("h100").batch_submit == "hold"


@pytest.mark.parametrize("flag, expected", [("auto", None), ("on", True), ("off", False)])
def test_thinking_flag(flag, expected):
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    assert config_from_args(parser.parse_args(["--thinking", flag])).thinking is expected
    assert config_from_args(parser.parse_args([])).thinking is None
    with pytest.raises(SystemExit):
        parser.parse_args(["--thinking", "sometimes"])
