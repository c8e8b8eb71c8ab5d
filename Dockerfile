# Qwen3 vLLM demo: Gradio UI on 7860; course API and OpenAI-compatible API on 8000.
# Needs an NVIDIA GPU:
#   docker build -t qwen3-vllm-demo .            # --build-arg DOWNLOAD_MODEL=0: no model baked in
#   docker run --gpus all -p 7860:7860 -p 8000:8000 qwen3-vllm-demo [app flags, e.g. --auth user:pass]
# Without the baked-in model the app downloads one at start; or mount one and pass --model.

# Keep equal to the vllm== pin in requirements.txt.
ARG VLLM_VERSION=0.32.0
FROM vllm/vllm-openai:v${VLLM_VERSION}

ARG DOWNLOAD_MODEL=1
ARG MODEL_ID=Qwen/Qwen3-0.6B

ENV PYTHONUNBUFFERED=1 \
    GRADIO_ANALYTICS_ENABLED=False \
    QWEN_DEMO_MODEL=/models/model \
    QWEN_DEMO_CACHE=/home/qwen/.cache/qwen3-vllm-demo \
    VLLM_CACHE_ROOT=/home/qwen/.cache/vllm \
    TRITON_CACHE_DIR=/home/qwen/.cache/vllm/triton

WORKDIR /app

# tini as PID 1: it hands `docker stop`'s SIGTERM to the app, which stops in order, and reaps
# any process that loses its parent.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/*

# vLLM comes with the base image; the rest of the app's (pinned) dependencies.
COPY requirements-common.txt ./
RUN PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --no-cache-dir -r requirements-common.txt

RUN groupadd --gid 10001 qwen \
    && useradd --no-log-init --create-home --uid 10001 --gid 10001 --shell /bin/bash qwen \
    && mkdir -p /models "${QWEN_DEMO_CACHE}" "${VLLM_CACHE_ROOT}" \
    && chown -R qwen:qwen /models "/home/qwen/.cache"

# The app's code; the measuring tools (perf/) stay out (.dockerignore).
COPY app.py protocol.py ./
COPY engine/ engine/
COPY server/ server/
COPY launch/ launch/
COPY eval_data/ eval_data/
COPY bench/ bench/
COPY ui/ ui/

# qwen, by number so that the host and Kubernetes can tell it is not root.
USER 10001:10001

# Qwen3's tokenizer files for the built-in random-weight models (offline demos).
RUN python3 -m engine.models tokenizer

# The model is fetched as the app user, without the hubs' own caches.
RUN if [ "${DOWNLOAD_MODEL}" = "1" ]; then \
        python3 -m engine.models download "${MODEL_ID}" --out /models/model \
        && rm -rf "/home/qwen/.cache/modelscope" "/home/qwen/.cache/huggingface"; \
    else \
        echo "DOWNLOAD_MODEL=${DOWNLOAD_MODEL}: no model in the image"; \
    fi

# vLLM's caches (model-class inspection, compiled graphs) and the Triton kernels vLLM compiles
# on first use (about 30 s of a first start on an H100): keep them in a volume and the next
# container starts in about 40 s (docker run -v qwen3-vllm-cache:/home/qwen/.cache/vllm ...).
VOLUME ["/home/qwen/.cache/vllm"]

EXPOSE 7860 8000

# Healthy once the API on 8000 reports the engine ready ({"status": "batch"}); loading takes minutes.
HEALTHCHECK --interval=30s --timeout=10s --start-period=600s --retries=3 \
    CMD ["python3", "-c", "import json, sys, urllib.request; r = urllib.request.urlopen('http://127.0.0.1:8000/', timeout=5); sys.exit(json.load(r).get('status') != 'batch')"]

# Replaces the base image's vLLM server entrypoint; `docker run IMAGE --flag ...` appends app flags.
# Exec form under tini: `docker stop` (SIGTERM) reaches the app itself, which ends in seconds.
ENTRYPOINT ["/usr/bin/tini", "--", "python3", "app.py", "--host", "0.0.0.0"]
CMD []
