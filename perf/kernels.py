"""Where a batch's time goes: GPU kernels against host Python, one engine, in this process.

    python -m perf.kernels --profile hopper --model qwen3-0.6b-random --workload full --out prof/
    python -m perf.kernels --question-set sample --model tiny-random --profile cpu --limit 8

Runs vLLM's offline `LLM.generate` with the engine core in this process
(`VLLM_ENABLE_V1_MULTIPROCESSING=0`, so torch.profiler sees its kernels), warms up with the
batch once, then runs it again while torch.profiler records the CUDA kernels and a sampler
thread records every thread's Python stack. Writes `profile.json` (wall time, engine steps,
GPU busy share, top kernels, top Python functions) and `stacks.txt` (collapsed stacks, one
per line with its sample count, for flame-graph tools). Without a GPU it reports the Python
side only.
"""

from __future__ import annotations

import collections
import json
import os
import sys
import threading
from pathlib import Path

from bench.workloads import WORKLOADS
from engine import config_from_args
from engine.models.sources import resolve_model
from perf.offline import offline_batch, start_llm, timed_generate, tool_parser, tool_questions


class StackSampler:
    """Samples the Python stacks of all other threads every `interval` seconds."""

    def __init__(self, interval: float = 0.001):
        self.interval = interval
        self.stacks: collections.Counter[str] = collections.Counter()
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stack-sampler", daemon=True)

    def _run(self) -> None:
        me = threading.get_ident()
        names = {}
        while not self._stop.wait(self.interval):
            if len(names) != threading.active_count():
                names = {t.ident: t.name for t in threading.enumerate()}
            for ident, frame in sys._current_frames().items():
                if ident == me:
                    continue
                parts = []
                while frame is not None:
                    code = frame.f_code
                    parts.append(f"{code.co_name} ({_short(code.co_filename)}:{frame.f_lineno})")
                    frame = frame.f_back
                thread = names.get(ident, str(ident))
                self.stacks[";".join([thread, *reversed(parts)])] += 1
            self.samples += 1

    def __enter__(self) -> StackSampler:
        self._old_switch = sys.getswitchinterval()
        sys.setswitchinterval(self.interval / 2)  # let the sampler in between bytecodes
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        sys.setswitchinterval(self._old_switch)

    def top_functions(self, thread: str, n: int = 30) -> list[dict]:
        """Functions by share of samples that had them on the stack (inclusive) or on top."""
        inclusive: collections.Counter[str] = collections.Counter()
        own: collections.Counter[str] = collections.Counter()
        total = 0
        for stack, count in self.stacks.items():
            frames = stack.split(";")
            if frames[0] != thread:
                continue
            total += count
            funcs = {_strip_line(f) for f in frames[1:]}
            for f in funcs:
                inclusive[f] += count
            own[_strip_line(frames[-1])] += count
        return [
            {
                "function": f,
                "inclusive": round(c / total, 4),
                "own": round(own[f] / total, 4),
            }
            for f, c in inclusive.most_common(n)
        ]


def _short(path: str) -> str:
    marker = "site-packages/"
    return path.split(marker, 1)[1] if marker in path else os.path.basename(path)


def _strip_line(frame: str) -> str:
    return frame.rsplit(":", 1)[0] + ")" if frame.endswith(")") else frame


KERNEL_KINDS = (  # (kind, substrings of the kernel name, lower case); first match wins
    ("kv-cache write", ("reshape_and_cache", "concat_and_cache")),
    ("attention", ("flash", "attention", "attn", "fmha", "pagedkv", "paged_kv")),
    ("matmul", ("gemm", "cutlass", "xmma", "nvjet", "cublas", "matmul", "wgmma")),
)
ENGINE_PARTS = ("schedule", "execute_model", "sample_tokens", "update_from_output")


def kernel_kind(name: str) -> str:
    """A kernel's kind from its name: attention, matmul, kv-cache write or other."""
    lowered = name.lower()
    for kind, needles in KERNEL_KINDS:
        if any(n in lowered for n in needles):
            return kind
    return "other"


def per_step(summary: dict, steps: int, layers: int) -> dict:
    """GPU kernel time per engine step, by kind, and attention per layer-step."""
    if not steps or "by_kind_ms" not in summary:
        return {}
    by_kind = summary["by_kind_ms"]
    return {
        "gpu_kernel_ms_per_step": round(summary["gpu_busy_s"] * 1e3 / steps, 3),
        "kernel_ms_per_step_by_kind": {k: round(v / steps, 3) for k, v in by_kind.items()},
        "attention_us_per_layer_step": round(1e3 * by_kind.get("attention", 0) / steps / layers, 2),
    }


def engine_split(sampler: StackSampler, thread: str) -> dict:
    """Share of the engine thread's samples inside each main part of an engine step."""
    rows = {
        r["function"].split(" (", 1)[0]: r["inclusive"] for r in sampler.top_functions(thread, 400)
    }
    return {part: rows.get(part, 0.0) for part in ENGINE_PARTS}


