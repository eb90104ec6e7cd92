#!/usr/bin/env bash
# Every GPU check in one run, for a machine with an NVIDIA GPU and no network:
#
#   bash benchmarks/gpu_checks.sh OUTDIR
#
# Uses the machine's python3 (torch with CUDA, cuda-python, CuPy where present) and
# semfuse-rt as installed or importable there. Each step has its own time limit and its log
# in OUTDIR, so one failing step does not hide the others. The exit status is the worst step's.
#
# Where that machine has no network, build a wheel beside the checkout first
# (`pip wheel --no-deps -w WHEELS .`, plus platformdirs), install it there with
# `pip install --no-deps --target DIR WHEELS/*.whl`, and run with PYTHONPATH=DIR. Point
# SEMFUSE_RT_DATASETS at a copy of a few shared pairs for the fuse-parity check; without
# the Oxford weights the VGG19 checks use seeded random weights of the same shapes.
# The test-only helpers these checks use (kernel parity, traffic model, quadratic runner) are
# read from this checkout's tests/support/, which no wheel ships: run from the checkout's root.
set -u
out=${1:-benchmarks/out/gpu}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
status=0

step() {  # step NAME SECONDS COMMAND...
    local name=$1 seconds=$2
    shift 2
    echo "=== $name"
    timeout "$seconds" "$@" >"$out/$name.log" 2>&1
    local rc=$?
    cat "$out/$name.log"
    echo "=== $name: exit $rc"
    [ "$rc" -gt "$status" ] && status=$rc
}

nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv | tee "$out/gpu.csv"
python3 -c "import sys, numpy, torch; print(sys.version.split()[0], 'numpy', numpy.__version__, 'torch', torch.__version__)"
step pytest 240 python3 -P -m pytest -q -p no:cacheprovider \
    tests/test_nvrtc.py tests/test_torch_rules.py tests/test_fusion_rules.py \
    tests/test_first_layer_gradient.py tests/test_cuda_runner.py
step kernels 180 python3 benchmarks/kernels_gpu.py
step trt_gpu_check 300 python3 benchmarks/trt_gpu_check.py --pairs 4 --json "$out/trt_gpu_check.json"
exit $status
