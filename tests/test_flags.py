"""engine.settings.flags: every engine setting has a flag of the right type; left out, the
profile's."""

import argparse

import pytest

from engine.settings.config import EngineConfig
from engine.settings.flags import add_config_arguments, config_from_args, flag_settings
from engine.settings.profiles import make_config


def parse(*argv: str):
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    return config_from_args(parser.parse_args(list(argv)))


def test_flags_reach_the_config_with_their_types():
    cfg = parse(
        "--profile",
        "hopper",
        "--max-num-seqs",
        "384",
        "--async-scheduling",
        "false",
        "--cudagraph-capture-sizes",
        "1,2,358",
        "--compile-backend",
        "eager",
        "--gpu-memory-utilization",
        "0.5",
        "--max-model-len",
        "2048",
    )
    assert (cfg.profile, cfg.max_num_seqs, cfg.async_scheduling) == ("hopper", 384, False)
    assert cfg.cudagraph_capture_sizes == (1, 2, 358) and cfg.compile_backend == "eager"
    assert cfg.gpu_memory_utilization == 0.5 and cfg.max_model_len == 2048


def test_left_out_flags_keep_the_profiles_values():
    assert parse("--profile", "hopper") == make_config("hopper")
    assert parse("--profile", "cpu", "--max-model-len", "auto").max_model_len is None


def test_every_scalar_setting_has_a_flag():
    flags = set(flag_settings())
    for name in ("max_queued_requests", "enforce_eager", "max_model_len", "seed", "block_size"):
        assert name in flags
    assert flags <= {f for f in EngineConfig.__dataclass_fields__}


@pytest.mark.parametrize(
    "argv",
    [
        ["--async-scheduling", "maybe"],
        ["--max-num-seqs", "many"],
        ["--cudagraph-capture-sizes", "1,x"],
        ["--thinking", "sometimes"],
        ["--profile", "tpu"],
    ],
)
def test_bad_flag_values_exit_with_a_message(argv):
    with pytest.raises(SystemExit):
        parse(*argv)


@pytest.mark.parametrize("flag, expected", [("auto", None), ("on", True), ("off", False)])
def test_thinking_flag(flag, expected):
    assert parse("--thinking", flag).thinking is expected
    assert parse().thinking is None