def kernel_summary(trace_path: Path, wall_s: float) -> dict:
    """GPU busy time (union of kernel intervals), time by kernel kind, the longest kernels."""
    events = json.loads(trace_path.read_text()).get("traceEvents", [])
    kernels = [e for e in events if e.get("cat") == "kernel" and "dur" in e]
    if not kernels:
        return {"kernels": 0}
    spans = sorted((e["ts"], e["ts"] + e["dur"]) for e in kernels)
    busy, end = 0.0, float("-inf")
    for start, stop in spans:
        if stop > end:
            busy += stop - max(start, end)
            end = stop
    per_name: collections.Counter[str] = collections.Counter()
    count: collections.Counter[str] = collections.Counter()
    by_kind: collections.Counter[str] = collections.Counter()
    for e in kernels:
        per_name[e["name"]] += e["dur"]
        count[e["name"]] += 1
        by_kind[kernel_kind(e["name"])] += e["dur"]
    window = (spans[-1][1] - spans[0][0]) / 1e6
    return {
        "kernels": len(kernels),
        "gpu_busy_s": round(busy / 1e6, 4),
        "kernel_window_s": round(window, 4),
        "gpu_busy_share_of_wall": round(busy / 1e6 / wall_s, 4),
        "by_kind_ms": {k: round(v / 1e3, 2) for k, v in by_kind.most_common()},
        "top_kernels": [
            {"name": name[:160], "total_ms": round(us / 1e3, 2), "calls": count[name]}
            for name, us in per_name.most_common(15)
        ],
    }


def main(argv: list[str] | None = None) -> int:
    parser = tool_parser("python -m perf.kernels", __doc__)
    parser.add_argument("--workload", choices=WORKLOADS, default="full")
    parser.add_argument("--out", type=Path, default=Path("runs/profile"))
    parser.add_argument("--no-kernels", action="store_true", help="skip torch.profiler")
    args = parser.parse_args(argv)
    pairs = tool_questions(parser, args)
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    args.out.mkdir(parents=True, exist_ok=True)
    config = config_from_args(args)
    inputs, sampling = offline_batch(config, args.workload, pairs, args.max_new_tokens)
    llm = start_llm(config)
    steps = _count_steps(llm)
    timed_generate(llm, inputs, sampling)  # warm-up
    timed, sampler, kernels = profiled_run(llm, inputs, sampling, steps, args)
    model = resolve_model(config.model)
    layers = json.loads((model.path / "config.json").read_text())["num_hidden_layers"]
    main_thread = threading.main_thread().name
    report = {
        "workload": args.workload,
        "n": len(pairs),
        "settings": config.summary(),
        "output_tokens": timed["output_tokens"],
        "wall_s": round(timed["wall_seconds"], 4),
        "tokens_per_second": round(timed["tokens_per_second"], 1),
        "engine_steps": steps[0],
        "ms_per_step": round(1e3 * timed["wall_seconds"] / steps[0], 3) if steps[0] else None,
        "python_samples": sampler.samples,
        "threads": sorted({s.split(";", 1)[0] for s in sampler.stacks}),
        "engine_thread_split": engine_split(sampler, main_thread),
        "top_python": sampler.top_functions(main_thread),
        **kernels,
        **per_step(kernels, steps[0], layers),
    }
    (args.out / "stacks.txt").write_text(
        "".join(f"{stack} {n}\n" for stack, n in sampler.stacks.most_common())
    )
    (args.out / "profile.json").write_text(json.dumps(report, indent=2))
    print(json.dumps({k: v for k, v in report.items() if k != "top_python"}, indent=2))
    for row in report["top_python"][:25]:
        print(f"{row['inclusive']:7.1%} {row['own']:7.1%}  {row['function']}")
    return 0


def profiled_run(llm, inputs, sampling, steps: list[int], args) -> tuple:
    """One timed batch under the stack sampler and, with CUDA, torch.profiler.

    Returns (timing, sampler, kernel summary); the steps counter restarts at 0 for it."""
    import torch

    cuda = torch.cuda.is_available() and not args.no_kernels
    trace = args.out / "trace.json"
    profiler = None
    if cuda:
        from torch.profiler import ProfilerActivity, profile

        profiler = profile(activities=[ProfilerActivity.CUDA])
        profiler.__enter__()
    steps[0] = 0
    with StackSampler() as sampler:
        timed = timed_generate(llm, inputs, sampling)
    if profiler is None:
        return timed, sampler, {"kernels": "no CUDA"}
    profiler.__exit__(None, None, None)
    profiler.export_chrome_trace(str(trace))
    kernels = kernel_summary(trace, timed["wall_seconds"])
    trace.unlink()
    return timed, sampler, kernels


def _count_steps(llm) -> list[int]:
    """Count model executions by wrapping the in-process executor's execute_model."""
    counter = [0]
    core = getattr(getattr(llm.llm_engine, "engine_core", None), "engine_core", None)
    executor = getattr(core, "model_executor", None)
    if executor is None:
        return counter
    inner = executor.execute_model

    def counted(*a, **kw):
        counter[0] += 1
        return inner(*a, **kw)

    executor.execute_model = counted
    return counter


if __name__ == "__main__":
    sys.exit(main())
