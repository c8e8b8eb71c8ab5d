"""The running engine: the one engine object (`engine`) with its `lifecycle`, the start-up
`warmup`, the `service` that runs it on a loop thread of its own, vLLM's arguments
(`vllm_args`), stats per rank (`stats`) and daemon-thread builds (`threads`)."""
