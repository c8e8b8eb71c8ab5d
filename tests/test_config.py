"""engine.config: profiles, overrides from code and the command line, validation."""

import argparse

import pytest

from engine.config import (
    BENCH_BATCH,
    PROFILES,
    add_config_arguments,
    choose_profile,
    config_from_args,
    make_config,
)
from engine.devices import Gpu


def test_profiles_differ_where_they_should():
    h100, cpu, orig = make_config("h100"), make_config("cpu"), make_config("rtx5090")
    assert h100.kv_cache_dtype == "fp8_e4m3" and h100.async_scheduling
    assert cpu.on_cpu and cpu.dtype == "float32" and cpu.enforce_eager
    assert orig.quantization == "fp8" and BENCH_BATCH in orig.cudagraph_capture_sizes
    assert orig.engine_kwargs()["compilation_config"] == {"cudagraph_mode": "FULL_AND_PIECEWISE"}
    assert set(PROFILES) == {"cpu", "turing", "ampere", "h100", "rtx5090", "vllm-defaults"}
    # h100: no prefix caching, and a CUDA graph that covers the whole batch of 358
    assert h100.engine_kwargs()["enable_prefix_caching"] is False
    sizes = h100.engine_kwargs()["cudagraph_capture_sizes"]
    assert min(s for s in sizes if s >= BENCH_BATCH) - BENCH_BATCH <= 2
    assert max(sizes) == h100.max_num_seqs and sizes == sorted(sizes)


def test_auto_picks_cpu_without_a_gpu():
    from engine import devices

    cfg = make_config("auto")
    assert cfg.profile == choose_profile(devices.gpu(), devices.vllm_build())[0]
    assert cfg.profile_reason.startswith("chosen by auto")
    if devices.runs_on_cpu():
        assert cfg.profile == "cpu" and cfg.on_cpu
    assert choose_profile(None, "cuda")[::2] == ("cpu", "chosen by auto: no NVIDIA GPU found")
    h100 = Gpu(0, "NVIDIA H100 80GB HBM3", (9, 0), 79.6)
    assert choose_profile(h100, "cpu")[0] == "cpu"  # the CPU build installed: CPU whatever GPU


# (card, compute capability, GiB) -> profile, max_num_seqs, gpu_memory_utilization
FAMILIES = [
    ("Tesla T4", (7, 5), 15.0, "turing", 256, 0.80),
    ("Tesla V100-SXM2-16GB", (7, 0), 15.8, "turing", 256, 0.80),
    ("Tesla V100-SXM2-32GB", (7, 0), 31.7, "turing", BENCH_BATCH, 0.85),
    ("NVIDIA A10G", (8, 6), 22.5, "ampere", BENCH_BATCH, 0.85),
    ("NVIDIA L4", (8, 9), 22.5, "ampere", BENCH_BATCH, 0.85),
    ("NVIDIA GeForce RTX 4060 Ti", (8, 9), 16.0, "ampere", 256, 0.80),
    ("NVIDIA A100-SXM4-80GB", (8, 0), 79.3, "ampere", BENCH_BATCH, 0.85),
    ("NVIDIA GeForce RTX 3090", (8, 6), 24.0, "ampere", BENCH_BATCH, 0.85),
    ("NVIDIA H100 80GB HBM3", (9, 0), 79.6, "h100", 512, 0.85),
    ("NVIDIA H200", (9, 0), 139.8, "h100", 512, 0.85),
    ("NVIDIA H100 PCIe", (9, 0), 31.5, "h100", BENCH_BATCH, 0.85),  # a 32 GB slice (MIG)
    ("NVIDIA B200", (10, 0), 178.4, "rtx5090", BENCH_BATCH, 0.90),
    ("NVIDIA GeForce RTX 5090", (12, 0), 31.4, "rtx5090", BENCH_BATCH, 0.90),
]


@pytest.mark.parametrize("name, capability, gib, profile, seqs, share", FAMILIES)
def test_auto_fits_each_gpu_family_and_its_memory(name, capability, gib, profile, seqs, share):
    gpu = Gpu(0, name, capability, gib)
    chosen, fitted, reason = choose_profile(gpu, "cuda")
    cfg = make_config(chosen, **fitted, profile_reason=reason)
    assert (cfg.profile, cfg.max_num_seqs, cfg.gpu_memory_utilization) == (profile, seqs, share)
    assert name in reason and gpu.family in reason and f"compute {capability[0]}." in reason
    sizes = cfg.cudagraph_capture_sizes
    assert sizes is None or max(sizes) == cfg.max_num_seqs  # no graph larger than the batch
    if capability[0] < 8:  # vLLM refuses bfloat16 and has no FlashAttention before Ampere
        assert cfg.dtype == "float16" and cfg.attention_backend == "TRITON_ATTN"
    else:
        assert cfg.dtype == "bfloat16"
    if capability[0] == 8:  # FlashAttention 2 there takes no FP8 KV cache
        assert cfg.kv_cache_dtype == "auto" and cfg.attention_backend is None
    if capability[0] == 9:
        assert cfg.kv_cache_dtype == "fp8_e4m3"
    if gib < 20:
        assert "sized for a card under 20 GiB" in reason


def test_an_explicit_flag_wins_over_the_memory_fit(monkeypatch):
    from engine import config, devices

    monkeypatch.setattr(devices, "gpu", lambda: Gpu(0, "Tesla T4", (7, 5), 15.0))
    monkeypatch.setattr(devices, "vllm_build", lambda: "cuda")
    assert config.make_config("auto").max_num_seqs == 256
    assert config.make_config("auto", max_num_seqs=300).max_num_seqs == 300
    assert config.make_config("ampere").max_num_seqs == BENCH_BATCH  # forced: no fitting


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
