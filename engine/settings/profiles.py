"""Named engine profiles, one per family of machine, and `auto`, which picks one for the GPU it
finds and fits it to the card's memory.

    cfg = make_config("hopper", max_num_seqs=256)
    cfg = make_config("auto")        # this machine's family, fitted to its memory

Family profiles: `cpu` (vLLM's CPU backend), `volta-turing` (compute 7.x: fp16), `ampere-ada`
(8.x: bf16), `hopper` (9.x, tuned on the H100 and H200), `blackwell` (10.x and 12.x: the course
system's tuning from its RTX 5090). For comparison: `rtx5090` (that tuning exactly as the course
shipped it) and `untuned` (vLLM's own choice of every setting that sets the speed, within the
app's bounds: not vLLM's defaults, see the profile). `turing`, `ampere`, `h100` and
`vllm-defaults`, the names of earlier releases, still work.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from engine.settings.config import BENCH_BATCH, EngineConfig

if TYPE_CHECKING:
    from engine.settings.devices import Gpu

# CUDA-graph batch sizes of the tuned GPU profiles (volta-turing, ampere-ada, hopper), cut at
# their max_num_seqs (`graph_sizes`).
GRAPH_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 192, 256, 320, 360, 384, 448, 512)


def graph_sizes(max_num_seqs: int) -> tuple[int, ...]:
    """CUDA-graph batch sizes up to `max_num_seqs` (which is always one of them)."""
    return (*(s for s in GRAPH_SIZES if s < max_num_seqs), max_num_seqs)


# Settings the tuned GPU profiles (volta-turing, ampere-ada, hopper) share, measured on the H100
# and H200 (BENCHMARKS.md): the engine core's Python, not the GPU, limits a batch of 358 on a
# 0.6B model. `blackwell` takes the course system's tuning instead.
_TUNED_GPU = dict(
    async_scheduling=True,
    stream_interval=16,
    # Block hashing for prefix caching costs host time every step, and the course prompts
    # share no whole block, so it saves nothing here.
    enable_prefix_caching=False,
    # The whole batch's prompts (14,193 tokens for the course's 358) in one prefill step.
    max_num_batched_tokens=16384,
    # No torch.compile: full CUDA graphs for decode, eager prefill. A first start is about a
    # minute shorter at the same tokens/s (BENCHMARKS.md); `--compile-backend inductor`
    # brings compiling back.
    compile_backend="none",
    # 4096 tokens: the benchmark's shape. Qwen3's whole context (`--max-model-len auto`,
    # 40,960 tokens) fits in memory but cost the benchmark about a third of its tokens/s on an
    # H200 (BENCHMARKS.md); a chat longer than the context drops its oldest turns.
    max_model_len=4096,
    gpu_memory_utilization=0.85,
)

# The course system's tuning on its RTX 5090: FP8 weights and KV cache, torch.compile,
# CUDA graphs sized for the batch of 358, prefix caching; bf16 instead of its fp16
# (FlashAttention 3 refuses fp16 with an FP8 KV cache). Scheduling and the stream interval (1)
# are vLLM's.
_COURSE_RTX5090 = dict(
    dtype="bfloat16",
    quantization="fp8",
    kv_cache_dtype="fp8_e4m3",
    max_model_len=1024,
    max_num_seqs=BENCH_BATCH,
    max_num_batched_tokens=16384,
    gpu_memory_utilization=0.9,
    enable_prefix_caching=True,
    cudagraph_capture_sizes=(1, 2, 4, 8, 16, 32, 64, 128, 256, BENCH_BATCH),
    cudagraph_mode="FULL_AND_PIECEWISE",
)

# Each profile states every value it relies on, even where it equals EngineConfig's default.
PROFILES: dict[str, dict] = {
    "cpu": dict(
        dtype="float32",
        enforce_eager=True,
        max_model_len=4096,
        max_num_seqs=BENCH_BATCH,
        gpu_memory_utilization=0.3,
        warmup_tokens=2,
        max_new_tokens_cap=1024,
        # vLLM's CPU processes below the web processes: 128 chats of 8 tokens on 2 cores, UI
        # first chunk p95 1.17-1.22x the API's instead of 1.36-1.73x (BENCHMARKS.md).
        engine_nice=5,
    ),
    # Volta (7.0) and Turing (7.5): no bfloat16 and no FlashAttention there; vLLM's Triton
    # attention serves fp16 with an fp16 KV cache.
    "volta-turing": dict(
        dtype="float16",
        kv_cache_dtype="auto",
        attention_backend="TRITON_ATTN",
        max_num_seqs=BENCH_BATCH,
        cudagraph_capture_sizes=graph_sizes(BENCH_BATCH),
        **_TUNED_GPU,
    ),
    # Ampere (8.0-8.7) and Ada (8.9): bf16 with a bf16 KV cache, so vLLM takes
    # FlashAttention 2 (an FP8 KV cache would move it to slower attention paths there).
    "ampere-ada": dict(
        dtype="bfloat16",
        kv_cache_dtype="auto",
        max_num_seqs=BENCH_BATCH,
        cudagraph_capture_sizes=graph_sizes(BENCH_BATCH),
        **_TUNED_GPU,
    ),
    # Hopper: bf16 with an FP8 KV cache on FlashAttention 3; 15 graph sizes up to 512 instead
    # of vLLM's 67 (a shorter start, same speed).
    "hopper": dict(
        dtype="bfloat16",
        kv_cache_dtype="fp8_e4m3",
        max_num_seqs=512,
        cudagraph_capture_sizes=GRAPH_SIZES,
        **_TUNED_GPU,
    ),
    # Blackwell: the course system's tuning, with the tuned profiles' context for chats.
    "blackwell": dict(_COURSE_RTX5090, max_model_len=4096),
    "rtx5090": dict(_COURSE_RTX5090),
    # vLLM's own choice of dtype, KV cache, attention, torch.compile, CUDA graphs, async
    # scheduling, prefix caching (on), batched tokens and stream interval (1), within bounds
    # that are not vLLM 0.32's defaults: a 512-token context (vLLM: the model's 40,960), 512
    # sequences (`vllm serve`: 1024 on an H100 or H200, 256 on smaller cards), 0.85 of the
    # memory (vLLM: 0.92), and the admission limit every profile has.
    "untuned": dict(max_model_len=512, max_num_seqs=512, gpu_memory_utilization=0.85),
}
# Names of earlier releases (`vllm-defaults` measured what `untuned` sets, BENCHMARKS.md).
ALIASES = {
    "turing": "volta-turing",
    "ampere": "ampere-ada",
    "h100": "hopper",
    "vllm-defaults": "untuned",
}
PROFILE_NAMES = ("auto", *PROFILES, *ALIASES)

# The profile of each GPU family (engine.settings.devices.FAMILIES names them).
FAMILY_PROFILES = {
    "Volta": "volta-turing",
    "Turing": "volta-turing",
    "Ampere": "ampere-ada",
    "Ada": "ampere-ada",
    "Hopper": "hopper",
    "Blackwell": "blackwell",
}
FULL_CONTEXT = "auto"  # `max_model_len` override: the model's whole context (None in the config)
SMALL_CARD_GIB = 20  # 16 GB cards (T4, V100-16GB, A2, A4000, RTX 4060 Ti) and smaller
MID_CARD_GIB = 40  # 24-32 GB cards (A10, L4, RTX 3090/4090/5090, V100-32GB)


def fit_to_memory(profile: str, memory_gib: float) -> tuple[dict, str]:
    """Overrides that fit a profile to a card's memory, and a note saying so.

    Under 20 GiB: 256 sequences (a 358-request batch of 296-token replies needs about 12 GiB of
    fp16 KV cache) and 0.80 of the memory, leaving room for a desktop or another process;
    under 40 GiB: at most the batch of 358.
    """
    fields = PROFILES[profile]
    seqs = fields.get("max_num_seqs", EngineConfig.max_num_seqs)
    if memory_gib < SMALL_CARD_GIB:
        fitted, why = {"max_num_seqs": 256, "gpu_memory_utilization": 0.80}, "a card under 20 GiB"
    elif memory_gib < MID_CARD_GIB and seqs > BENCH_BATCH:
        fitted, why = {"max_num_seqs": BENCH_BATCH}, "a card under 40 GiB"
    else:
        return {}, ""
    if fitted["max_num_seqs"] < seqs and fields.get("cudagraph_capture_sizes"):
        fitted["cudagraph_capture_sizes"] = graph_sizes(fitted["max_num_seqs"])
    settings = ", ".join(f"{k} {v}" for k, v in fitted.items() if k != "cudagraph_capture_sizes")
    return fitted, f"sized for {why}: {settings}"


def choose_profile(gpu: Gpu | None, vllm_build: str | None) -> tuple[str, dict, str]:
    """(profile, memory overrides, reason) for a machine: its GPU family and memory decide."""
    if vllm_build == "cpu":
        return "cpu", {}, "chosen by auto: vLLM's CPU build is installed"
    if gpu is None:
        return "cpu", {}, "chosen by auto: no NVIDIA GPU found"
    older = gpu.capability[0] < 7
    profile = FAMILY_PROFILES.get(gpu.family, "volta-turing" if older else "blackwell")
    fitted, note = fit_to_memory(profile, gpu.memory_gib)
    reason = f"chosen by auto for {gpu.describe()}"
    if older:
        reason += " (vLLM needs compute 7.0 or newer; it may refuse this GPU)"
    return profile, fitted, reason + (f"; {note}" if note else "")


def detect_profile() -> tuple[str, dict, str]:
    """`choose_profile` for this machine (NVML, no CUDA)."""
    from engine.settings import devices

    return choose_profile(devices.gpu(), devices.vllm_build())


def make_config(profile: str = "auto", **overrides) -> EngineConfig:
    """The configuration of a profile with field overrides applied (None = keep).

    `auto` picks the profile for this machine's GPU and fits it to the card's memory; an
    explicit override still wins over that fitting. `max_model_len="auto"` asks for the
    model's whole context.
    """
    fitted: dict = {}
    profile = ALIASES.get(profile, profile)
    if profile == "auto":
        profile, fitted, reason = detect_profile()
        fitted["profile_reason"] = reason
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose from {', '.join(PROFILE_NAMES)}")
    fields = {f.name for f in dataclasses.fields(EngineConfig)}
    unknown = set(overrides) - fields
    if unknown:
        raise ValueError(f"unknown engine settings: {', '.join(sorted(unknown))}")
    given = {k: v for k, v in overrides.items() if v is not None}
    if given.get("max_model_len") == FULL_CONTEXT:
        given["max_model_len"] = None
    return EngineConfig(**{**PROFILES[profile], "profile": profile, **fitted, **given})
