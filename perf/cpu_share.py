"""Which process of the engine is busy: CPU use of a command and each of its descendants.

    python -m perf.cpu_share --out runs/cpu.json -- python -m bench --workload full \
        --runs 5 --data-parallel-size 2 ...

Runs the command and samples, every `--interval` seconds, the CPU share of its process (the
app's front end: AsyncLLM's output handling for every rank) and of each descendant by its
process title (VLLM::EngineCore_DP0, VLLM::Worker, VLLM::DPCoordinator, ...). One process
near 100 % (a core) while the GPUs wait is where a step's time goes. Writes every sample
and, per process, the mean and the 90th percentile over the busy samples (those in which
vLLM's engine processes average over 50 %, i.e. the engine is stepping).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import psutil


def _name(proc: psutil.Process, root: int) -> str:
    try:
        title = "front end (the command)" if proc.pid == root else proc.name()
        return f"{title} [{proc.pid}]"
    except psutil.Error:
        return f"? [{proc.pid}]"


def sample(command: list[str], interval: float) -> tuple[int, list[dict]]:
    """Run `command`; return its exit code and the samples {process: cpu %}."""
    child = subprocess.Popen(command)
    root = psutil.Process(child.pid)
    known: dict[int, psutil.Process] = {}
    samples = []
    while child.poll() is None:
        try:
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            break
        row = {}
        for proc in procs:
            if proc.pid not in known:
                known[proc.pid] = proc
                proc.cpu_percent(None)  # the first reading starts the clock
                continue
            try:
                row[_name(proc, child.pid)] = known[proc.pid].cpu_percent(None)
            except psutil.Error:
                continue
        if row:
            samples.append({"t": round(time.monotonic(), 2), **row})
        time.sleep(interval)
    return child.wait(), samples


def busy_summary(samples: list[dict]) -> dict:
    """Per process: mean and p90 CPU % over the busy samples, those in which vLLM's engine
    processes (VLLM::EngineCore*) average over 50 %: the engine is stepping."""

    def stepping(sample: dict) -> bool:
        cores = [v for k, v in sample.items() if "EngineCore" in k]
        return bool(cores) and sum(cores) / len(cores) > 50

    busy = [s for s in samples if stepping(s)]
    per: dict[str, list[float]] = defaultdict(list)
    for s in busy:
        for name, value in s.items():
            if name != "t":
                per[name].append(value)
    table = {}
    for name, values in per.items():
        values.sort()
        table[name] = {
            "mean": round(sum(values) / len(values), 1),
            "p90": values[int(0.9 * (len(values) - 1))],
        }
    return {"busy_samples": len(busy), "processes": dict(sorted(table.items()))}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" not in argv:
        sys.exit("usage: python -m perf.cpu_share [--out FILE] [--interval S] -- COMMAND ...")
    split = argv.index("--")
    parser = argparse.ArgumentParser(prog="python -m perf.cpu_share", description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("runs/cpu_share.json"))
    parser.add_argument("--interval", type=float, default=0.5)
    args = parser.parse_args(argv[:split])
    code, samples = sample(argv[split + 1 :], args.interval)
    summary = busy_summary(samples)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"summary": summary, "samples": samples}, indent=1))
    for name, figures in summary["processes"].items():
        print(f"{figures['mean']:7.1f} % mean {figures['p90']:7.1f} % p90  {name}")
    return code


if __name__ == "__main__":
    sys.exit(main())
