#!/usr/bin/env bash
# Every GPU check and benchmark in two calls of about five minutes each on an H200, for a lent
# CUDA machine (the device tool). Prepare .gpu/ here first (benchmarks/gpu_prepare.sh), then:
#   run(command="bash benchmarks/gpu_check.sh $OUT a", carry=[".gpu"], timeout_s=420)
#   run(command="bash benchmarks/gpu_check.sh $OUT b", carry=[".gpu"], timeout_s=420)
# Part a: the engine and agent tests on CUDA (static vs full recomputation, ragged appends of
#         dialogue turns, compiled CUDA-graph
#         step vs eager without recompiles, bf16 engines against float32, PPO in bf16), then
#         benchmarks/engine_step.py: the step's latency, SmolLM2-135M at batch 64 and 256 with a
#         256-token cache, Qwen2.5-0.5B's shape at batch 64 (random weights, bf16).
# Part b: benchmarks/rollout_throughput.py (env dynamic / compiled, fused loop, generate with a
#         dynamic cache and with a static cache + torch.compile) and benchmarks/ppo_training.py
#         (PPO tokens/s, rollout and update seconds, dynamic and compiled static engines).
# Part c: benchmarks/shared_compute.py (issue 27): Arithmetic, SmolLM2's shape frozen:24, RLOO
#         over 32 rows, everything shared / the trunk alone / nothing, side by side.
#   run(command="bash benchmarks/gpu_check.sh $OUT c", carry=[".gpu"], timeout_s=420)
# Each step has its own time limit, so a failure costs only its step; logs and JSON go to OUT.
# A dry run of the plumbing on CPU, tiny sizes, the local venv (run it before a device call):
#   SMOKE=1 PYTHON=.venv/bin/python bash benchmarks/gpu_check.sh /tmp/gpu-dry a   (then b)
set -uo pipefail
out=${1:?output folder}
part=${2:-a}
mkdir -p "$out"
model=.gpu/smollm2-config
python=${PYTHON:-python3}
device=cuda batches="64 256" batch=64 new="32 128" envs=64 iterations=4 minibatch=32 cache=256
small=smollm2-135m large=qwen2.5-0.5b
if [ -n "${SMOKE:-}" ]; then
    device=cpu batches=2 batch=2 new=4 envs=4 iterations=2 minibatch=4 cache=40
    small=tiny-gpt2 large=tiny-gpt2
else
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site \
        .gpu/wheels/*.whl || { echo "wheel install failed"; exit 1; }
    export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONUNBUFFERED=1 TORCHINDUCTOR_CACHE_DIR=/tmp/inductor TOKENIZERS_PARALLELISM=false
step() {  # step NAME SECONDS COMMAND...: run with a limit, keep the log, say how it ended
    local name=$1 limit=$2
    shift 2
    echo "== $name (limit ${limit}s)"
    timeout "$limit" "$@" > "$out/$name.log" 2>&1
    local status=$?
    grep -v -E "^\[transformers\]|it/s\]|s/it\]" "$out/$name.log" | tail -n 25
    echo "== $name: exit $status"
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null
"$python" -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
shared_model=$model random_init=--random-init
[ -n "${SMOKE:-}" ] && shared_model=tiny random_init=
if [ "$part" = a ]; then
    step tests 150 "$python" -m pytest -q -p no:cacheprovider -x tests/test_engines.py \
        tests/test_agents.py -k "cuda or full_recomputation or compiled or append"
    # shellcheck disable=SC2086  # the size lists split on purpose
    step engine_step_smollm2 120 "$python" benchmarks/engine_step.py --models $small \
        --batches $batches --cache $cache --repeats 2 --device $device \
        --out "$out/engine_step_smollm2_$device.json"
    step engine_step_qwen 75 "$python" benchmarks/engine_step.py --models $large \
        --batches $batch --cache $cache --repeats 1 --device $device \
        --out "$out/engine_step_qwen_$device.json"
elif [ "$part" = b ]; then
    # shellcheck disable=SC2086
    step rollout 180 "$python" benchmarks/rollout_throughput.py --models smollm2-135m \
        --smollm2-folder "$model" --random-init --prompts builtin --dtype bfloat16 \
        --batches $batch --new $new --repeats 2 \
        --rows env_dynamic env_compiled fused_loop generate generate_compiled \
        --out "$out/rollout_smollm2_$device.json"
    step ppo 150 "$python" benchmarks/ppo_training.py --model "$model" --random-init \
        --device $device --setups full frozen:24 --num-envs $envs --new 32 \
        --iterations $iterations --epochs 2 --minibatch $minibatch --accumulation 1 \
        --engine static --out "$out/ppo_training_smollm2_${device}_static.json"
    step ppo_dynamic 60 "$python" benchmarks/ppo_training.py --model "$model" --random-init \
        --device $device --setups full --num-envs $envs --new 32 --iterations $iterations \
        --epochs 2 --minibatch $minibatch --accumulation 1 --engine dynamic \
        --out "$out/ppo_training_smollm2_${device}_dynamic.json"
fi
if [ "$part" = c ]; then
    # shellcheck disable=SC2086
    step shared_compute 300 "$python" benchmarks/shared_compute.py --model "$shared_model" \
        $random_init --device $device --num-envs 32 --iterations $iterations \
        --settings on trunk off --out "$out/shared_compute_arithmetic_$device.json"
fi
