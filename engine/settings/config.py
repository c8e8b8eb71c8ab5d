"""The engine configuration: one validated object that decides how the engine is built, warmed
and bounded.

    cfg = EngineConfig(profile="cpu", model="tiny-random", max_num_seqs=64)

Named profiles and the automatic choice per GPU family are in `engine.settings.profiles`; the
command-line flags in `engine.settings.flags`; the translation into vLLM's own arguments in
`engine.runtime.vllm_args`. The same object feeds the app, the HTTP API, the headless benchmark and
the tests.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

DEFAULT_MODEL = "Qwen/Qwen3-0.6B"
BENCH_BATCH = 358  # the course evaluation's batch: every question submitted at once
MAX_API_PROCESSES = 16


@dataclass(frozen=True)
class EngineConfig:
    """Everything that decides how the engine is built, warmed and bounded."""

    profile: str = "cpu"
    model: str = DEFAULT_MODEL
    load_format: str = "auto"
    dtype: str = "auto"
    quantization: str | None = None
    kv_cache_dtype: str = "auto"
    # Context length; None: the model's own (40,960 for Qwen3-0.6B), shortened by vLLM to what
    # the KV cache holds.
    max_model_len: int | None = 4096
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
    # Scheduling priority (nice) of vLLM's processes: on vLLM's CPU build the engine's threads
    # take every core they can get, so above 0 the web processes (the HTTP API, the UI) come
    # first when both want a core and the engine takes the rest.
    engine_nice: int = 0
    # Start-up warm-up: a greedy batch of `warmup_batch` requests (the benchmark's shape) of
    # `warmup_tokens` each, then sampled batches of every size class users can make.
    warmup_batch: int = BENCH_BATCH
    warmup_tokens: int = 8
    max_new_tokens_cap: int = 2048
    max_batch: int = 1024
    # The one admission limit: requests in the engine (running and waiting, from the chat, the
    # course API and the OpenAI API together) beyond which a new one is told "busy, try again
    # shortly" at once. None: twice what the engine runs at a time (max_num_seqs per rank), so
    # that a waiting request waits for at most one round of running ones.
    max_queued_requests: int | None = None
    # Course prompt (benchmark, /predict): thinking on, off, or None = by model
    # (engine.qwen3.prompt.default_thinking; on for random-weight models).
    thinking: bool | None = None
    seed: int = 0
    # vLLM's data parallelism: one engine rank per GPU behind the one AsyncLLM (its DP
    # coordinator balances the requests). Several hosts: this host runs `data_parallel_size_local`
    # ranks; the others join at `data_parallel_address`:`data_parallel_rpc_port`
    # (`python -m launch.rank`).
    data_parallel_size: int = 1
    data_parallel_size_local: int | None = None
    data_parallel_address: str | None = None
    data_parallel_rpc_port: int | None = None
    data_parallel_join_timeout: float = 600.0  # seconds the head waits for remote ranks
    # vLLM's executor inside each rank: None (vLLM's choice; `mp`, a worker process, with data
    # parallelism) or `uni` (the model runs in the rank's own process).
    distributed_executor_backend: str | None = None
    # Processes that serve the HTTP API and the UI's chats, each its own client of vLLM's
    # engine core (vLLM's multi-API-server mode, `engine.runtime.slots`): this one and
    # `api_processes - 1` more (`launch.api_processes`).
    api_processes: int = 1
    extra_engine_args: dict = field(default_factory=dict)
    # Why this profile, set by `auto`: "chosen by auto for NVIDIA A10G (Ampere, ...)".
    profile_reason: str = ""

    def __post_init__(self):
        if self.max_model_len is not None and self.max_model_len < 64:
            raise ValueError(f"max_model_len must be at least 64, got {self.max_model_len}")
        if not 0.05 <= self.gpu_memory_utilization <= 0.99:
            raise ValueError("gpu_memory_utilization must be within 0.05..0.99")
        for name in (
            "max_num_seqs",
            "max_new_tokens_cap",
            "max_batch",
            "stream_interval",
            "warmup_tokens",
            "cpu_kvcache_gib",
            "data_parallel_size",
            "api_processes",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.api_processes > MAX_API_PROCESSES:
            raise ValueError(
                f"api_processes must be at most {MAX_API_PROCESSES}, got {self.api_processes}"
            )
        if self.max_queued_requests is not None and self.max_queued_requests < 1:
            raise ValueError(
                f"max_queued_requests must be at least 1, got {self.max_queued_requests}"
            )
        if not 0 <= self.engine_nice <= 19:
            raise ValueError(f"engine_nice must be within 0..19, got {self.engine_nice}")
        if self.warmup_batch < 0:
            raise ValueError("warmup_batch must be 0 (no warm-up) or more")
        if self.load_format not in ("auto", "dummy", "safetensors", "pt"):
            raise ValueError(f"unknown load_format {self.load_format!r}")
        self._check_data_parallel()
        if self.compile_backend not in (None, "inductor", "eager", "none"):
            raise ValueError(
                f"compile_backend must be inductor, eager or none, got {self.compile_backend!r}"
            )

    def _check_data_parallel(self) -> None:
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

    @property
    def local_ranks(self) -> int:
        """Data-parallel ranks (GPUs) this host runs."""
        return self.data_parallel_size_local or self.data_parallel_size

    @property
    def remote_ranks(self) -> int:
        """Data-parallel ranks that other hosts run (`python -m launch.rank` there)."""
        return self.data_parallel_size - self.local_ranks

    @property
    def admission_limit(self) -> int:
        """Requests the engine holds at most (running and waiting) before refusing new ones."""
        if self.max_queued_requests is not None:
            return self.max_queued_requests
        return 2 * self.max_num_seqs * self.data_parallel_size

    def summary(self) -> dict:
        """The settings worth showing next to a result."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v not in (None, {}, ())}
