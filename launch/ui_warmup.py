"""One short chat through each UI worker, as a page sends it, before the app gives out its link.

The engine is warm once it says ready, but each UI worker's first chat still pays for what a
process sets up on first use: Gradio's queue and its event stream, the chat handler's first
redraws, the worker's pooled client to the server and the server's private chat route. That
cost landed on the first visitors (16 users' first chunk 1.4 s in the first wave after ready,
0.24 s later). Here each worker gets one chat through its own page path (Gradio's client: the
queue, server-sent events, the private socket, the engine), all workers at once.

    seconds = warm_workers(["http://127.0.0.1:41001", ...], auth="user:pass")
"""

from __future__ import annotations

import concurrent.futures
import threading
import time

from engine.qwen3.prompt import sampling_defaults

PROMPT = "warm-up"
TOKENS = 4


def warm_worker(url: str, auth: str | None = None, timeout: float = 60.0) -> None:
    """One thinking and one plain chat of a few tokens through `url`'s chat endpoint; raises
    what the worker answered if it fails."""
    from gradio_client import Client

    login = tuple(auth.split(":", 1)) if auth else None
    client = Client(url, auth=login, verbose=False, download_files=False)
    try:
        for thinking in (True, False):  # each with its mode's sampling, as the page sets it
            mode = sampling_defaults(thinking)
            settings = (mode.temperature, mode.top_p, mode.top_k, TOKENS)
            job = client.submit(PROMPT, "", thinking, *settings, api_name="/chat")
            job.result(timeout=timeout)
    finally:
        client.close()


def warm_workers(urls: list[str], auth: str | None = None, timeout: float = 60.0) -> float:
    """Warm every worker at once; the seconds it took. A worker that fails is reported and
    left (the page still works; its first visitor pays)."""
    began = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(urls) or 1) as pool:
        futures = {pool.submit(warm_worker, url, auth, timeout): url for url in urls}
        for future in concurrent.futures.as_completed(futures):
            error = future.exception()
            if error is not None:
                print(f"[ui] warm-up of {futures[future]} failed: {error}", flush=True)
    return time.monotonic() - began


def warm_in_background(urls: list[str], auth: str | None = None) -> threading.Thread:
    """`warm_workers` on a thread of its own; it says when the workers are warm."""

    def run() -> None:
        seconds = warm_workers(urls, auth)
        print(f"[ui] {len(urls)} UI worker(s) warm in {seconds:.1f} s", flush=True)

    thread = threading.Thread(target=run, name="ui-warm-up", daemon=True)
    thread.start()
    return thread
