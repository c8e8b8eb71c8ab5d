"""Side-by-side engine settings on one machine: each variant gets a fresh engine.

    python -m perf.compare --variants untuned,rtx5090,h100 --workloads replay,full \
        --runs 3 --model qwen3-0.6b-random --out results/

Runs `python -m bench` once per variant (all workloads on one engine start) and, with
`--bare`, vLLM's offline `LLM.generate` with the hopper profile (`python -m perf.bare`); prints
a Markdown table of every run, the median and the start-up time. Flags after `--` go to every
run.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench.report import result_path
from bench.workloads import workload_list
from eval_data import add_question_arguments
from perf.offline import command_parser

ALL_SIZES = ",".join(map(str, [1, 2, 4, *range(8, 256, 8), *range(256, 513, 16)]))

# name -> extra `python -m bench` flags (the `h100` variants are the hopper profile, tuned there)
VARIANTS = {
    "untuned": ["--profile", "untuned"],
    "rtx5090": ["--profile", "rtx5090"],
    "h100": ["--profile", "hopper"],
    "h100-second": ["--profile", "hopper"],  # run after h100: a start with a warm compile cache
    "h100-prefix": ["--profile", "hopper", "--enable-prefix-caching", "true"],
    "h100-eager": ["--profile", "hopper", "--compile-backend", "eager"],
    "h100-allgraphs": ["--profile", "hopper", "--cudagraph-capture-sizes", ALL_SIZES],
    "h100-piecewise": ["--profile", "hopper", "--cudagraph-mode", "PIECEWISE"],
    "h100-bf16kv": ["--profile", "hopper", "--kv-cache-dtype", "auto"],
    "h100-triton": ["--profile", "hopper", "--attention-backend", "TRITON_ATTN"],
    "h100-seqs384": ["--profile", "hopper", "--max-num-seqs", "384"],
    "h100-stream1": ["--profile", "hopper", "--stream-interval", "1"],
    "h100-block64": ["--profile", "hopper", "--block-size", "64"],
    "h100-nostats": ["--profile", "hopper", "--disable-log-stats", "true"],
    "h100-seqs358": ["--profile", "hopper", "--max-num-seqs", "358"],
}
RENAMED = {"vllm-defaults": "untuned"}  # variant names of earlier releases


def _run(module: str, args, target: Path, log: Path, flags: list[str]) -> int:
    """Run `python -m module` with the flags every comparison shares; output goes to `log`."""
    common = ["--workload", ",".join(args.workloads), "--runs", str(args.runs)]
    common += ["--model", args.model]
    common += ["--limit", str(args.limit), "--question-set", args.question_set]
    common += ["--data", str(args.data)] if args.data else []
    common += ["--out", str(target)]
    with open(log, "w") as out:
        cmd = [sys.executable, "-m", module, *common, *flags, *args.extra]
        return subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT).returncode


def _row(variant: str, workload: str, code: int, path: Path) -> dict:
    """One table row from a result file, or the error that left none."""
    if code != 0 or not path.exists():
        return {"variant": variant, "workload": workload, "error": f"exit {code}, see its log"}
    r = json.loads(path.read_text())
    if "runs" in r:  # perf.bare
        figures, startup = (
            [x["tokens_per_second"] for x in r["runs"]],
            r["startup_seconds_incl_warmup"],
        )
    else:
        figures, startup = r["runs_tokens_per_second"], r["startup_seconds"]
    return {
        "variant": variant,
        "workload": workload,
        "runs": figures,
        "median": r["median_tokens_per_second"],
        "startup_s": round(startup, 1),
    }


def _run_rows(label: str, module: str, tag: str, flags: list[str], args, out: Path) -> list[dict]:
    """Run `python -m module` once (all workloads on one engine start); a row per workload."""
    target = out / f"{tag}.json"
    code = _run(module, args, target, out / f"{tag}.log", flags)
    several = len(args.workloads) > 1
    return [_row(label, w, code, result_path(target, w, several)) for w in args.workloads]


def run_variant(name: str, flags: list[str], args, out: Path) -> list[dict]:
    """Run one variant in a fresh process (all workloads on one engine start)."""
    return _run_rows(name, "bench", name, flags, args, out)


def run_bare(args, out: Path) -> list[dict]:
    """vLLM's offline LLM.generate with the hopper profile: engine core in its own process
    (vLLM's default), then in this one; all workloads on one engine start each."""
    return [
        *_run_rows(
            "bare LLM.generate (h100)", "perf.bare", "bare", ["--profile", "hopper"], args, out
        ),
        *_run_rows(
            "bare LLM.generate, in-process core (h100)",
            "perf.bare",
            "bare-inproc",
            ["--profile", "hopper", "--in-process"],
            args,
            out,
        ),
    ]


def table(rows: list[dict]) -> str:
    lines = ["| variant | workload | runs (tok/s) | median | start-up s |", "|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['variant']} | {r['workload']} | {r['error']} | | |")
        else:
            runs = " / ".join(f"{x:,.0f}" for x in r["runs"])
            lines.append(
                f"| {r['variant']} | {r['workload']} | {runs} | {r['median']:,.0f} | "
                f"{r['startup_s']} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = command_parser("python -m perf.compare", __doc__)
    parser.add_argument(
        "--variants",
        default="untuned,rtx5090,h100",
        help=f"comma-separated, from: {', '.join(VARIANTS)}",
    )
    parser.add_argument("--workloads", type=workload_list, default=["replay", "full"])
    add_question_arguments(parser)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--limit", type=int, default=358)
    parser.add_argument("--model", default="qwen3-0.6b-random")
    parser.add_argument("--bare", action="store_true", help="also time LLM.generate (h100)")
    parser.add_argument("--out", type=Path, default=Path("runs/compare"))
    parser.add_argument("extra", nargs="*", help="flags passed to every run (after --)")
    args = parser.parse_args(argv)
    names = [RENAMED.get(v, v) for v in args.variants.split(",") if v]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant {unknown[0]!r}")
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in names:
        rows += run_variant(name, VARIANTS[name], args, args.out)
        print(table(rows[-len(args.workloads) :]), flush=True)
    if args.bare:
        rows += run_bare(args, args.out)
    (args.out / "compare.json").write_text(json.dumps(rows, indent=2))
    print("\n" + table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
