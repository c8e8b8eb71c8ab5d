"""engine.runtime.vllm_args: the one place where vLLM's arguments are built, checked against
vLLM."""

from pathlib import Path

from engine.models.sources import ResolvedModel
from engine.runtime.vllm_args import AUTO_FIT, engine_kwargs
from engine.settings.profiles import make_config

RANDOM = ResolvedModel("tiny-random", Path("/models/tiny"), True, "built-in")
LOCAL = ResolvedModel("mine", Path("/models/mine"), False, "local")


def test_engine_arguments_are_vllms_own():
    from vllm.engine.arg_utils import AsyncEngineArgs

    for profile in ("cpu", "hopper", "rtx5090", "vllm-defaults", "volta-turing"):
        kwargs = engine_kwargs(make_config(profile), RANDOM)
        AsyncEngineArgs(**kwargs)  # every name is one vLLM knows
        assert kwargs["load_format"] == "dummy" and kwargs["reasoning_parser"] == "qwen3"
        assert kwargs["max_num_queued_reqs"] == make_config(profile).admission_limit


def test_values_none_are_left_to_vllm_and_the_whole_context_is_vllms_auto_fit():
    kwargs = engine_kwargs(make_config("hopper", block_size=64, max_model_len="auto"), LOCAL)
    assert "quantization" not in kwargs and kwargs["block_size"] == 64
    assert kwargs["max_model_len"] == AUTO_FIT and kwargs["stream_interval"] == 16
    assert engine_kwargs(make_config("hopper"), LOCAL)["max_model_len"] == 4096
    assert kwargs["load_format"] == "auto" and kwargs["served_model_name"] == "mine"


def test_no_torch_compile_keeps_cuda_graphs_and_the_batch_prefills_in_one_step():
    kwargs = engine_kwargs(make_config("hopper"), LOCAL)
    assert kwargs["compilation_config"] == {"mode": 0} and kwargs["cudagraph_capture_sizes"]
    compiled = engine_kwargs(make_config("hopper", compile_backend="inductor"), LOCAL)
    assert compiled["compilation_config"] == {"backend": "inductor"}
    assert kwargs["max_num_batched_tokens"] >= 14_193  # the course batch's prompts
    course = engine_kwargs(make_config("rtx5090"), LOCAL)
    assert course["compilation_config"] == {"cudagraph_mode": "FULL_AND_PIECEWISE"}
