"""Write Qwen3 model folders offline: the real Qwen3 vocabulary, a chat template and a config.

The byte-level BPE ranks Qwen2/Qwen3 use ship inside the `dashscope` wheel
(`dashscope/resources/qwen.tiktoken`); converted with Qwen's pre-tokenizer pattern and the 26
Qwen3 special tokens they encode text exactly as the published tokenizer does. With vLLM's
`load_format="dummy"` such a folder serves random weights of the right shape: the built-in
`tiny-random` model for offline runs and tests, and a full-size Qwen3-0.6B for throughput work.
"""

from __future__ import annotations

import json
from pathlib import Path

QWEN_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<tool_call>",
    "</tool_call>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
    "<tool_response>",
    "</tool_response>",
    "<think>",
    "</think>",
]  # ids 151643.. in this order
FIRST_SPECIAL_ID = 151643
VOCAB_SIZE = 151936
EOS_ID, PAD_ID = 151645, 151643

# Qwen3's chat format: ChatML; reasoning of earlier assistant turns is dropped, and
# enable_thinking=False opens the answer with an empty think block.
CHAT_TEMPLATE = """\
{%- for message in messages %}
{%- if message.role == 'assistant' %}
{%- set content = message.content %}
{%- if '</think>' in content %}
{%- set content = content.split('</think>')[-1].lstrip('\\n') %}
{%- endif %}
{{- '<|im_start|>assistant\\n' + content + '<|im_end|>\\n' }}
{%- else %}
{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}
{%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
{{- '<|im_start|>assistant\\n' }}
{%- if enable_thinking is defined and enable_thinking is false %}
{{- '<think>\\n\\n</think>\\n\\n' }}
{%- endif %}
{%- endif %}"""

ARCHITECTURES = {
    # The published Qwen3-0.6B shape.
    "qwen3-0.6b": dict(
        hidden_size=1024,
        num_hidden_layers=28,
        num_attention_heads=16,
        num_key_value_heads=8,
        head_dim=128,
        intermediate_size=3072,
        max_position_embeddings=40960,
    ),
    # Smallest shape vLLM's CPU attention accepts (head_dim 64); for tests and offline demos.
    "tiny": dict(
        hidden_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=64,
        intermediate_size=256,
        max_position_embeddings=40960,
    ),
}


def qwen3_config(arch: str) -> dict:
    """A Hugging Face `config.json` for a Qwen3 of the named shape."""
    return {
        "architectures": ["Qwen3ForCausalLM"],
        "model_type": "qwen3",
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": PAD_ID,
        "eos_token_id": EOS_ID,
        "hidden_act": "silu",
        "initializer_range": 0.02,
        "rms_norm_eps": 1e-6,
        "rope_scaling": None,
        "rope_theta": 1000000,
        "sliding_window": None,
        "use_sliding_window": False,
        "tie_word_embeddings": True,
        "torch_dtype": "bfloat16",
        "use_cache": True,
        "vocab_size": VOCAB_SIZE,
        **ARCHITECTURES[arch],
    }


GENERATION_CONFIG = {
    "bos_token_id": PAD_ID,
    "eos_token_id": [EOS_ID, PAD_ID],
    "pad_token_id": PAD_ID,
    "do_sample": True,
    "temperature": 0.6,
    "top_k": 20,
    "top_p": 0.95,
}


def build_tokenizer():
    """The Qwen3 fast tokenizer, built from the BPE ranks in the dashscope wheel."""
    from importlib.resources import files

    from tokenizers import normalizers
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    ranks = str(files("dashscope") / "resources" / "qwen.tiktoken")
    backend = TikTokenConverter(vocab_file=ranks, pattern=QWEN_PATTERN).converted()
    backend.normalizer = normalizers.NFC()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, clean_up_tokenization_spaces=False, model_max_length=131072
    )
    # Added in Qwen3's order first, so that they take ids 151643..151668.
    tokenizer.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS})
    tokenizer.eos_token, tokenizer.pad_token = "<|im_end|>", "<|endoftext|>"
    ids = tokenizer.convert_tokens_to_ids(SPECIAL_TOKENS)
    expected = list(range(FIRST_SPECIAL_ID, FIRST_SPECIAL_ID + len(SPECIAL_TOKENS)))
    if ids != expected:
        raise RuntimeError(f"special token ids {ids[:3]}... differ from Qwen3's {expected[:3]}...")
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def write_model_folder(target: Path, arch: str) -> Path:
    """Write config, generation config and tokenizer of a Qwen3 shape into `target`."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; choose from {sorted(ARCHITECTURES)}")
    target = Path(target)
    partial = target.with_name(target.name + ".partial")
    partial.mkdir(parents=True, exist_ok=True)
    build_tokenizer().save_pretrained(partial)
    (partial / "config.json").write_text(json.dumps(qwen3_config(arch), indent=2))
    (partial / "generation_config.json").write_text(json.dumps(GENERATION_CONFIG, indent=2))
    partial.rename(target)
    return target
