"""Benchmark results as people read them: plotly figures, a summary table, JSON and CSV.

The same functions serve the Benchmark tab (live, from Progress events) and the command line.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import plotly.graph_objects as go

SAMPLE_COLUMNS = (
    "index",
    "question",
    "reference",
    "prediction",
    "rouge_l",
    "output_tokens",
    "prompt_tokens",
    "ttft_s",
    "latency_s",
)


def result_path(out: Path, workload: str, several: bool) -> Path:
    """Where one workload's result goes: `out` itself, or `out` with `.<workload>` before
    `.json` when one engine start ran several workloads."""
    return out.with_suffix(f".{workload}.json") if several else out


def throughput_figure(timeline: list[dict], title: str = "Output tokens/s") -> go.Figure:
    """Running output tokens/s and tokens generated, over seconds since submission."""
    import plotly.graph_objects as go

    x = [p["elapsed_s"] for p in timeline]
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=x,
            y=[p["tokens_per_second"] for p in timeline],
            mode="lines+markers",
            name="tokens/s (running)",
        )
    )
    fig.add_trace(
        go.Scatter(
            x=x,
            y=[p["output_tokens"] for p in timeline],
            mode="lines",
            name="output tokens",
            yaxis="y2",
            line={"dash": "dot"},
        )
    )
    fig.update_layout(
        title=title,
        xaxis_title="seconds since submission",
        yaxis_title="output tokens/s",
        height=340,
        margin=dict(l=50, r=50, t=50, b=40),
        yaxis2={"title": "output tokens", "overlaying": "y", "side": "right"},
        legend={"orientation": "h", "y": -0.25},
    )
    return fig


def rouge_figure(samples: list, title: str = "ROUGE-L") -> go.Figure:
    """Per-question ROUGE-L (dots, completion order) and the running mean (line)."""
    import plotly.graph_objects as go

    scored = [s for s in samples if _get(s, "rouge_l") is not None]
    values = [_get(s, "rouge_l") for s in scored]
    running = [sum(values[: i + 1]) / (i + 1) for i in range(len(values))]
    order = list(range(1, len(values) + 1))
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=order,
            y=values,
            mode="markers",
            name="per question",
            marker={"size": 5, "opacity": 0.6},
            text=[f"Q{_get(s, 'index') + 1}" for s in scored],
        )
    )
    fig.add_trace(go.Scatter(x=order, y=running, mode="lines", name="running mean"))
    if not scored:
        fig.add_annotation(
            text="ROUGE-L is scored in the answer workload",
            showarrow=False,
            xref="paper",
            yref="paper",
            x=0.5,
            y=0.5,
        )
    fig.update_layout(
        title=title,
        xaxis_title="questions finished",
        yaxis_title="ROUGE-L F1",
        yaxis_range=[0, 1.02],
        height=340,
        margin=dict(l=50, r=20, t=50, b=40),
        legend={"orientation": "h", "y": -0.25},
    )
    return fig


def comparison_figure(runs: list[dict]) -> go.Figure:
    """Tokens/s of earlier runs side by side (ROUGE-L in the hover text)."""
    import plotly.graph_objects as go

    labels = [f"#{i + 1} {r['workload']} n={r['n']}" for i, r in enumerate(runs)]
    fig = go.Figure(
        go.Bar(
            x=labels,
            y=[r["tokens_per_second"] for r in runs],
            text=[f"{r['tokens_per_second']:,.0f}" for r in runs],
            hovertext=[
                f"ROUGE-L {r['rouge_l_mean']:.4f}" if r.get("rouge_l_mean") is not None else ""
                for r in runs
            ],
        )
    )
    fig.update_layout(
        title="Runs since start-up",
        yaxis_title="output tokens/s",
        height=300,
        margin=dict(l=50, r=20, t=50, b=40),
    )
    return fig


def _get(sample, name):
    return sample[name] if isinstance(sample, dict) else getattr(sample, name)


def summary_rows(result: dict) -> list[tuple[str, str]]:
    """(label, value) pairs of a result's headline figures."""
    engine = result.get("engine", {})
    rouge = result.get("rouge_l_mean")
    rows = [
        ("workload", result["workload"]),
        ("question set", str(result.get("question_set", "?"))),
        ("questions", str(result["n"])),
        ("prompt", str(result.get("prompt", "?"))),
        ("output tokens", f"{result['output_tokens']:,}"),
        ("prompt tokens", f"{result['prompt_tokens']:,}"),
        ("wall seconds", f"{result['wall_seconds']:.2f}"),
        ("output tokens/s", f"{result['tokens_per_second']:,.1f}"),
        ("ROUGE-L (mean)", "n/a" if rouge is None else f"{rouge:.4f}"),
        ("TTFT p50 / p95 s", _pair(result.get("ttft_p50_s"), result.get("ttft_p95_s"))),
        ("engine start-up s", _num(result.get("startup_seconds"))),
        ("requests in the first engine step", _count(result.get("first_step_requests"))),
        (
            "model",
            f"{engine.get('model', '?')}"
            + (" (random weights)" if engine.get("random_weights") else ""),
        ),
        ("device / vLLM", f"{engine.get('device', '?')} / {engine.get('vllm', '?')}"),
        ("profile", str(engine.get("profile", "?"))),
    ]
    return rows + rank_rows(result.get("ranks") or [])


def rank_rows(ranks: list[dict]) -> list[tuple[str, str]]:
    """How a batch split over data-parallel ranks ('8 / 8'), when it ran on more than one."""
    if len(ranks) < 2:
        return []

    def each(key: str, show=lambda v: f"{v:,}") -> str:
        return " / ".join("n/a" if r[key] is None else show(r[key]) for r in ranks)

    return [
        ("data-parallel ranks", " / ".join(str(r["rank"]) for r in ranks)),
        ("requests per rank", each("requests")),
        ("output tokens per rank", each("output_tokens")),
        ("engine steps per rank", each("engine_steps")),
        ("mean running batch per rank", each("mean_batch", lambda v: f"{v:.1f}")),
    ]


def _count(x) -> str:
    return "n/a" if x is None else str(x)


def _num(x) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def _pair(a, b) -> str:
    return f"{_num(a)} / {_num(b)}"


def summary_markdown(result: dict) -> str:
    """A two-column Markdown table of the headline figures."""
    lines = ["| figure | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in summary_rows(result)]
    return "\n".join(lines)


def summary_text(result: dict) -> str:
    """The headline figures as an aligned plain-text table."""
    rows = summary_rows(result)
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def to_json(result: dict) -> str:
    return json.dumps(result, ensure_ascii=False, indent=2)


def samples_csv(samples: list) -> str:
    """Per-question rows as CSV text."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=SAMPLE_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for s in samples:
        writer.writerow(s if isinstance(s, dict) else asdict(s))
    return out.getvalue()


def write_result(result: dict, json_path: Path) -> list[Path]:
    """Write the result as JSON and its per-question rows as CSV beside it (same name, `.csv`);
    return both paths."""
    json_path = Path(json_path)
    csv_path = json_path.with_suffix(".csv")
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(to_json(result), encoding="utf-8")
    csv_path.write_text(samples_csv(result["samples"]), encoding="utf-8")
    return [json_path, csv_path]
