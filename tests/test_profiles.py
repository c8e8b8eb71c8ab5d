"""engine.settings.profiles: the named profiles, the automatic choice per GPU family, fitting to
memory."""

from pathlib import Path

import pytest

from engine.models.sources import ResolvedModel
from engine.runtime.vllm_args import engine_kwargs
from engine.settings import devices
from engine.settings.config import BENCH_BATCH
from engine.settings.devices import Gpu
from engine.settings.profiles import ALIASES, PROFILES, choose_profile, make_config

MODEL = ResolvedModel("tiny-random", Path("/m"), True, "built-in")


def test_profiles_differ_where_they_should():
    hopper, cpu, course = make_config("hopper"), make_config("cpu"), make_config("rtx5090")
    assert hopper.kv_cache_dtype == "fp8_e4m3" and hopper.async_scheduling
    assert cpu.dtype == "float32" and cpu.enforce_eager and cpu.max_model_len == 4096
    assert course.quantization == "fp8" and BENCH_BATCH in course.cudagraph_capture_sizes
    assert course.max_model_len == 1024  # the course system's own setting
    assert make_config("blackwell").max_model_len == 4096  # the same tuning, a chat's context
    assert make_config("hopper", max_model_len="auto").max_model_len is None  # Qwen3's whole
    assert set(PROFILES) == {
        "cpu",
        "volta-turing",
        "ampere-ada",
        "hopper",
        "blackwell",
        "rtx5090",
        "untuned",
    }
    kwargs = engine_kwargs(hopper, MODEL)
    assert kwargs["enable_prefix_caching"] is False
    sizes = kwargs["cudagraph_capture_sizes"]  # a CUDA graph that covers the batch of 358
    assert min(s for s in sizes if s >= BENCH_BATCH) - BENCH_BATCH <= 2
    assert max(sizes) == hopper.max_num_seqs and sizes == sorted(sizes)


def test_untuned_sets_its_bounds_and_leaves_the_rest_to_vllm():
    kwargs = engine_kwargs(make_config("untuned"), MODEL)
    assert (kwargs["max_model_len"], kwargs["max_num_seqs"]) == (512, 512)
    assert kwargs["gpu_memory_utilization"] == 0.85  # vLLM 0.32's default is 0.92
    assert kwargs["stream_interval"] == 1 and kwargs["dtype"] == "auto"  # vLLM's own
    for left_to_vllm in (
        "async_scheduling",
        "enable_prefix_caching",
        "cudagraph_capture_sizes",
        "compilation_config",
        "max_num_batched_tokens",
        "attention_backend",
    ):
        assert left_to_vllm not in kwargs


def test_the_course_tuning_streams_every_token_and_the_tuned_profiles_every_16():
    for name in ("blackwell", "rtx5090", "cpu", "untuned"):
        assert make_config(name).stream_interval == 1
    for name in ("volta-turing", "ampere-ada", "hopper"):
        tuned = make_config(name)
        assert tuned.stream_interval == 16 and tuned.enable_prefix_caching is False
        assert tuned.compile_backend == "none"
    course = make_config("blackwell")
    assert course.enable_prefix_caching and course.compile_backend is None  # torch.compile


def test_earlier_names_are_aliases():
    for old, new in ALIASES.items():
        assert make_config(old) == make_config(new)
        assert make_config(old).profile == new


def test_auto_without_a_gpu_or_with_the_cpu_build():
    assert choose_profile(None, "cuda")[::2] == ("cpu", "chosen by auto: no NVIDIA GPU found")
    h100 = Gpu(0, "NVIDIA H100 80GB HBM3", (9, 0), 79.6)
    assert choose_profile(h100, "cpu")[0] == "cpu"  # the CPU build installed: CPU whatever GPU


