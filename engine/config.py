"""One engine configuration object, chosen by a named profile and overridable per field.

    cfg = make_config("h100", max_num_seqs=256)
    cfg.engine_kwargs()   # -> keyword arguments for vLLM's AsyncEngineArgs

Profiles, one per family of machine: `cpu` (vLLM's CPU backend), `turing` (Volta and Turing
GPUs, compute 7.x: fp16), `ampere` (Ampere and Ada, 8.x: bf16), `h100` (Hopper, 9.x, tuned on
the H100), `rtx5090` (Blackwell, 10.x and 12.x: the original course system's settings, bf16
instead of fp16); `vllm-defaults` (vLLM as shipped, for comparison); and `auto`, which picks
one from the GPU it finds and sizes it to the card's memory (`choose_profile`). The same object
feeds the app, the HTTP API, the headless benchmark and the tests.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from engine.devices import Gpu

DEFAULT_MODEL = "Qwen/Qwen3-0.6B"
BENCH_BATCH = 358  # the course evaluation's batch: every question submitted at once
# How a batch reaches vLLM (EngineConfig.batch_submit, Engine.generate_many).
BATCH_SUBMIT_MODES = ("hold", "direct", "legacy")
H100_GRAPH_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 192, 256, 320, 360, 384, 448, 512)


@dataclass(frozen=True)
class EngineConfig:
    """Everything that decides how the engine is built, warmed and bounded."""

    profile: str = "cpu"
    model: str = DEFAULT_MODEL
    load_format: str = "auto"
    dtype: str = "auto"
    quantization: str | None = None
    kv_cache_dtype: str = "auto"
    max_model_len: int = 4096
    max_num_seqs: int = 512
    max_num_batched_tokens: int | None = None
    gpu_memory_utilization: float = 0.85
    enforce_eager: bool = False
    async_scheduling: bool | None = None
    stream_interval: int = 1
    enable_prefix_caching: bool | None = None
    cudagraph_capture_sizes: tuple[int, ...] | None = None
    compilation_config: dict | None = None
    cudagraph_mode: str | None = None  # e.g. FULL_AND_PIECEWISE, FULL_DECODE_ONLY, PIECEWISE
    # torch.compile backend: None (inductor), "eager" (Dynamo only) or "none" (no torch.compile;
    # CUDA graphs of the whole model are still captured)
    compile_backend: str | None = None
    attention_backend: str | None = None
    block_size: int | None = None
    disable_log_stats: bool = False
    cpu_kvcache_gib: int = 1
    warmup_batch: int = BENCH_BATCH
    warmup_tokens: int = 8
    max_new_tokens_cap: int = 2048
    max_batch: int = 1024
    max_queued_requests: int = 2048
    # How a batch reaches vLLM: hold (scheduler held until the whole batch is in), direct, or
    # legacy (one generate() per raw prompt); see Engine.generate_many.
    batch_submit: str = "hold"
    # Course prompt (benchmark, /predict): thinking on, off, or None = by model
    # (engine.chat.default_thinking; on for random-weight models).
    thinking: bool | None = None
    seed: int = 0
    # vLLM's data parallelism: one engine rank per GPU behind the one AsyncLLM (its DP
    # coordinator balances the requests). Several hosts: this host runs `data_parallel_size_local`
    # ranks; the others join at `data_parallel_address`:`data_parallel_rpc_port`
    # (`python -m engine.rank`).
    data_parallel_size: int = 1
    data_parallel_size_local: int | None = None
    data_parallel_address: str | None = None
    data_parallel_rpc_port: int | None = None
    data_parallel_join_timeout: float = 600.0  # seconds the head waits for remote ranks
    # vLLM's executor inside each rank: None (vLLM's choice; `mp`, a worker process, with data
    # parallelism) or `uni` (the model runs in the rank's own process).
    distributed_executor_backend: str | None = None
    extra_engine_args: dict = field(default_factory=dict)
    # Why this profile, set by `auto`: "chosen by auto for NVIDIA A10G (Ampere, ...)".
    profile_reason: str = ""

    def __post_init__(self):
        if self.max_model_len < 64:
            raise ValueError(f"max_model_len must be at least 64, got {self.max_model_len}")
        if not 0.05 <= self.gpu_memory_utilization <= 0.99:
            raise ValueError("gpu_memory_utilization must be within 0.05..0.99")
        for name in (
            "max_num_seqs",
            "max_new_tokens_cap",
            "max_batch",
            "max_queued_requests",
            "stream_interval",
            "warmup_tokens",
            "cpu_kvcache_gib",
            "data_parallel_size",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.warmup_batch < 0:
            raise ValueError("warmup_batch must be 0 (no warm-up) or more")
        if self.load_format not in ("auto", "dummy", "safetensors", "pt"):
            raise ValueError(f"unknown load_format {self.load_format!r}")
        if self.batch_submit not in BATCH_SUBMIT_MODES:
            raise ValueError(
                f"batch_submit must be one of {', '.join(BATCH_SUBMIT_MODES)}, "
                f"got {self.batch_submit!r}"
            )
        local = self.data_parallel_size_local
        if local is not None and not 1 <= local <= self.data_parallel_size:
            raise ValueError(
                f"data_parallel_size_local must be within 1..{self.data_parallel_size} "
                f"(data_parallel_size), got {local}"
            )
        if self.remote_ranks and not self.data_parallel_address:
            raise ValueError(
                "ranks on other hosts need data_parallel_address (this host's address, "
                "which they connect to)"
            )
        if self.distributed_executor_backend not in (None, "mp", "uni"):
            raise ValueError(
                "distributed_executor_backend must be mp or uni, "
                f"got {self.distributed_executor_backend!r}"
            )
        if self.compile_backend not in (None, "inductor", "eager", "none"):
            raise ValueError(
                f"compile_backend must be inductor, eager or none, got {self.compile_backend!r}"
            )

    @property
    def on_cpu(self) -> bool:
        """Whether vLLM runs on the CPU here (its CPU build, or no GPU), whatever the profile."""
        from engine import devices

        return devices.runs_on_cpu()

    @property
    def local_ranks(self) -> int:
        """Data-parallel ranks (GPUs) this host runs."""
        return self.data_parallel_size_local or self.data_parallel_size

    @property
    def remote_ranks(self) -> int:
        """Data-parallel ranks that other hosts run (`python -m engine.rank` there)."""
        return self.data_parallel_size - self.local_ranks

    def engine_kwargs(self) -> dict:
        """Keyword arguments for vLLM's `AsyncEngineArgs` (model path resolved separately)."""
        kwargs = dict(
            load_format=self.load_format,
            dtype=self.dtype,
            quantization=self.quantization,
            kv_cache_dtype=self.kv_cache_dtype,
            max_model_len=self.max_model_len,
            max_num_seqs=self.max_num_seqs,
            max_num_batched_tokens=self.max_num_batched_tokens,
            gpu_memory_utilization=self.gpu_memory_utilization,
            enforce_eager=self.enforce_eager,
            async_scheduling=self.async_scheduling,
            stream_interval=self.stream_interval,
            enable_prefix_caching=self.enable_prefix_caching,
            cudagraph_capture_sizes=(
                list(self.cudagraph_capture_sizes) if self.cudagraph_capture_sizes else None
            ),
            compilation_config=self._compilation(),
            attention_backend=self.attention_backend,
            block_size=self.block_size,
            disable_log_stats=self.disable_log_stats or None,
            seed=self.seed,
            distributed_executor_backend=self.distributed_executor_backend,
            **self._data_parallel(),
        )
        kwargs = {k: v for k, v in kwargs.items() if v is not None}
        if kwargs.get("stream_interval") == 1:
            kwargs.pop("stream_interval")  # the default; older vLLM lacks the argument
        return {**kwargs, **self.extra_engine_args}

    def _data_parallel(self) -> dict:
        if self.data_parallel_size == 1:
            return {}
        return dict(
            data_parallel_size=self.data_parallel_size,
            data_parallel_size_local=self.data_parallel_size_local,
            data_parallel_address=self.data_parallel_address,
            data_parallel_rpc_port=self.data_parallel_rpc_port,
        )

    def _compilation(self) -> dict | None:
        merged = dict(self.compilation_config or {})
        if self.cudagraph_mode:
            merged["cudagraph_mode"] = self.cudagraph_mode
        if self.compile_backend == "none":
            merged["mode"] = 0  # vLLM's CompilationMode.NONE: FULL CUDA graphs, no Dynamo
        elif self.compile_backend:
            merged["backend"] = self.compile_backend
        return merged or None

    def summary(self) -> dict:
        """The settings worth showing next to a result."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v not in (None, {}, ())}


def graph_sizes(max_num_seqs: int) -> tuple[int, ...]:
    """CUDA-graph batch sizes up to `max_num_seqs` (which is always one of them)."""
    return (*(s for s in H100_GRAPH_SIZES if s < max_num_seqs), max_num_seqs)


# Settings the tuned GPU profiles share (measured on the H100, BENCHMARKS.md): the engine
# core's Python, not the GPU, limits a batch of 358 on a 0.6B model.
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
)

# Each profile states every value it relies on, even where it equals EngineConfig's default.
PROFILES: dict[str, dict] = {
    "cpu": dict(
        profile="cpu",
        dtype="float32",
        enforce_eager=True,
        max_model_len=4096,
        max_num_seqs=BENCH_BATCH,
        gpu_memory_utilization=0.3,
        warmup_tokens=2,
        max_new_tokens_cap=1024,
    ),
    # Volta (7.0) and Turing (7.5): no bfloat16 and no FlashAttention there; vLLM's Triton
    # attention serves fp16 with an fp16 KV cache.
    "turing": dict(
        profile="turing",
        dtype="float16",
        kv_cache_dtype="auto",
        attention_backend="TRITON_ATTN",
        max_model_len=4096,
        max_num_seqs=BENCH_BATCH,
        cudagraph_capture_sizes=graph_sizes(BENCH_BATCH),
        gpu_memory_utilization=0.85,
        **_TUNED_GPU,
    ),
    # Ampere (8.0-8.7) and Ada (8.9): bf16 with a bf16 KV cache, so vLLM takes
    # FlashAttention 2 (an FP8 KV cache would move it to slower attention paths there).
    "ampere": dict(
        profile="ampere",
        dtype="bfloat16",
        kv_cache_dtype="auto",
        max_model_len=4096,
        max_num_seqs=BENCH_BATCH,
        cudagraph_capture_sizes=graph_sizes(BENCH_BATCH),
        gpu_memory_utilization=0.85,
        **_TUNED_GPU,
    ),
    # Hopper: bf16 with an FP8 KV cache on FlashAttention 3; 15 graph sizes up to 512
    # instead of vLLM's 67 (a shorter start, same speed).
    "h100": dict(
        profile="h100",
        dtype="bfloat16",
        kv_cache_dtype="fp8_e4m3",
        max_model_len=4096,
        max_num_seqs=512,
        cudagraph_capture_sizes=H100_GRAPH_SIZES,
        gpu_memory_utilization=0.85,
        **_TUNED_GPU,
    ),
    # Blackwell: the original course system's tuning on its RTX 5090 (FP8 weights and KV
    # cache, torch.compile, graphs sized for the batch of 358), bf16 instead of fp16.
    "rtx5090": dict(
        profile="rtx5090",
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
    ),
    "vllm-defaults": dict(profile="vllm-defaults", max_model_len=512),
}
PROFILE_NAMES = ("auto", *PROFILES)

# Compute capability major -> profile (devices.FAMILIES names the families).
FAMILY_PROFILES = {7: "turing", 8: "ampere", 9: "h100", 10: "rtx5090", 11: "rtx5090", 12: "rtx5090"}
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
    major = gpu.capability[0]
    profile = FAMILY_PROFILES.get(major, "turing" if major < 7 else "rtx5090")
    fitted, note = fit_to_memory(profile, gpu.memory_gib)
    reason = f"chosen by auto for {gpu.describe()}"
    if major < 7:
        reason += " (vLLM needs compute 7.0 or newer; it may refuse this GPU)"
    return profile, fitted, reason + (f"; {note}" if note else "")


def detect_profile() -> tuple[str, dict, str]:
    """`choose_profile` for this machine (NVML, no CUDA)."""
    from engine import devices

    return choose_profile(devices.gpu(), devices.vllm_build())


def make_config(profile: str = "auto", **overrides) -> EngineConfig:
    """Build the configuration of a profile, then apply field overrides (None = keep).

    `auto` picks the profile for this machine's GPU and fits it to the card's memory; an
    explicit override still wins over that fitting.
    """
    fitted: dict = {}
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
    return EngineConfig(**{**PROFILES[profile], **fitted, **given})


# Command-line flags: one per scalar field, so any profile value can be overridden.
_FLAG_FIELDS = (
    "model",
    "load_format",
    "dtype",
    "quantization",
    "kv_cache_dtype",
    "max_model_len",
    "max_num_seqs",
    "max_num_batched_tokens",
    "gpu_memory_utilization",
    "stream_interval",
    "attention_backend",
    "cudagraph_mode",
    "compile_backend",
    "block_size",
    "warmup_batch",
    "warmup_tokens",
    "max_new_tokens_cap",
    "max_batch",
    "max_queued_requests",
    "batch_submit",
    "cpu_kvcache_gib",
    "seed",
    "data_parallel_size_local",
    "data_parallel_address",
    "data_parallel_rpc_port",
    "data_parallel_join_timeout",
    "distributed_executor_backend",
)


def _parse_bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def _parse_thinking(text: str) -> bool | str:
    return "auto" if text.lower() == "auto" else _parse_bool(text)


def positive_int(text: str) -> int:
    """argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _parse_sizes(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """Add `--profile` and one override flag per engine setting to a parser."""
    group = parser.add_argument_group("engine (profile values, each overridable)")
    group.add_argument(
        "--profile",
        default="auto",
        choices=PROFILE_NAMES,
        help="named engine settings; auto picks from the GPU found (default)",
    )
    types = {f.name: f.type for f in dataclasses.fields(EngineConfig)}
    for name in _FLAG_FIELDS:
        kind = int if "int" in str(types[name]) else float if "float" in str(types[name]) else str
        group.add_argument(
            "--" + name.replace("_", "-"), type=kind, default=None, help=f"override {name}"
        )
    group.add_argument("--enforce-eager", type=_parse_bool, default=None, metavar="BOOL")
    group.add_argument("--async-scheduling", type=_parse_bool, default=None, metavar="BOOL")
    group.add_argument("--enable-prefix-caching", type=_parse_bool, default=None, metavar="BOOL")
    group.add_argument("--disable-log-stats", type=_parse_bool, default=None, metavar="BOOL")
    group.add_argument(
        "--thinking",
        type=_parse_thinking,
        default="auto",
        metavar="on|off|auto",
        help="course prompt for the benchmark and /predict: on = the course's exact ChatML, "
        "off = Qwen3's empty think block; auto (default): on for the course's fine-tuned "
        "model and random-weight models, off for others",
    )
    group.add_argument(
        "--cudagraph-capture-sizes", type=_parse_sizes, default=None, metavar="N,N,..."
    )
    group.add_argument(
        "--data-parallel-size",
        type=_parse_ranks,
        default=None,
        metavar="N|auto",
        help="engine ranks through vLLM's data parallelism, one per GPU (default 1; auto: "
        "every visible GPU; CUDA_VISIBLE_DEVICES chooses them); with ranks on other hosts, "
        "the total of all hosts",
    )


def _parse_ranks(text: str) -> int | str:
    return "auto" if text.lower() == "auto" else positive_int(text)


def resolve_ranks(value: int | str | None) -> int | None:
    """`--data-parallel-size`: a number as given, `auto` = every visible GPU (1 on the CPU)."""
    if value != "auto":
        return value
    from engine import devices

    return 1 if devices.runs_on_cpu() else len(devices.gpus())


def config_from_args(args: argparse.Namespace) -> EngineConfig:
    """The EngineConfig named by parsed command-line arguments."""
    names = (
        *_FLAG_FIELDS,
        "enforce_eager",
        "async_scheduling",
        "enable_prefix_caching",
        "disable_log_stats",
        "cudagraph_capture_sizes",
    )
    overrides = {n: getattr(args, n) for n in names}
    return make_config(
        args.profile,
        thinking=_thinking_override(args.thinking),
        data_parallel_size=resolve_ranks(args.data_parallel_size),
        **overrides,
    )


def _thinking_override(value):
    return None if value in (None, "auto") else value
