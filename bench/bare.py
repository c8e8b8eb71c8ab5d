"""The same workloads through vLLM's offline `LLM.generate` (no service, no streaming).

    python -m bench.bare --workload replay,full --runs 3 --model qwen3-0.6b-random \
        --profile h100 [--in-process] --out bare.json

One engine start for all workloads; with several, writes `bare.<workload>.json` beside
`--out`. `--in-process` keeps vLLM's engine core in this process
(`VLLM_ENABLE_V1_MULTIPROCESSING=0`) instead of its usual separate process. Prints JSON:
per-run output tokens/s and the median; compare with `python -m bench`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

from bench.report import result_path
from bench.runner import WORKLOADS, BenchmarkSpec, build_params
from engine import add_config_arguments, config_from_args
from engine.chat import build_messages, render_prompt, resolve_thinking
from engine.config import positive_int
from engine.models import resolve_model
from eval_data import load_course_file, official_question_set


def offline_workloads(
    config, workloads: list[str], data: Path | None, limit: int | slice, max_new_tokens: int
) -> dict:
    """Prompt ids and per-request params of each workload, for `engine.bare`'s offline calls.

    `limit` may also be a slice of the question set (e.g. a replica's share)."""
    from transformers import AutoTokenizer

    model = resolve_model(config.model)
    tokenizer = AutoTokenizer.from_pretrained(str(model.path))
    thinking = resolve_thinking(config.thinking, config.model, model.random_weights)
    pairs = load_course_file(data or official_question_set())
    pairs = pairs[limit] if isinstance(limit, slice) else pairs[:limit]

    def encode(text: str) -> list[int]:
        return tokenizer.encode(text, add_special_tokens=False)

    prompts = [
        encode(render_prompt(tokenizer, build_messages([], p.question), thinking)) for p in pairs
    ]
    return {
        w: (prompts, build_params(encode, pairs, BenchmarkSpec(w, len(pairs), max_new_tokens)))
        for w in workloads
    }


def _workloads(text: str) -> list[str]:
    names = [w for w in text.split(",") if w]
    bad = [w for w in names if w not in WORKLOADS]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"workloads must be from {', '.join(WORKLOADS)}")
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.bare",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--workload", type=_workloads, default=["replay"], help="e.g. replay,full")
    parser.add_argument("--limit", type=positive_int, default=358)
    parser.add_argument("--max-new-tokens", type=positive_int, default=256)
    parser.add_argument("--runs", type=positive_int, default=3)
    parser.add_argument("--in-process", action="store_true", help="engine core in this process")
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None)
    add_config_arguments(parser)
    args = parser.parse_args(argv)
    if args.in_process:
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    from engine.bare import offline_runs

    config = config_from_args(args)
    batches = offline_workloads(config, args.workload, args.data, args.limit, args.max_new_tokens)
    results = offline_runs(config, batches, args.runs)
    for workload, result in results.items():
        figures = [r["tokens_per_second"] for r in result["runs"]]
        report = {
            "path": "LLM.generate" + (", engine core in-process" if args.in_process else ""),
            "workload": workload,
            "n": len(batches[workload][0]),
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
