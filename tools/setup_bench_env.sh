#!/usr/bin/env bash
# Creates the Python environment the benchmark scripts in tools/ need (CPU-only PyTorch, torchvision,
# timm, ONNX Runtime) in .venv-bench/ (git-ignored). Needs network access to PyPI and download.pytorch.org.
# Exact command (repository root):  bash tools/setup_bench_env.sh && . .venv-bench/bin/activate
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv-bench
.venv-bench/bin/pip install --upgrade pip
.venv-bench/bin/pip install --index-url https://download.pytorch.org/whl/cpu torch torchvision
.venv-bench/bin/pip install timm numpy safetensors onnxruntime onnx
echo "ready: . .venv-bench/bin/activate; python3 tools/bench_infer_compare.py --threads 2"
