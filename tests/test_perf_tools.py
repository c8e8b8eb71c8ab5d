"""The measuring tools in perf/: the bare engine, the in-process kernel profile, engine replicas
and side-by-side comparisons, each run as a user runs it, on the real (CPU) engine, offline
(the built-in sample question set)."""

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT, offline_env

pytestmark = pytest.mark.slow

SMALL = [
    *("--profile", "cpu", "--model", "tiny-random", "--question-set", "sample"),
    *("--limit", "6", "--max-new-tokens", "5"),
]


def run(module, *args, timeout=600):
    done = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_bare_runs_every_workload_on_one_engine(tmp_path):
    out = tmp_path / "bare.json"
    run(
        "perf.bare",
        *SMALL,
        "--workload",
        "replay,full",
        "--runs",
        "2",
        "--in-process",
        "--out",
        str(out),
    )
    full = json.loads(out.with_suffix(".full.json").read_text())
    replay = json.loads(out.with_suffix(".replay.json").read_text())
    assert full["path"] == replay["path"] == "LLM.generate, engine core in-process"
    assert [r["output_tokens"] for r in full["runs"]] == [6 * 5, 6 * 5]
    assert all(1 <= r["output_tokens"] <= 6 * 5 for r in replay["runs"])
    # one engine start: the second workload's warm-up ends after the first one's
    assert replay["startup_seconds_incl_warmup"] < full["startup_seconds_incl_warmup"]
    assert full["median_tokens_per_second"] > 0


def test_profile_reports_steps_and_where_python_spends_them(tmp_path):
    out = tmp_path / "prof"
    done = run("perf.kernels", *SMALL, "--workload", "full", "--out", str(out))
    report = json.loads((out / "profile.json").read_text())
    assert report["output_tokens"] == 6 * 5
    # one prefill step plus one per further token (prefill already yields the first)
    assert 5 <= report["engine_steps"] <= 7
    assert report["kernels"] == "no CUDA"
    functions = [row["function"] for row in report["top_python"]]
    assert any(f.startswith("execute_model (") for f in functions), functions
    assert all(0 <= row["own"] <= row["inclusive"] <= 1 for row in report["top_python"])
    stacks = (out / "stacks.txt").read_text().splitlines()
    assert stacks and all(line.rsplit(" ", 1)[1].isdigit() for line in stacks)
    assert "execute_model (" in done.stdout
    split = report["engine_thread_split"]
    assert set(split) == {"schedule", "execute_model", "sample_tokens", "update_from_output"}
    assert 0 < split["execute_model"] <= 1 and all(0 <= v <= 1 for v in split.values())


def test_kernel_kinds_and_per_step_figures():
    from perf.kernels import kernel_kind, per_step

    assert kernel_kind("void flash::flash_fwd_kernel<Flash_fwd_kernel_traits>") == "attention"
    assert kernel_kind("kernel_unified_attention_2d") == "attention"
    assert kernel_kind("void vllm::reshape_and_cache_flash_kernel<bf16>") == "kv-cache write"
    assert kernel_kind("sm90_xmma_gemm_bf16bf16_bf16f32") == "matmul"
    assert kernel_kind("nvjet_tst_128x64_64x8_1x1_v_bz_TNT") == "matmul"
    assert kernel_kind("triton_poi_fused_mul_silu_0") == "other"
    summary = {"gpu_busy_s": 1.0, "by_kind_ms": {"attention": 560.0, "matmul": 300.0}}
    figures = per_step(summary, steps=250, layers=28)
    assert figures["gpu_kernel_ms_per_step"] == 4.0
    assert figures["kernel_ms_per_step_by_kind"] == {"attention": 2.24, "matmul": 1.2}
    assert figures["attention_us_per_layer_step"] == 80.0
    assert per_step({"kernels": "no CUDA"}, 250, 28) == {}


def test_replicas_split_the_batch_and_add_up(tmp_path):
    out = tmp_path / "replicas.json"
    run(
        "perf.replicas",
        *SMALL,
        "--replicas",
        "2",
        "--workload",
        "full",
        "--runs",
        "2",
        "--gpu-memory-utilization",
        "0.4",
        "--sync",
        str(tmp_path / "sync"),
        "--out",
        str(out),
        timeout=900,
    )
    report = json.loads(out.read_text())
    assert report["replicas"] == 2 and len(report["runs"]) == 2
    assert all(r["tokens"] == 6 * 5 for r in report["runs"])
    assert report["median_tokens_per_second"] > 0


