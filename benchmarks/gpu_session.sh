#!/usr/bin/env bash
# Every GPU measurement of the CUDA target in one call (under 10 minutes; each step has a timeout):
# correctness and the targets twice (gpu_check), where a step's time goes (gpu_profile),
# the tiled SGEMM's configurations (sgemm_sweep), the first step in a new process with the
# kernel cache cold and warm (cuda_compile_cache), and the CUDA tests on the real GPU.
# Logs go to $OUT (or ./gpu-logs); the summary is printed last.
#   bash benchmarks/gpu_session.sh
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-gpu-logs}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore GRAPHNN_CACHE_DIR=${GRAPHNN_CACHE_DIR:-/tmp/graphnn-gpu-cache}
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
python3 -c "import graphnn" || { echo "graphnn does not import: install its dependencies (a GPU image may lack the graphviz package)"; exit 2; }
timeout 240 python3 -W ignore benchmarks/gpu_check.py --runs 2 --out "$out/gpu_check.txt" > "$out/gpu_check.log" 2>&1
echo "gpu_check: exit $?"
for args in "--sizes 784,512,512,10 --batch 8192" "--sizes 784,512,512,10 --batch 256" "--sizes 1,2,1 --batch 65536"; do
    timeout 40 python3 -W ignore benchmarks/gpu_profile.py $args >> "$out/gpu_profile.txt" 2>&1
    echo "gpu_profile $args: exit $?"
done
timeout 95 python3 -W ignore benchmarks/sgemm_sweep.py --reps 20 > "$out/sgemm_sweep.txt" 2>&1
echo "sgemm_sweep: exit $?"
timeout 40 python3 -W ignore benchmarks/cuda_compile_cache.py > "$out/compile_cache.txt" 2>&1
echo "cuda_compile_cache: exit $?"
# (without the two machine-code checks: they compile for sm_90 on the CPU and need no GPU)
GRAPHNN_TEST_REAL_GPU=1 timeout 95 python3 -m pytest -q -m cuda -p no:cacheprovider -W ignore \
    -k "not float64_ptx and not spill_no_registers" tests/test_cuda_graphs.py tests/test_cuda_loop.py tests/test_cuda_rows.py tests/test_cuda_epilogue.py tests/test_cuda_sgemm.py tests/test_cuda_cache.py tests/test_cuda.py tests/test_cuda_shared_kernels.py tests/test_cuda_staged.py > "$out/pytest.txt" 2>&1
echo "pytest (real GPU): exit $?"; tail -3 "$out/pytest.txt"
cat "$out/compile_cache.txt" "$out/sgemm_sweep.txt" "$out/gpu_profile.txt" "$out/gpu_check.txt"
