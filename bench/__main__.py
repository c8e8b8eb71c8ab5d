"""Headless benchmark: the Benchmark tab's code path from the command line.

    python -m bench --workload replay --limit 8 --model tiny-random --profile cpu --out r.json
    python -m bench --workload full --runs 3 --model qwen3-0.6b-random --profile h100 --out r.json
    python -m bench --workload replay --batch-submit hold,legacy --runs 3 ...   # submit paths

Starts the shared engine (warm-up included), runs the workload `--runs` times, prints a summary
table (the median run's figures when there are several) and writes JSON (+ CSV beside it).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
from pathlib import Path

from bench.report import result_path, summary_text, write_result
from bench.runner import BenchmarkResult, run_benchmark
from bench.submit import SUBMIT_MODES
from bench.workloads import WORKLOADS, BenchmarkSpec, workload_list
from engine import EngineService, add_config_arguments, config_from_args
from eval_data import DataError, FormatError, add_question_arguments, questions_from_args


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--workload",
        dest="workloads",
        type=workload_list,
        default=["answer"],
        help=f"one of {', '.join(WORKLOADS)}, or several joined by commas "
        "(one engine start serves them all)",
    )
    parser.add_argument("--limit", type=int, default=358, help="questions to send (1..358)")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    add_question_arguments(parser)
    parser.add_argument("--runs", type=int, default=1, help="measured runs after warm-up")
    parser.add_argument("--out", type=Path, default=None, help="result JSON (CSV written beside)")
    parser.add_argument(
        "--batch-submit",
        default="hold",
        help=f"how the batch reaches vLLM: {', '.join(SUBMIT_MODES)}, or several joined by "
        "commas (compared on one engine start)",
    )
    add_config_arguments(parser)
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    # Several submit modes (e.g. hold,legacy) are compared on one engine start.
    args.submits = [m for m in args.batch_submit.split(",") if m]
    bad = [m for m in args.submits if m not in SUBMIT_MODES]
    if bad or not args.submits:
        parser.error(
            f"unknown batch submit mode {(bad or [''])[0]!r}; choose from {', '.join(SUBMIT_MODES)}"
        )
    return args


async def run_once(service: EngineService, pairs, spec: BenchmarkSpec) -> BenchmarkResult:
    """One benchmark through the service, printing a progress line as it goes."""
    result = None
    async for event in service.relay(lambda engine: run_benchmark(engine, pairs, spec)):
        if isinstance(event, BenchmarkResult):
            result = event
        else:
            rouge = "" if event.rouge_l_mean is None else f"  ROUGE-L {event.rouge_l_mean:.4f}"
            print(
                f"\r  {event.completed}/{event.total} done  {event.output_tokens:,} tokens  "
                f"{event.tokens_per_second:,.0f} tok/s{rouge}   ",
                end="",
                file=sys.stderr,
                flush=True,
            )
    print(file=sys.stderr)
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config = config_from_args(args)
        pairs, label = questions_from_args(args)
        specs = [
            BenchmarkSpec(w, args.limit, args.max_new_tokens, question_set=label, submit=m)
            for w in args.workloads
            for m in args.submits
        ]
        for spec in specs:
            spec.validate(len(pairs))
    except (ValueError, DataError, FormatError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    service = EngineService(config, auto_restart=False)
    service.start()
    try:
        status = service.wait_ready()
        if not status.ready:
            print(f"error: engine did not start: {status.message}", file=sys.stderr)
            return 1
        # Runs of the specs take turns, so that a drifting machine affects each alike.
        results: dict[int, list[dict]] = {i: [] for i in range(len(specs))}
        for run in range(args.runs):
            for i, spec in enumerate(specs):
                print(
                    f"run {run + 1}/{args.runs}: {spec.workload}, {spec.limit} questions"
                    + (f", submit {spec.submit}" if len(args.submits) > 1 else ""),
                    file=sys.stderr,
                )
                results[i].append(asyncio.run(run_once(service, pairs, spec)).to_dict())
                print(
                    f"  -> {results[i][-1]['tokens_per_second']:,.1f} output tokens/s",
                    file=sys.stderr,
                )
        for i, spec in enumerate(specs):
            name = spec.workload + (f"-{spec.submit}" if len(args.submits) > 1 else "")
            out = args.out and result_path(args.out, name, len(specs) > 1)
            report(results[i], out)
    finally:
        service.shutdown()
    return 0


def report(results: list[dict], path: Path | None) -> None:
    """Print the median run's summary and write it (all runs' figures included) as JSON+CSV."""
    figures = [r["tokens_per_second"] for r in results]
    chosen = sorted(results, key=lambda r: r["tokens_per_second"])[len(results) // 2]
    merged = {
        **chosen,
        "runs_tokens_per_second": figures,
        "median_tokens_per_second": statistics.median(figures),
    }
    print(summary_text(merged))
    if len(figures) > 1:
        print(
            f"runs (tok/s): {' / '.join(f'{f:,.0f}' for f in figures)}; "
            f"median {statistics.median(figures):,.0f}"
        )
    if path:
        write_result(merged, path)
        print(f"wrote {path}")


if __name__ == "__main__":
    sys.exit(main())
