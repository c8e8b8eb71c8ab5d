"""Several engines sharing one GPU: does splitting the batch across engine processes help?

    python -m perf.replicas --replicas 2 --workload full --runs 3 --profile hopper \
        --model qwen3-0.6b-random
    python -m perf.replicas --question-set sample --model tiny-random --profile cpu --limit 8

Each replica is a separate process with its own offline vLLM engine on the same GPU and
`gpu_memory_utilization / replicas` of its memory; the questions are dealt out round-robin.
All replicas start, warm up, then run each batch at the same moment; a run's figure is all
output tokens over the time from the common start to the last replica's finish.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.workloads import WORKLOADS
from engine import config_from_args
from engine.settings.devices import runs_on_cpu
from engine.settings.flags import positive_int
from perf.offline import offline_batch, start_llm, timed_generate, tool_parser, tool_questions


def child(args, config, pairs) -> None:
    """One replica: build the engine, warm up, then run its shard whenever told to."""
    share = pairs[args.shard :: args.replicas]
    inputs, sampling = offline_batch(config, args.workload, share, args.max_new_tokens)
    overrides = {"gpu_memory_utilization": config.gpu_memory_utilization / args.replicas}
    if args.replicas > 1 and not runs_on_cpu():
        # Replicas start together: a fixed KV cache size keeps each one's memory profiling
        # from counting the others' allocations as its own.
        overrides["kv_cache_memory_bytes"] = int(args.kv_cache_gib * 2**30)
    llm = start_llm(config, **overrides)
    timed_generate(llm, inputs, sampling)  # warm-up
    print(json.dumps({"ready": args.shard}), flush=True)
    for run in range(args.runs):
        go = Path(args.sync) / f"go.{run}"
        while not go.exists():
            time.sleep(0.0005)
        tokens = timed_generate(llm, inputs, sampling)["output_tokens"]
        print(json.dumps({"run": run, "end": time.time(), "tokens": tokens}), flush=True)


def parent(args, argv: list[str]) -> dict:
    """Start the replicas, release each run at once to all, and add up what they did."""
    sync = Path(args.sync)
    sync.mkdir(parents=True, exist_ok=True)
    for f in sync.glob("go.*"):
        f.unlink()
    started = time.time()
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "perf.replicas", *argv, "--shard", str(i)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(args.replicas)
    ]

    def read(p) -> dict:
        for line in p.stdout:
            if line.startswith("{"):
                return json.loads(line)
        raise RuntimeError(f"replica exited with {p.wait()}")

    for p in procs:
        read(p)
    startup = time.time() - started
    runs = []
    for run in range(args.runs):
        t0 = time.time()
        (sync / f"go.{run}").touch()
        done = [read(p) for p in procs]
        wall = max(d["end"] for d in done) - t0
        tokens = sum(d["tokens"] for d in done)
        runs.append({"tokens": tokens, "wall_s": wall, "tokens_per_second": tokens / wall})
    for p in procs:
        p.wait()
    figures = [r["tokens_per_second"] for r in runs]
    return {
        "replicas": args.replicas,
        "workload": args.workload,
        "startup_s": round(startup, 1),
        "runs": runs,
        "median_tokens_per_second": statistics.median(figures),
    }


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = tool_parser("python -m perf.replicas", __doc__)
    parser.add_argument("--replicas", type=positive_int, default=2)
    parser.add_argument("--workload", choices=WORKLOADS, default="full")
    parser.add_argument("--runs", type=positive_int, default=3)
    parser.add_argument("--kv-cache-gib", type=float, default=6.0, help="per replica, if > 1")
    parser.add_argument("--sync", default="/tmp/bench-replicas")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--shard", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.kv_cache_gib <= 0:
        parser.error("--kv-cache-gib must be more than 0")
    if args.replicas > args.limit:
        parser.error(f"--replicas ({args.replicas}) must not exceed --limit ({args.limit})")
    pairs = tool_questions(parser, args)
    config = config_from_args(args)
    if args.shard is not None:
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        child(args, config, pairs)
        return 0
    report = parent(args, argv)
    print(json.dumps(report, indent=2))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
