"""The Benchmark tab: run the course evaluation on the shared engine and watch it live.

The run itself happens in the server (`POST /internal/benchmark`), which streams progress;
this tab loads and checks the questions, draws the charts and keeps the results for download.
One benchmark at a time (a second click is told so); chat keeps working meanwhile. Cancel
aborts every request of the run inside the engine. Running is the operator's
(`ui.operator`). Questions come from the official set (downloaded once), the built-in sample
(offline) or an uploaded course-format file; where the official set cannot be had, the run takes
the built-in sample at once and says why. The Questions slider follows the chosen set's size.
Anything that stops a run is said in full in the tab's progress line, with the charts left
empty; a run that did not finish is never reported as a result.
"""

from __future__ import annotations

import tempfile
import threading
import time
from contextlib import aclosing
from dataclasses import asdict
from pathlib import Path

import gradio as gr

from bench.report import (
    comparison_figure,
    rouge_figure,
    summary_markdown,
    throughput_figure,
    write_result,
)
from bench.workloads import WORKLOADS, BenchmarkError, BenchmarkSpec
from eval_data import (
    QUESTION_SETS,
    SAMPLE_FILE,
    DataError,
    FormatError,
    load_course_file,
    question_count,
    question_set_label,
    question_set_path,
)
from protocol import BenchmarkDone, Cancelled
from ui.backend import Backend, BackendError
from ui.errors import visitor_error
from ui.operator import OperatorPolicy

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
    """State shared by this worker's visitors: its run lock, earlier runs, the results folder.
    (The server runs one benchmark at a time over every worker and knows whose it is.)"""

    def __init__(self, backend: Backend, policy: OperatorPolicy):
        self.backend = backend
        self.policy = policy
        self.lock = threading.Lock()
        self.runs: list[dict] = []
        self.results_dir = Path(tempfile.mkdtemp(prefix="qwen3-bench-"))

    def load_pairs(self, upload: str | None, question_set: str) -> tuple[list, str, str]:
        """(pairs, label, fallback): an uploaded course-format file, else the named set, else
        (the official set not to be had) the built-in sample; `fallback` says why the sample
        stands in, and is empty when it does not."""
        if upload:
            return load_upload(upload), f"uploaded file {Path(upload).name}", ""
        if question_set not in QUESTION_SETS:
            raise BenchmarkError(
                f"question set must be one of {', '.join(QUESTION_SETS)}, got {question_set!r}"
            )
        try:
            path, fallback = question_set_path(question_set), ""
        except DataError as err:
            path, question_set, fallback = SAMPLE_FILE, "sample", str(err)
        return load_course_file(path), question_set_label(question_set, path), fallback

    def save(self, result: dict) -> list[str]:
        """Write the run's JSON and CSV under server-chosen names; return their paths."""
        stem = self.results_dir / f"run{len(self.runs):03d}-{result['workload']}-n{result['n']}"
        return [str(path) for path in write_result(result, stem.with_suffix(".json"))]


def load_upload(upload: str) -> list:
    """The pairs of an uploaded course-format `.txt` file, size-checked first."""
    path = Path(upload)
    if path.suffix.lower() != ".txt":
        raise FormatError("upload a .txt file in the course format")
    if path.stat().st_size > MAX_UPLOAD_BYTES:
        raise FormatError(f"the uploaded file is larger than {MAX_UPLOAD_BYTES // 2**20} MiB")
    return load_course_file(path)


def set_size(question_set: str, upload: str | None) -> int:
    """How many questions a run would have to choose from (an upload goes before the set)."""
    return len(load_upload(upload)) if upload else question_count(str(question_set))


def resize_questions(question_set: str, upload: str | None, limit: float, shown: int) -> tuple:
    """(Questions slider, its new maximum) for the chosen set: the maximum is the set's size;
    a slider left at the old maximum moves to the new one, a narrowed one keeps its value (so
    a run that fell back to the sample shows the count it ran). An unusable upload changes
    nothing: Run says what is wrong with it."""
    try:
        size = set_size(question_set, upload)
        value = size if float(limit) >= shown else min(int(limit), size)
    except (FormatError, ValueError, TypeError, OSError):
        return gr.skip(), gr.skip()
    return gr.update(maximum=size, value=value), size


def table_rows(samples: list[dict]) -> list[list]:
    """Per-question rows for the details table, in question order."""
    rows = []
    for s in sorted(samples, key=lambda s: s["index"]):
        rows.append(
            [
                s["index"] + 1,
                s["question"],
                s["reference"],
                s["prediction"],
                None if s["rouge_l"] is None else round(s["rouge_l"], 4),
                s["output_tokens"],
                None if s["ttft_s"] is None else round(s["ttft_s"], 3),
                round(s["latency_s"], 3),
            ]
        )
    return rows


def progress_markdown(event: dict) -> str:
    rouge = event.get("rouge_l_mean")
    rouge = "" if rouge is None else f" · ROUGE-L {rouge:.4f}"
    return (
        f"Running: **{event['completed']} / {event['total']}** finished · "
        f"{event['output_tokens']:,} tokens · {event['elapsed_s']:.1f} s · "
        f"**{event['tokens_per_second']:,.0f} tok/s**{rouge}"
    )


