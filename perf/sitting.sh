#!/usr/bin/env bash
# One benchmark sitting on a GPU: the figures of BENCHMARKS.md's vLLM 0.32 section, one machine,
# one after another, each step's log and JSON under OUT_DIR.
#
#   perf/sitting.sh OUT_DIR MODEL [STEP ...]
#   SITTING_DEADLINE=$(( $(date +%s) + 1500 )) perf/sitting.sh runs/sitting qwen3-0.6b-random
#
# Steps run in the order given (default: all, most important first). A step that would not end
# before SITTING_DEADLINE (epoch seconds) by its estimate is skipped and said so. "fresh" steps
# first empty the compile caches (VLLM_CACHE_ROOT, TRITON_CACHE_DIR, TORCHINDUCTOR_CACHE_DIR
# are set below) so that they time a first start on a new machine. steps.txt lists each step
# with its exit status and seconds. SITTING_PROFILE (default h100) and SITTING_ARGS (extra
# flags for every command, e.g. "--limit 8 --question-set sample") make a short trial run
# possible on any machine, offline too.
set -u
out=${1:?OUT_DIR}
model=${2:?MODEL}
shift 2
steps=${*:-app-fresh app-second bare profile app-third defaults levers rtx5090 ramp inductor-second}
deadline=${SITTING_DEADLINE:-0}
py=${PYTHON:-python3}
mkdir -p "$out"
export VLLM_CACHE_ROOT=${VLLM_CACHE_ROOT:-/tmp/sitting-cache/vllm}
export TRITON_CACHE_DIR=${TRITON_CACHE_DIR:-/tmp/sitting-cache/triton}
export TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-/tmp/sitting-cache/inductor}
export PYTHONUNBUFFERED=1
profile=${SITTING_PROFILE:-h100}
read -r -a extra <<<"${SITTING_ARGS:-}"
common=(--model "$model" --thinking on "${extra[@]}")
both=(--workload replay,full)

fresh() { rm -rf "$VLLM_CACHE_ROOT" "$TRITON_CACHE_DIR" "$TORCHINDUCTOR_CACHE_DIR"; }

step() {  # step NAME ESTIMATED_SECONDS COMMAND...
  local name=$1 need=$2
  shift 2
  if [ "$deadline" -gt 0 ] && [ $(( $(date +%s) + need )) -gt "$deadline" ]; then
    echo "$name skipped (needs ~${need} s, deadline near)" | tee -a "$out/steps.txt"
    return
  fi
  local began=$SECONDS
  "$@" >"$out/$name.log" 2>&1
  echo "$name rc=$? $(( SECONDS - began )) s" | tee -a "$out/steps.txt"
}

app() { $py -m bench --profile "$profile" "${common[@]}" "$@"; }
bare() { $py -m perf.bare --in-process --profile "$profile" "${common[@]}" "$@"; }
prof() { $py -m perf.kernels --profile "$profile" "${common[@]}" --workload full "$@"; }

