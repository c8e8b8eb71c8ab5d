"""The Benchmark tab: run the course evaluation on the shared engine and watch it live.

One benchmark at a time (a second click is told so); chat keeps working meanwhile. Cancel
aborts every request of the run inside the engine.
"""

from __future__ import annotations

import tempfile
import threading
import time
from contextlib import aclosing
from pathlib import Path

import gradio as gr

from bench import WORKLOADS, BenchmarkError, BenchmarkResult, BenchmarkSpec, run_benchmark
from bench.report import (
    comparison_figure,
    rouge_figure,
    samples_csv,
    summary_markdown,
    throughput_figure,
    to_json,
)
from engine import EngineService
from eval_data import DataError, FormatError, load_course_file, official_question_set

MAX_UPLOAD_BYTES = 4 * 2**20
TABLE_COLUMNS = [
    "#",
    "question",
    "reference",
    "prediction",
    "ROUGE-L",
    "tokens",
    "TTFT s",
    "latency s",
]
REFRESH_SECONDS = 0.5
TIMELINE_KEYS = ("elapsed_s", "output_tokens", "tokens_per_second")


class BenchmarkSession:
    """State shared by every visitor: the run lock, earlier runs, the results folder."""

    def __init__(self, service: EngineService):
        self.service = service
        self.lock = threading.Lock()
        self.owner: str | None = None  # session of the visitor whose run is going
        self.stop = threading.Event()
        self.runs: list[dict] = []
        self.results_dir = Path(tempfile.mkdtemp(prefix="qwen3-bench-"))

    def load_pairs(self, upload: str | None):
        """The official set, or an uploaded course-format file (size-checked)."""
        if upload:
            path = Path(upload)
            if path.suffix.lower() != ".txt":
                raise FormatError("upload a .txt file in the course format")
            if path.stat().st_size > MAX_UPLOAD_BYTES:
                raise FormatError(
                    f"the uploaded file is larger than {MAX_UPLOAD_BYTES // 2**20} MiB"
                )
            return load_course_file(path)
        return load_course_file(official_question_set())

    def save(self, result: dict) -> list[str]:
        """Write the run's JSON and CSV under server-chosen names; return their paths."""
        stem = self.results_dir / f"run{len(self.runs):03d}-{result['workload']}-n{result['n']}"
        json_path, csv_path = stem.with_suffix(".json"), stem.with_suffix(".csv")
        json_path.write_text(to_json(result), encoding="utf-8")
        csv_path.write_text(samples_csv(result["samples"]), encoding="utf-8")
        return [str(json_path), str(csv_path)]


def table_rows(samples) -> list[list]:
    """Per-question rows for the details table, in question order."""
    rows = []
    for s in sorted(samples, key=lambda s: s.index):
        rows.append(
            [
                s.index + 1,
                s.question,
                s.reference,
                s.prediction,
                None if s.rouge_l is None else round(s.rouge_l, 4),
                s.output_tokens,
                None if s.ttft_s is None else round(s.ttft_s, 3),
                round(s.latency_s, 3),
            ]
        )
    return rows


def progress_markdown(event) -> str:
    rouge = "" if event.rouge_l_mean is None else f" · ROUGE-L {event.rouge_l_mean:.4f}"
    return (
        f"⏱️ **{event.completed} / {event.total}** finished · {event.output_tokens:,} tokens · "
        f"{event.elapsed_s:.1f} s · **{event.tokens_per_second:,.0f} tok/s**{rouge}"
    )


