"""The engine's command-line flags: `--profile` and one override flag per engine setting.

    add_config_arguments(parser)
    config = config_from_args(parser.parse_args())

Each flag's type comes from the setting's annotation in `EngineConfig` (whole numbers, numbers,
text, true/false, comma-separated sizes); a flag left out keeps the profile's value.
"""

from __future__ import annotations

import argparse
import types
import typing

from engine.settings.config import EngineConfig
from engine.settings.profiles import ALIASES, FULL_CONTEXT, PROFILE_NAMES, make_config

# Settings with no flag of their own: set by the profile or by the flags below.
NOT_FLAGS = frozenset(
    {
        "profile",
        "thinking",
        "data_parallel_size",
        "compilation_config",
        "extra_engine_args",
        "profile_reason",
    }
)
HELP = {
    "api_processes": "processes serving the HTTP API (the course routes and vLLM's OpenAI API "
    "on one port) and the UI's chats, each its own client of vLLM's engine core, as vllm "
    "serve --api-server-count runs them (default 1: this process alone); one that dies is "
    "replaced while the others keep streaming",
    "max_model_len": "context length in tokens, or auto: the model's whole context as far as "
    "the KV cache holds it",
    "max_queued_requests": "the one admission limit: requests in the engine (chat, course API "
    "and OpenAI API together) beyond which new ones are told to try again shortly",
    "max_new_tokens_cap": "most new tokens a chat reply or /predict answer may ask for",
    "max_batch": "most prompts in one /predict list",
    "warmup_batch": "requests in the start-up warm-up's benchmark-shaped batch (0: none)",
    "engine_nice": "lower the scheduling priority of vLLM's processes by this much (0-19), so "
    "that the web processes come first on a busy CPU (the cpu profile: 5)",
}


def parse_bool(text: str) -> bool:
    """argparse type: true/false, yes/no, on/off, 1/0."""
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def positive_int(text: str) -> int:
    """argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _sizes(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None


def _context_length(text: str) -> int | str:
    return FULL_CONTEXT if text.lower() == FULL_CONTEXT else int(text)


def _thinking(text: str) -> bool | str:
    return "auto" if text.lower() == "auto" else parse_bool(text)


def _ranks(text: str) -> int | str:
    return "auto" if text.lower() == "auto" else positive_int(text)


def _flag_type(annotation):
    """The argparse type of a setting, from its annotation (`int | None` -> int, ...)."""
    kinds = (
        set(typing.get_args(annotation)) - {type(None)} if _is_union(annotation) else {annotation}
    )
    for kind, parse in ((bool, parse_bool), (int, int), (float, float), (str, str)):
        if kind in kinds:
            return parse
    if any(typing.get_origin(k) is tuple for k in kinds):
        return _sizes
    raise TypeError(f"no flag type for {annotation!r}")


def _is_union(annotation) -> bool:
    return typing.get_origin(annotation) in (typing.Union, types.UnionType)


def flag_settings() -> dict[str, object]:
    """Setting name -> argparse type, for every setting that has a flag."""
    hints = typing.get_type_hints(EngineConfig)
    kinds = {name: _flag_type(hint) for name, hint in hints.items() if name not in NOT_FLAGS}
    kinds["max_model_len"] = _context_length
    return kinds


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """Add `--profile`, `--thinking`, `--data-parallel-size` and one flag per setting."""
    group = parser.add_argument_group("engine (profile values, each overridable)")
    group.add_argument(
        "--profile",
        default="auto",
        choices=PROFILE_NAMES,
        help="named engine settings; auto picks from the GPU found (default); earlier names: "
        + ", ".join(f"{old} = {new}" for old, new in ALIASES.items()),
    )
    group.add_argument(
        "--thinking",
        type=_thinking,
        default="auto",
        metavar="on|off|auto",
        help="course prompt for the benchmark and /predict: on = the course's exact ChatML, "
        "off = Qwen3's empty think block; auto (default): on for the course's fine-tuned "
        "model and random-weight models, off for others",
    )
    group.add_argument(
        "--data-parallel-size",
        type=_ranks,
        default=None,
        metavar="N|auto",
        help="engine ranks through vLLM's data parallelism, one per GPU (default 1; auto: "
        "every visible GPU; CUDA_VISIBLE_DEVICES chooses them); with ranks on other hosts, "
        "the total of all hosts",
    )
    for name, kind in flag_settings().items():
        metavar = "BOOL" if kind is parse_bool else None
        group.add_argument(
            "--" + name.replace("_", "-"),
            type=kind,
            default=None,
            metavar=metavar,
            help=HELP.get(name, f"override {name}"),
        )


def resolve_ranks(value: int | str | None) -> int | None:
    """`--data-parallel-size`: a number as given, `auto` = every visible GPU (1 on the CPU)."""
    if value != "auto":
        return value
    from engine.settings import devices

    return 1 if devices.runs_on_cpu() else len(devices.gpus())


def config_from_args(args: argparse.Namespace) -> EngineConfig:
    """The EngineConfig named by parsed command-line arguments."""
    overrides = {name: getattr(args, name) for name in flag_settings()}
    thinking = None if args.thinking in (None, "auto") else args.thinking
    return make_config(
        args.profile,
        thinking=thinking,
        data_parallel_size=resolve_ranks(args.data_parallel_size),
        **overrides,
    )
