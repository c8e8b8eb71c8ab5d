"""Qwen3's rules: the chat prompt as token ids, thinking on or off and its sampling, the
context's limit (`prompt`); reasoning split from the answer (`reasoning`)."""