def fallback_note(reason: str) -> str:
    """Why a run took the built-in sample, and how to get the official set next time."""
    return (
        "**The official question set could not be had, so the built-in sample ran instead.** "
        f"{reason}\n\nFor the official set: upload a course-format `.txt` file above, or start "
        "the app with `QWEN_DEMO_EVAL_FILE=/path/to/official_test_358.txt`."
    )


def thinking_choice(value) -> bool | None:
    """The Thinking control's value as a setting: on, off, or None (by model)."""
    text = str(value).lower()
    if text not in ("auto", "on", "off"):
        raise BenchmarkError(f"thinking must be auto, on or off, got {value!r}")
    return None if text == "auto" else text == "on"


# The Run handler's outputs, by name, in the order the tab wires them.
OUTPUTS = (
    "progress",
    "throughput",
    "rouge",
    "summary",
    "table",
    "files",
    "compare",
    "question_set",
)
CANCELLED = "Cancelled: the run's requests were aborted in the engine."


def outputs(**shown) -> tuple:
    """The Run handler's outputs, given by name; those not named stay as they are."""
    unknown = set(shown) - set(OUTPUTS)
    if unknown:
        raise TypeError(f"not an output of the Run handler: {', '.join(sorted(unknown))}")
    return tuple(shown.get(name, gr.skip()) for name in OUTPUTS)


def _stopped(message: str, **shown) -> tuple:
    """Outputs with only a message: empty charts and tables (a run not started, or starting)."""
    cleared = dict(throughput=None, rouge=None, summary="", table=None, files=None)
    return outputs(**{"progress": message, **cleared, **shown})


class Refusal(Exception):
    """A run that does not start: the outputs that say why, and the error API callers get
    (None: none, the outputs say it all)."""

    def __init__(self, shown: tuple, error: str | None):
        super().__init__(error)
        self.shown, self.error = shown, error


def make_run(session: BenchmarkSession):
    """The Run handler: checks who asks and what, takes the lock, streams figures, saves results.

    A problem is shown in full in the progress line (charts cleared); bad input, a refused
    caller and a busy or unready engine also raise, so API callers get an error with the same
    message.
    """

    async def run(
        workload: str,
        limit: float,
        max_new_tokens: float,
        upload: str | None,
        question_set: str = "official",
        thinking: str = "auto",
        unlocked: bool = False,
        request: gr.Request = None,
    ):
        try:
            if not session.policy.allowed(unlocked):
                raise Refusal(_stopped(session.policy.locked_reason), session.policy.locked_reason)
            pairs, spec, fallback = prepare(
                session, workload, limit, max_new_tokens, upload, question_set, thinking
            )
        except Refusal as refusal:
            yield refusal.shown
            if refusal.error:
                raise visitor_error(refusal.error) from None
            return
        if not session.lock.acquire(blocking=False):
            message = "A benchmark is already running; wait for it or cancel it."
            yield _stopped(message)
            raise visitor_error(message)
        owner = request.session_hash if request else None
        try:
            async with aclosing(_running(session, pairs, spec, owner, fallback)) as shown:
                async for step in shown:
                    yield step
        finally:
            session.lock.release()

    return run


def prepare(session, workload, limit, max_new_tokens, upload, question_set, thinking) -> tuple:
    """(questions, spec, why the built-in sample stands in or '') of a run from the tab's
    inputs; Refusal when it cannot start."""
    status = session.backend.status()
    if session.backend.closing:
        message = "The server is shutting down."
        raise Refusal(_stopped(message), message)
    if not status.ready:
        message = f"The engine is not ready yet ({status.phase}: {status.message})."
        raise Refusal(_stopped(message), message)
    try:
        pairs, label, fallback = session.load_pairs(upload, str(question_set))
        spec = BenchmarkSpec(
            str(workload),
            min(_whole(limit, "number of questions"), len(pairs)),
            _whole(max_new_tokens, "max new tokens"),
            thinking=thinking_choice(thinking),
            question_set=label,
        )
        spec.validate(len(pairs))
    except (BenchmarkError, FormatError, ValueError) as err:
        raise Refusal(_stopped(f"**Cannot run:** {err}"), str(err)) from None
    return pairs, spec, fallback


def _submitting(spec: BenchmarkSpec, fallback: str) -> tuple:
    """The first outputs of a run; one on the stand-in sample selects it and says why (the
    note stays above the summary while the run goes on)."""
    message = f"Submitting {spec.limit} questions from {spec.question_set} as one batch…"
    if not fallback:
        return _stopped(message)
    note = fallback_note(fallback)
    return _stopped(f"{message}\n\n{note}", summary=note, question_set="sample")