for s in $steps; do
  case $s in
    # the h100 profile through the app's path: a first start on an empty cache, then again
    app-fresh) fresh; step app-fresh 200 app "${both[@]}" --runs 5 --out "$out/app-h100.json" ;;
    app-second) step app-second 120 app "${both[@]}" --runs 5 --out "$out/app-h100-second.json" ;;
    app-third) step app-third 120 app "${both[@]}" --runs 5 --out "$out/app-h100-third.json" ;;
    # the ramp: hold (whole batch in before the first step) against one request at a time
    ramp) step ramp 150 app "${both[@]}" --batch-submit hold,legacy --runs 3 \
        --out "$out/app-h100-ramp.json" ;;
    # in-process LLM.generate, same settings: the bar for the app's path
    bare) step bare 150 bare "${both[@]}" --runs 5 --out "$out/bare-h100.json" ;;
    # torch.compile (inductor) instead of the profile's none: start-up and throughput
    inductor-fresh) fresh; step inductor-fresh 330 app "${both[@]}" --compile-backend inductor \
        --runs 5 --out "$out/app-h100-inductor.json" ;;
    inductor-second) step inductor-second 150 app "${both[@]}" --compile-backend inductor \
        --runs 5 --out "$out/app-h100-inductor-second.json" ;;
    # where a step goes: GPU kernels by kind, engine-thread split (engine core in-process)
    profile) step profile 120 prof --out "$out/prof-h100" ;;
    # the reference settings, same machine
    defaults) step defaults 200 $py -m bench --profile vllm-defaults "${common[@]}" "${both[@]}" \
        --runs 3 --out "$out/app-defaults.json" ;;
    rtx5090) step rtx5090 240 $py -m bench --profile rtx5090 "${common[@]}" "${both[@]}" \
        --runs 3 --out "$out/app-rtx5090.json" ;;
    # kernel levers, each one engine start: GPU kernel time per step
    levers)
      step lever-bf16kv 80 prof --kv-cache-dtype auto --out "$out/prof-lever-bf16kv"
      step lever-triton 80 prof --attention-backend TRITON_ATTN --out "$out/prof-lever-triton"
      step lever-block32 80 prof --block-size 32 --out "$out/prof-lever-block32" ;;
    # the same levers end to end through the app's path
    bf16kv-app) step bf16kv-app 120 app "${both[@]}" --kv-cache-dtype auto --runs 5 \
        --out "$out/app-h100-bf16kv.json" ;;
    triton-app) step triton-app 120 app "${both[@]}" --attention-backend TRITON_ATTN --runs 5 \
        --out "$out/app-h100-triton.json" ;;
    # every profile forced once on this GPU, `full` (do they all start with this vLLM?)
    profiles) for p in turing ampere h100 rtx5090 vllm-defaults; do
        step "profile-$p" 150 $py -m bench --profile "$p" "${common[@]}" --workload full --runs 3 \
          --out "$out/full-$p.json"
      done ;;
    # data parallelism: one GPU against two, the same call; DP_RUNS runs of each workload
    dp1) step dp1 120 env CUDA_VISIBLE_DEVICES=0 "$py" -m bench --profile "$profile" \
        "${common[@]}" "${both[@]}" --runs "${DP_RUNS:-5}" --out "$out/dp1.json" ;;
    dp2-fresh) fresh; step dp2-fresh 150 app "${both[@]}" --data-parallel-size 2 \
        --runs "${DP_RUNS:-5}" --out "$out/dp2.json" ;;
    dp2-second) step dp2-second 120 app "${both[@]}" --data-parallel-size 2 \
        --runs "${DP_RUNS:-5}" --out "$out/dp2-second.json" ;;
    dp2-triton) step dp2-triton 120 app "${both[@]}" --data-parallel-size 2 \
        --attention-backend TRITON_ATTN --runs "${DP_RUNS:-5}" --out "$out/dp2-triton.json" ;;
    dp1-triton) step dp1-triton 120 env CUDA_VISIBLE_DEVICES=0 "$py" -m bench \
        --profile "$profile" "${common[@]}" "${both[@]}" --attention-backend TRITON_ATTN \
        --runs "${DP_RUNS:-5}" --out "$out/dp1-triton.json" ;;
    dp2-defaults) step dp2-defaults 150 $py -m bench --profile vllm-defaults "${common[@]}" \
        "${both[@]}" --data-parallel-size 2 --runs "${DP_RUNS:-5}" --out "$out/dp2-defaults.json" ;;
    dp2-uni) step dp2-uni 120 app "${both[@]}" --data-parallel-size 2 \
        --distributed-executor-backend uni --runs "${DP_RUNS:-5}" --out "$out/dp2-uni.json" ;;
    # which process is busy while two ranks run `full`: the front end, a rank, the coordinator
    dp2-cpu) step dp2-cpu 120 $py -m perf.cpu_share --out "$out/dp2-cpu.json" -- \
        "$py" -m bench --profile "$profile" "${common[@]}" --workload full --runs 5 \
        --data-parallel-size 2 --out "$out/dp2-cpu-bench.json" ;;
    # two hosts played by two processes: the head (rank 0, GPU 0) and a rank on "another host"
    # (rank 1, GPU 1, python -m launch.rank), the benchmark through the head
    two-hosts)
      hosts=(--profile "$profile" --model "$model" --data-parallel-size 2
        --data-parallel-size-local 1 --data-parallel-address 127.0.0.1
        --data-parallel-rpc-port 13345)
      CUDA_VISIBLE_DEVICES=1 $py -m launch.rank --data-parallel-start-rank 1 "${hosts[@]}" \
        >"$out/two-hosts-rank1.log" 2>&1 &
      rank1=$!
      step two-hosts 150 env CUDA_VISIBLE_DEVICES=0 "$py" -m bench "${hosts[@]}" --thinking on \
        "${extra[@]}" "${both[@]}" --runs 3 --out "$out/two-hosts.json"
      kill -TERM "$rank1"; wait "$rank1" ;;
    # the product itself: app.py on two GPUs, chat, the Benchmark tab, a /predict batch, stop
    e2e) step e2e 240 $py -m perf.e2e --out "$out/e2e" -- --profile "$profile" --model "$model" \
        --data-parallel-size "${E2E_RANKS:-2}" ;;
    *) echo "unknown step $s" | tee -a "$out/steps.txt" ;;
  esac
done
echo "sitting done" | tee -a "$out/steps.txt"
