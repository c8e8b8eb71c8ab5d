"""Data-parallel ranks on another host, joining the app's engine (vLLM's headless mode).

The app on the head host runs some ranks itself and waits for the others:

    python app.py --data-parallel-size 4 --data-parallel-size-local 2 \
        --data-parallel-address HEAD_IP --data-parallel-rpc-port 13345 [engine flags]

Each other host starts its share with the same engine flags (profile, model, every override),
so that all ranks build the same engine:

    python -m launch.rank --data-parallel-start-rank 2 --data-parallel-size 4 \
        --data-parallel-size-local 2 --data-parallel-address HEAD_IP \
        --data-parallel-rpc-port 13345 [the same engine flags]

This is vLLM's own `vllm serve --headless`, fed from the app's engine configuration; it runs
until stopped (Ctrl-C or SIGTERM) and does not stop by itself when the head exits: restart it
with the head.
"""

from __future__ import annotations

import argparse
import sys

from engine.models.sources import resolve_model
from engine.settings.config import EngineConfig
from engine.settings.flags import add_config_arguments, config_from_args, positive_int


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, EngineConfig]:
    parser = argparse.ArgumentParser(
        prog="python -m launch.rank",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--data-parallel-start-rank",
        type=positive_int,
        required=True,
        help="the first rank this host runs (the head runs ranks 0..local-1)",
    )
    add_config_arguments(parser)
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
    except ValueError as err:
        parser.error(str(err))
    missing = [
        flag
        for flag, value in (
            ("--data-parallel-size", args.data_parallel_size),
            ("--data-parallel-size-local", config.data_parallel_size_local),
            ("--data-parallel-address", config.data_parallel_address),
            ("--data-parallel-rpc-port", config.data_parallel_rpc_port),
        )
        if value is None
    ]
    if missing:
        parser.error(f"a rank on another host needs {', '.join(missing)} (the head's values)")
    last = args.data_parallel_start_rank + config.local_ranks
    if last > config.data_parallel_size:
        parser.error(
            f"ranks {args.data_parallel_start_rank}..{last - 1} exceed --data-parallel-size "
            f"{config.data_parallel_size}"
        )
    return args, config


def main(argv: list[str] | None = None) -> int:
    args, config = parse_args(argv)
    from vllm.entrypoints.cli.serve import run_headless

    from engine.runtime.vllm_args import headless_args, prepare_environment

    prepare_environment(config)
    first = args.data_parallel_start_rank
    print(
        f"[rank] ranks {first}..{first + config.local_ranks - 1} of {config.data_parallel_size}, "
        f"joining {config.data_parallel_address}:{config.data_parallel_rpc_port}",
        flush=True,
    )
    run_headless(headless_args(config, resolve_model(config.model), first))
    return 0


if __name__ == "__main__":
    sys.exit(main())
