"""Model sources: a local folder, a download (ModelScope first, then Hugging Face), the built-in
random-weight models (`sources`); Qwen3's tokenizer files (`qwen3_files`); the cache folder
(`cache`); vLLM's model inspection run ahead of time (`modelinfo`).

    python -m engine.models tokenizer      # fetch (or check) Qwen3's tokenizer files
"""