@pytest.mark.parametrize(
    "module, args, message",
    [
        ("perf.bare", ["--runs", "0"], "must be at least 1"),
        ("perf.bare", ["--workload", "replay,nonsense"], "unknown workload 'nonsense'"),
        ("perf.kernels", ["--limit", "-3"], "must be at least 1"),
        ("perf.replicas", ["--replicas", "abc"], "expected a whole number"),
        ("perf.replicas", ["--replicas", "9", "--limit", "4"], "must not exceed --limit"),
        ("perf.replicas", ["--kv-cache-gib", "0"], "must be more than 0"),
    ],
)
def test_nonsense_arguments_get_a_clear_message(module, args, message):
    done = subprocess.run(
        [sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2 and message in done.stderr, done.stderr[-2000:]


def test_compare_reports_a_failed_variant_and_still_writes_its_table(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "perf.compare",
            "--variants",
            "h100",
            "--workloads",
            "replay,full",
            "--question-set",
            "sample",
            "--out",
            str(tmp_path),
            "--",
            "--max-new-tokens",
            "0",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads((tmp_path / "compare.json").read_text())
    assert [(r["variant"], r["workload"], r["error"]) for r in rows] == [
        ("h100", "replay", "exit 2, see its log"),
        ("h100", "full", "exit 2, see its log"),
    ]
    assert "| h100 | full | exit 2, see its log |" in done.stdout


def test_the_tools_load_neither_the_scorer_nor_vllm_when_imported():
    code = (
        "import sys, perf.bare, perf.kernels, perf.replicas, perf.compare, perf.ui_alone; "
        "print([m for m in ('jieba', 'rouge_score', 'vllm', 'gradio') if m in sys.modules])"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr


@pytest.mark.parametrize("module", ["perf.bare", "perf.kernels", "perf.replicas"])
def test_offline_a_tool_names_the_built_in_sample(module, tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", module, "--model", "tiny-random", "--profile", "cpu"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env=offline_env(tmp_path),
    )
    assert done.returncode == 2 and "--question-set sample" in done.stderr, done.stderr[-2000:]


def test_the_ui_alone_streams_every_session_from_a_stand_in_server():
    """perf.ui_alone: the real UI process (python -m ui) in front of a stand-in server, driven
    by perf.load's browser-like sessions; every session streams its reply in pieces."""
    done = run("perf.ui_alone", "--users", "8", "--repeat", "1", "--events", "4", "--gap", "0.1")
    lines = done.stdout.splitlines()
    rows = [line for line in lines if line.startswith("| 8 | ui |")]
    heads = [line for line in lines if line.startswith("| users |")]
    assert rows and heads, done.stdout
    names = [cell.strip() for cell in heads[-1].strip("|").split("|")]
    values = [cell.strip() for cell in rows[-1].strip("|").split("|")]
    cells = dict(zip(names, values, strict=True))
    chunks_min = int(cells["chunks min / mean"].split("/")[0])
    assert cells["failures"] == "0" and chunks_min >= 2, rows[-1]  # no failure; in pieces


def test_the_sampled_time_is_split_by_part_of_the_serving_path():
    """perf.serving's split of py-spy's raw stacks: the innermost frame that names a part
    decides (the app's protocol.py is not vLLM's), the rest is "other"."""
    from perf.serving import sample_split

    lines = [
        "Thread.run (threading.py:982);output_handler (vllm/v1/engine/async_llm.py:862) 6",
        "wrap (starlette/responses.py:281);_reply_lines (server/internal.py:105);"
        "encode (protocol.py:171) 2",
        "wrap (starlette/responses.py:281);chat_completion_stream_generator "
        "(vllm/entrypoints/openai/chat_completion/serving.py:700);"
        "model_dump_json (vllm/entrypoints/openai/chat_completion/protocol.py:90) 4",
        "relay (server/openai.py:140) 1",
        "send (uvicorn/protocols/http/httptools_impl.py:540) 3",
        "Thread.run (threading.py:982) 3",
        "mystery (somewhere.py:1) 1",
        "not a sample line",
    ]
    split = dict(sample_split(lines))
    assert split == {
        "vLLM: output handling (detokenize, RequestOutput)": 0.3,
        "vLLM: OpenAI serving (events, JSON)": 0.2,
        "HTTP & ASGI (uvicorn, starlette, FastAPI, middleware)": 0.15,
        "event loop & threads (C code under them: I/O, callbacks)": 0.15,
        "app: UI private socket (NDJSON lines)": 0.1,
        "app: reasoning_content alias": 0.05,
        "other": 0.05,
    }
    assert list(dict(sample_split(lines)))[0].startswith("vLLM: output handling")