def make_run(session: BenchmarkSession):
    """The Run handler: validates, takes the lock, streams figures, saves results."""

    async def run(
        workload: str, limit: float, max_new_tokens: float, upload: str | None, request: gr.Request
    ):
        status = session.service.status()
        if not status.ready:
            raise gr.Error(f"The engine is not ready yet ({status.phase}: {status.message}).")
        try:
            pairs = session.load_pairs(upload)
            spec = BenchmarkSpec(
                str(workload),
                _whole(limit, "number of questions"),
                _whole(max_new_tokens, "max new tokens"),
            )
            spec.validate(len(pairs))
        except (BenchmarkError, DataError, FormatError, ValueError) as err:
            raise gr.Error(str(err)) from None
        if not session.lock.acquire(blocking=False):
            raise gr.Error("A benchmark is already running; wait for it or cancel it.")
        session.owner, shown, points = request.session_hash, 0.0, []
        session.stop.clear()
        try:
            yield "⏳ submitting the batch…", *[gr.skip()] * 6
            relay = session.service.relay(lambda e: run_benchmark(e, pairs, spec))
            async with aclosing(relay) as events:  # leaving early aborts the run's requests
                async for event in events:
                    if session.stop.is_set():
                        yield CANCELLED, *[gr.skip()] * 6
                        return
                    if isinstance(event, BenchmarkResult):
                        break
                    point = (event.elapsed_s, event.output_tokens, event.tokens_per_second)
                    points.append(dict(zip(TIMELINE_KEYS, point, strict=True)))
                    if time.monotonic() - shown >= REFRESH_SECONDS:
                        shown = time.monotonic()
                        figures = throughput_figure(points), rouge_figure(event.samples)
                        yield progress_markdown(event), *figures, *[gr.skip()] * 4
            result = event.to_dict()
            keys = ("workload", "n", "tokens_per_second", "rouge_l_mean", "wall_seconds")
            session.runs.append({k: result[k] for k in keys})
            files = session.save(result)
            yield (
                f"✅ done: **{result['tokens_per_second']:,.1f} output tokens/s** over "
                f"{result['n']} questions",
                throughput_figure(result["timeline"]),
                rouge_figure(result["samples"]),
                summary_markdown(result),
                table_rows(event.samples),
                files,
                comparison_figure(session.runs),
            )
        finally:
            session.owner = None
            session.lock.release()

    return run


CANCELLED = "🛑 cancelled: the run's requests were aborted in the engine."


def make_cancel(session: BenchmarkSession):
    """The Cancel handler: stops the caller's own run (never another visitor's)."""

    def cancel(request: gr.Request) -> str:
        if session.owner is None:
            return "No benchmark is running."
        if session.owner != request.session_hash:
            return "The running benchmark was started by someone else; only they can cancel it."
        session.stop.set()
        return CANCELLED

    return cancel


def _whole(value, name: str) -> int:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise BenchmarkError(f"{name} must be a number, got {value!r}") from None
    if number != int(number):
        raise BenchmarkError(f"{name} must be a whole number, got {value!r}")
    return int(number)


def build_benchmark_tab(service: EngineService) -> None:
    """Lay out the Benchmark tab inside the current Blocks context."""
    session = BenchmarkSession(service)
    gr.Markdown(
        "The course evaluation: every question sent to the engine **at once**, greedy "
        "decoding. `answer` scores ROUGE-L against the reference; `replay` forces each "
        "reply to its reference's token length; `full` forces 256 tokens each."
    )
    with gr.Row():
        workload = gr.Dropdown(list(WORKLOADS), value="answer", label="Workload")
        limit = gr.Slider(1, 358, 358, step=1, label="Questions")
        max_new = gr.Slider(16, 1024, 256, step=16, label="Max new tokens")
        upload = gr.File(
            label="Own question file (optional, course format .txt)",
            file_types=[".txt"],
            type="filepath",
        )
    with gr.Row():
        run_btn = gr.Button("Run benchmark", variant="primary", elem_id="run-benchmark")
        cancel_btn = gr.Button("Cancel", variant="stop", elem_id="cancel-benchmark")
    progress = gr.Markdown("Ready to run.", elem_id="bench-progress")
    with gr.Row():
        tps_plot = gr.Plot(label="Output tokens/s", elem_id="tps-plot")
        rouge_plot = gr.Plot(label="ROUGE-L", elem_id="rouge-plot")
    summary = gr.Markdown(elem_id="bench-summary")
    table = gr.Dataframe(
        headers=TABLE_COLUMNS, label="Per question", wrap=True, max_height=420, interactive=False
    )
    files = gr.File(label="Download results (JSON, CSV)", file_count="multiple", interactive=False)
    compare = gr.Plot(label="Earlier runs")
    event = run_btn.click(
        make_run(session),
        [workload, limit, max_new, upload],
        [progress, tps_plot, rouge_plot, summary, table, files, compare],
        api_name="run_benchmark",
        concurrency_limit=None,
    )
    # The browser's Cancel also cancels the event outright; API callers rely on the stop flag.
    cancel_btn.click(
        make_cancel(session), None, progress, cancels=[event], api_name="cancel_benchmark"
    )
