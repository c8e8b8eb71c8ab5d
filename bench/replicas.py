"""Several engines sharing one GPU: does splitting the batch across engine processes help?

    python -m bench.replicas --replicas 2 --workload full --runs 3 --profile h100 \
        --model qwen3-0.6b-random

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

from bench.runner import WORKLOADS
from engine import add_config_arguments, config_from_args
from engine.config import positive_int
from engine.models import resolve_model


def child(args, config) -> None:
    """One replica: build the engine, warm up, then run the shard whenever told to."""
    from vllm import LLM

    from bench.bare import offline_workloads
    from engine.bare import offline_requests
    from engine.engine import engine_kwargs_for

    share = slice(args.shard, args.limit, args.replicas)
    batches = offline_workloads(config, [args.workload], args.data, share, args.max_new_tokens)
    inputs, sampling = offline_requests(*batches[args.workload])
    model = resolve_model(config.model)
    kwargs = engine_kwargs_for(config, model)
    kwargs["gpu_memory_utilization"] = config.gpu_memory_utilization / args.replicas
    if args.replicas > 1 and not config.on_cpu:
        # Replicas start together: a fixed KV cache size keeps each one's memory profiling
        # from counting the others' allocations as its own.
        kwargs["kv_cache_memory_bytes"] = int(args.kv_cache_gib * 2**30)
    llm = LLM(**kwargs)
    llm.generate(inputs, sampling, use_tqdm=False)
    print(json.dumps({"ready": args.shard}), flush=True)
    for run in range(args.runs):
        go = Path(args.sync) / f"go.{run}"
        while not go.exists():
            time.sleep(0.0005)
        outs = llm.generate(inputs, sampling, use_tqdm=False)
        end = time.time()
        tokens = sum(len(o.outputs[0].token_ids) for o in outs)
        print(json.dumps({"run": run, "end": end, "tokens": tokens}), flush=True)


def parent(args, argv: list[str]) -> dict:
    """Start the replicas, release each run at once to all, and add up what they did."""
    sync = Path(args.sync)
    sync.mkdir(parents=True, exist_ok=True)
    for f in sync.glob("go.*"):
        f.unlink()
    started = time.time()
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "bench.replicas", *argv, "--shard", str(i)],
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
    parser = argparse.ArgumentParser(prog="python -m bench.replicas", description=__doc__)
    parser.add_argument("--replicas", type=positive_int, default=2)
    parser.add_argument("--workload", choices=WORKLOADS, default="full")
    parser.add_argument("--limit", type=positive_int, default=358)
    parser.add_argument("--max-new-tokens", type=positive_int, default=256)
    parser.add_argument("--runs", type=positive_int, default=3)
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--kv-cache-gib", type=float, default=6.0, help="per replica, if > 1")
    parser.add_argument("--sync", default="/tmp/bench-replicas")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--shard", type=int, default=None, help=argparse.SUPPRESS)
    add_config_arguments(parser)
    args = parser.parse_args(argv)
    if args.kv_cache_gib <= 0:
        parser.error("--kv-cache-gib must be more than 0")
    if args.replicas > args.limit:
        parser.error(f"--replicas ({args.replicas}) must not exceed --limit ({args.limit})")
    config = config_from_args(args)
    if args.shard is not None:
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        child(args, config)
        return 0
    report = parent(args, argv)
    print(json.dumps(report, indent=2))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
