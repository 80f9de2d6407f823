#!/usr/bin/env bash
# The GPU checks of the agents, run on a lent CUDA machine in one go:
#   1. the test suites of the env and the agents (the CUDA-only tests run there),
#   2. PPO throughput and peak memory in bf16 autocast on the SmolLM2-135M architecture
#      (random weights from its config: same cost per token) for full / frozen / LoRA,
#   3. the rollout throughput table of benchmarks/rollout_throughput.py in bf16.
# Usage: benchmarks/gpu_check.sh MODEL_FOLDER OUT_DIR
set -euo pipefail
model=${1:?model folder with config.json and tokenizer files}
out=${2:?output folder}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
python3 -m pytest -q -p no:cacheprovider tests/test_agents.py tests/test_vector_env.py \
    tests/test_incremental.py 2>&1 | tail -15 || echo "TESTS FAILED (benchmarks still run)"
python3 benchmarks/ppo_training.py --model "$model" --random-init --device cuda \
    --setups full frozen:24 lora:16 --num-envs 64 --new 32 --iterations 4 --epochs 2 \
    --minibatch 32 --accumulation 1 --out "$out/ppo_training_smollm2_cuda.json"
python3 benchmarks/rollout_throughput.py --models smollm2-135m --smollm2-folder "$model" \
    --random-init --prompts builtin --dtype bfloat16 --batches 16 64 --new 32 128 --repeats 2 \
    --out "$out/rollout_smollm2_cuda.json"
