"""The same workload through vLLM's offline `LLM.generate` (no service, no streaming).

    python -m bench.bare --workload full --runs 3 --model qwen3-0.6b-random --profile h100

Prints JSON: per-run output tokens/s and the median; compare with `python -m bench`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from bench.runner import WORKLOADS, BenchmarkSpec, build_params
from engine import add_config_arguments, config_from_args
from engine.chat import build_messages, render_prompt
from engine.models import resolve_model
from eval_data import load_course_file, official_question_set


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.bare",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--workload", choices=WORKLOADS, default="replay")
    parser.add_argument("--limit", type=int, default=358)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None)
    add_config_arguments(parser)
    args = parser.parse_args(argv)
    from transformers import AutoTokenizer

    from engine.bare import offline_runs

    config = config_from_args(args)
    tokenizer = AutoTokenizer.from_pretrained(str(resolve_model(config.model).path))
    pairs = load_course_file(args.data or official_question_set())[: args.limit]
    spec = BenchmarkSpec(args.workload, len(pairs), args.max_new_tokens)

    def encode(text: str) -> list[int]:
        return tokenizer.encode(text, add_special_tokens=False)

    prompts = [encode(render_prompt(tokenizer, build_messages([], p.question))) for p in pairs]
    result = offline_runs(config, prompts, build_params(encode, pairs, spec), args.runs)
    figures = [r["tokens_per_second"] for r in result["runs"]]
    report = {
        "path": "LLM.generate",
        "workload": args.workload,
        "n": len(pairs),
        "profile": config.profile,
        **result,
        "median_tokens_per_second": statistics.median(figures),
    }
    print(json.dumps(report, indent=2))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
