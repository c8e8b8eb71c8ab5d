"""The same workloads through vLLM's offline `LLM.generate` (no service, no streaming).

    python -m perf.bare --workload replay,full --runs 3 --model qwen3-0.6b-random \
        --profile hopper [--in-process] --out bare.json
    python -m perf.bare --question-set sample --model tiny-random --profile cpu --limit 8

One engine start for all workloads; with several, writes `bare.<workload>.json` beside
`--out`. `--in-process` keeps vLLM's engine core in this process
(`VLLM_ENABLE_V1_MULTIPROCESSING=0`) instead of its usual separate process. Prints JSON:
per-run output tokens/s and the median; compare with `python -m bench`.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
from pathlib import Path

from bench.report import result_path
from bench.workloads import workload_list
from engine import config_from_args
from engine.settings.flags import positive_int
from perf.offline import offline_runs, offline_workloads, tool_parser, tool_questions


def main(argv: list[str] | None = None) -> int:
    parser = tool_parser("python -m perf.bare", __doc__)
    parser.add_argument(
        "--workload", type=workload_list, default=["replay"], help="e.g. replay,full"
    )
    parser.add_argument("--runs", type=positive_int, default=3)
    parser.add_argument("--in-process", action="store_true", help="engine core in this process")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    pairs = tool_questions(parser, args)
    if args.in_process:
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    config = config_from_args(args)
    batches = offline_workloads(config, args.workload, pairs, args.max_new_tokens)
    results = offline_runs(config, batches, args.runs)
    for workload, result in results.items():
        figures = [r["tokens_per_second"] for r in result["runs"]]
        report = {
            "path": "LLM.generate" + (", engine core in-process" if args.in_process else ""),
            "workload": workload,
            "n": len(pairs),
            "profile": config.profile,
            "settings": config.summary(),
            **result,
            "median_tokens_per_second": statistics.median(figures),
        }
        print(json.dumps(report, indent=2))
        if args.out:
            out = result_path(args.out, workload, len(results) > 1)
            out.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