async def _running(
    session: BenchmarkSession, pairs, spec: BenchmarkSpec, owner: str | None, fallback: str = ""
):
    """The outputs of a run that has the lock: submitting, live charts, then the results."""
    yield _submitting(spec, fallback)
    shown, points, samples, result = 0.0, [], [], None
    questions = [(p.question, p.reference) for p in pairs[: spec.limit]]
    events = session.backend.benchmark(questions, asdict(spec), owner)
    try:
        async with aclosing(events) as stream:  # leaving early aborts the run's requests
            async for event in stream:
                if isinstance(event, Cancelled):
                    yield outputs(progress=CANCELLED)
                    return
                if isinstance(event, BenchmarkDone):
                    result = event.result
                    break
                progress = event.progress
                samples.extend(event.new_samples)
                points.append({k: progress[k] for k in TIMELINE_KEYS})
                if time.monotonic() - shown >= REFRESH_SECONDS:
                    shown = time.monotonic()
                    yield outputs(
                        progress=progress_markdown(progress),
                        throughput=throughput_figure(points),
                        rouge=rouge_figure(samples),
                    )
    except BackendError as err:
        message = f"**Stopped:** {err} No result: the run did not finish."
        yield _stopped(message)
        raise visitor_error(str(err)) from None
    if result is None:
        yield _stopped("**Stopped:** the server ended the run early. No result.")
        raise visitor_error("the server ended the run early")
    yield _finished(session, result, fallback)


def _finished(session: BenchmarkSession, result: dict, fallback: str = "") -> tuple:
    """The outputs of a finished run, kept among the earlier runs and saved for download."""
    keys = ("workload", "n", "tokens_per_second", "rouge_l_mean", "wall_seconds")
    session.runs.append({k: result[k] for k in keys})
    instead = " (in place of the official set, which could not be had)" if fallback else ""
    note = f"{fallback_note(fallback)}\n\n" if fallback else ""
    return outputs(
        progress=f"Done: **{result['tokens_per_second']:,.1f} output tokens/s** over "
        f"{result['n']} questions from {result['question_set']}{instead}; "
        f"prompt: {result['prompt']}",
        throughput=throughput_figure(result["timeline"]),
        rouge=rouge_figure(result["samples"]),
        summary=note + summary_markdown(result),
        table=table_rows(result["samples"]),
        files=session.save(result),
        compare=comparison_figure(session.runs),
    )


def make_cancel(session: BenchmarkSession):
    """The Cancel handler: stops the caller's own run (never another visitor's), whichever UI
    worker either of them is on: the server knows whose run it is."""

    async def cancel(request: gr.Request) -> str:
        try:
            run = await session.backend.cancel_benchmark(request.session_hash)
        except BackendError as err:
            return f"Could not cancel: {err}"
        if run == "none":
            return "No benchmark is running."
        if run == "other":
            return "The running benchmark was started by someone else; only they can cancel it."
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


def build_benchmark_tab(backend: Backend, policy: OperatorPolicy, unlocked) -> None:
    """Lay out the Benchmark tab inside the current Blocks context; `unlocked` is the session's
    operator state."""
    session = BenchmarkSession(backend, policy)
    gr.Markdown(
        "The course evaluation: every question sent to the engine **at once**, greedy "
        "decoding. `answer` scores ROUGE-L against the reference; `replay` forces each "
        "reply to its reference's token length; `full` forces the max new tokens each."
    )
    with gr.Row():
        workload = gr.Dropdown(list(WORKLOADS), value="answer", label="Workload")
        question_set = gr.Dropdown(
            [(text, name) for name, text in QUESTION_SETS.items()],
            value="official",
            label="Question set",
            elem_id="question-set",
        )
        thinking = gr.Radio(
            ["auto", "on", "off"],
            value="auto",
            label="Thinking",
            info="on: the course's exact ChatML prompt; off: Qwen3's empty think block "
            "(the model answers directly); auto: on for the course's fine-tuned model and "
            "random-weight models, off for others",
            elem_id="bench-thinking",
        )
    size = question_count("official")
    with gr.Row():
        limit = gr.Slider(1, size, size, step=1, label="Questions")
        max_new = gr.Slider(16, 1024, 256, step=16, label="Max new tokens")
        upload = gr.File(
            label="Own question file (optional, course format .txt; used instead of the set)",
            file_types=[".txt"],
            type="filepath",
            elem_id="bench-upload",
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
    shown = dict(
        progress=progress,
        throughput=tps_plot,
        rouge=rouge_plot,
        summary=summary,
        table=table,
        files=files,
        compare=compare,
        question_set=question_set,
    )
    event = run_btn.click(
        make_run(session),
        [workload, limit, max_new, upload, question_set, thinking, unlocked],
        [shown[name] for name in OUTPUTS],
        api_name="run_benchmark",
        concurrency_limit=None,
        show_progress="hidden",  # the progress line says it all; no overlay or error badges
    )
    shown_size = gr.State(size)  # the slider's maximum, as this page last drew it
    for changed in (question_set.change, upload.change):  # also a run's switch to the sample
        changed(
            resize_questions,
            [question_set, upload, limit, shown_size],
            [limit, shown_size],
            api_visibility="private",
            show_progress="hidden",
        )
    # The browser's Cancel also cancels the event outright; API callers rely on the stop flag.
    cancel_btn.click(
        make_cancel(session), None, progress, cancels=[event], api_name="cancel_benchmark"
    )
