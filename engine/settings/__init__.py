"""The engine's settings: `EngineConfig` (`config`), named profiles and the automatic choice per
GPU family (`profiles`), the command-line flags (`flags`), and which GPUs and which vLLM build
are here (`devices`)."""