# (card, compute capability, GiB) -> profile, max_num_seqs, gpu_memory_utilization
FAMILIES = [
    ("Tesla T4", (7, 5), 15.0, "volta-turing", 256, 0.80),
    ("Tesla V100-SXM2-16GB", (7, 0), 15.8, "volta-turing", 256, 0.80),
    ("Tesla V100-SXM2-32GB", (7, 0), 31.7, "volta-turing", BENCH_BATCH, 0.85),
    ("NVIDIA A10G", (8, 6), 22.5, "ampere-ada", BENCH_BATCH, 0.85),
    ("NVIDIA L4", (8, 9), 22.5, "ampere-ada", BENCH_BATCH, 0.85),
    ("NVIDIA GeForce RTX 4060 Ti", (8, 9), 16.0, "ampere-ada", 256, 0.80),
    ("NVIDIA A100-SXM4-80GB", (8, 0), 79.3, "ampere-ada", BENCH_BATCH, 0.85),
    ("NVIDIA GeForce RTX 3090", (8, 6), 24.0, "ampere-ada", BENCH_BATCH, 0.85),
    ("NVIDIA H100 80GB HBM3", (9, 0), 79.6, "hopper", 512, 0.85),
    ("NVIDIA H200", (9, 0), 139.8, "hopper", 512, 0.85),
    ("NVIDIA H100 PCIe", (9, 0), 31.5, "hopper", BENCH_BATCH, 0.85),  # a 32 GB slice (MIG)
    ("NVIDIA B200", (10, 0), 178.4, "blackwell", BENCH_BATCH, 0.90),
    ("NVIDIA GeForce RTX 5090", (12, 0), 31.4, "blackwell", BENCH_BATCH, 0.90),
]


@pytest.mark.parametrize("name, capability, gib, profile, seqs, share", FAMILIES)
def test_auto_fits_each_gpu_family_and_its_memory(
    monkeypatch, name, capability, gib, profile, seqs, share
):
    gpu = Gpu(0, name, capability, gib)
    monkeypatch.setattr(devices, "gpu", lambda: gpu)
    monkeypatch.setattr(devices, "vllm_build", lambda: "cuda")
    cfg = make_config("auto")
    assert (cfg.profile, cfg.max_num_seqs, cfg.gpu_memory_utilization) == (profile, seqs, share)
    reason = cfg.profile_reason
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
    assert cfg.max_model_len == 4096  # the benchmark's shape; `--max-model-len auto`: all
    if gib < 20:
        assert "sized for a card under 20 GiB" in reason


def test_an_explicit_value_wins_over_the_memory_fit(monkeypatch):
    monkeypatch.setattr(devices, "gpu", lambda: Gpu(0, "Tesla T4", (7, 5), 15.0))
    monkeypatch.setattr(devices, "vllm_build", lambda: "cuda")
    assert make_config("auto").max_num_seqs == 256
    assert make_config("auto", max_num_seqs=300).max_num_seqs == 300
    assert make_config("ampere-ada").max_num_seqs == BENCH_BATCH  # named: no fitting


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"max_model_len": 10}, "max_model_len"),
        ({"gpu_memory_utilization": 1.5}, "gpu_memory_utilization"),
        ({"max_batch": 0}, "max_batch"),
        ({"max_queued_requests": 0}, "max_queued_requests"),
        ({"load_format": "magic"}, "load_format"),
        ({"compile_backend": "magic"}, "compile_backend"),
        ({"no_such_setting": 1}, "unknown engine settings"),
    ],
)
def test_bad_values_are_refused(overrides, message):
    with pytest.raises(ValueError, match=message):
        make_config("cpu", **overrides)


def test_unknown_profile():
    with pytest.raises(ValueError, match="unknown profile"):
        make_config("tpu")


def test_the_admission_limit_defaults_to_two_rounds_of_what_the_engine_runs():
    assert make_config("hopper").admission_limit == 2 * 512
    assert make_config("hopper", data_parallel_size=2).admission_limit == 2 * 2 * 512
    assert make_config("cpu", max_queued_requests=7).admission_limit == 7
