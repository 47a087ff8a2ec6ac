#!/usr/bin/env bash
# CUDA verification on a GPU machine: build with CELLJEPA_CUDA=ON for one architecture, run the kernel
# tests (CUDA vs C++ vs reference), then the GPU benchmarks. Results and logs go to $OUT (default ./gpu_out).
# Needs python3 with torch, pybind11, scikit-build-core, nvcc and CMake; other wheels may be given in .whl/.
set -uo pipefail
OUT=${OUT:-gpu_out}
ARCH=${CMAKE_CUDA_ARCHITECTURES:-90}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/cj-site .whl/*.whl
fi
export PYTHONPATH=/tmp/cj-build:/tmp/cj-site${PYTHONPATH:+:$PYTHONPATH}
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv > "$OUT/nvidia_smi.csv" 2>&1
start=$(date +%s)
CELLJEPA_CUDA=ON CMAKE_CUDA_ARCHITECTURES=$ARCH CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) \
  python3 -m pip install -q --no-build-isolation --no-deps --target /tmp/cj-build . > "$OUT/build.log" 2>&1 \
  || { echo "build failed"; tail -40 "$OUT/build.log"; exit 1; }
echo "build: $(( $(date +%s) - start )) s" | tee "$OUT/timing.txt"
python3 -c "import json, celljepa._core as c, celljepa._cuda as g; print(json.dumps({'core': c.build_info(), 'cuda': g.build_info()}, indent=1))" \
  | tee "$OUT/build_info.json"
# Kernel tests on every backend (the two tests that read ../shared gene-set files are deselected here).
python3 -m pytest tests/kernels tests/test_package_structure.py -q -p no:cacheprovider \
  -k "not real_hallmark and not gene_module_map_on_hallmark" > "$OUT/pytest_kernels.log" 2>&1
echo "pytest exit $?" | tee -a "$OUT/timing.txt"; tail -5 "$OUT/pytest_kernels.log"
python3 benchmarks/gpu_edistance.py "$OUT/gpu_edistance.json" > "$OUT/gpu_edistance.log" 2>&1
echo "gpu_edistance exit $?" | tee -a "$OUT/timing.txt"; tail -25 "$OUT/gpu_edistance.log"
python3 benchmarks/gpu_masked_encode.py "$OUT/gpu_masked_encode.json" > "$OUT/gpu_masked_encode.log" 2>&1
echo "gpu_masked_encode exit $?" | tee -a "$OUT/timing.txt"; tail -25 "$OUT/gpu_masked_encode.log"
echo "total: $(( $(date +%s) - start )) s" | tee -a "$OUT/timing.txt"
