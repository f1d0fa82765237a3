#!/usr/bin/env bash
# Builds the GPU binaries HERE (this machine has nvcc and every library) for the lent GPU
# machine, whose image has the CUDA toolkit, CMake and PyTorch but none of Debian's -dev
# packages and no network. Output: build-device/ with the binaries and, in build-device/lib,
# the shared libraries they need that the device image may lack (fmt, matio + HDF5, stb,
# libstdc++). Carry build-device with the device tool (carry: ["build-device"]) and run
# tools/device_run.sh there. No -march=native: the device's CPU is not this one.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh >/dev/null  # packages (idempotent); its own build folder is not used here
dir=build-device
cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=Release -DEQUIVAE_CUDA=ON -DEQUIVAE_NATIVE=OFF >/dev/null
cmake --build "$dir" -j "$(nproc)" --target equivae_gpu_tests equivae_bench train_mnist equivae_tests
mkdir -p "$dir/lib"
# Every shared library of the binaries except the C library, the loader and CUDA's own
# (the device's driver and toolkit provide those).
for bin in "$dir/tests/gpu/equivae_gpu_tests" "$dir/bench/equivae_bench" "$dir/train/train_mnist" "$dir/tests/equivae_tests"; do
  ldd "$bin" | awk '/=>/ {print $3}' | grep -v -E 'libc\.so|libm\.so|ld-linux|libpthread|libdl\.|librt\.|libcuda|libcudart|libcublas|libcudnn|libnvrtc|libnvJitLink' || true
done | sort -u | xargs -r cp -L -t "$dir/lib"
du -sh "$dir" "$dir/lib"
