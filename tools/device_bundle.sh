#!/usr/bin/env bash
# Builds the GPU binaries HERE (this machine has nvcc, cuBLAS, cuDNN and Debian's -dev packages)
# for a lent GPU machine, whose image has the CUDA toolkit, CMake and PyTorch but none of
# Debian's -dev packages, no network and no ../shared. Everything the device needs goes into ONE
# git-ignored folder, build-device/, to carry with the device tool (carry: ["build-device"]);
# tools/device_run.sh runs there. See docs/gpu_session.md.
#
#   build-device/payload.tar.gz   gzip of (about 40 % of the raw size):
#       train/train_mnist  tests/gpu/equivae_gpu_tests  bench/equivae_bench   (stripped)
#       lib/         every shared library they need except glibc's and CUDA's (fmt, matio + HDF5
#                    and its dependencies, stb, zlib, libgomp)
#       lib/compat/  libstdc++ and libgcc_s, used there only if the device's own are missing or
#                    too old (device_run.sh decides with ldd)
#       MANIFEST.txt commit, build flags, file sizes
#   build-device/data/mnist/      the four MNIST .gz files (../shared does not travel)
#   build-device/MANIFEST.txt     the same manifest, readable without unpacking
# device_run.sh unpacks the payload into build-device-run/ on the device (git-ignored, not carried).
#
# The CMake build folder is build-cuda/ (object files; not carried), the unpacked payload is
# build-cuda/stage/. No -march=native: the device's CPU is not this one. Fails loudly if the
# working tree plus build-device exceed the device tool's 64 MiB transfer limit.
#   EQUIVAE_CUDA_ARCHITECTURES=90  (default; H100 and H200 are both sm_90)
#   MNIST_DIR=../shared/data/mnist (default)
set -euo pipefail
cd "$(dirname "$0")/.."

build="build-cuda"      # CMake tree, stays here
stage="$build/stage"    # the payload, unpacked (for the checks here)
bundle="build-device"   # what travels
arch="${EQUIVAE_CUDA_ARCHITECTURES:-90}"
mnist_src="${MNIST_DIR:-../shared/data/mnist}"
limit=$((64 * 1024 * 1024))
targets=(train_mnist equivae_gpu_tests equivae_bench)
paths=(train/train_mnist tests/gpu/equivae_gpu_tests bench/equivae_bench)
cmake_args=(-DEQUIVAE_CUDA=ON -DEQUIVAE_NATIVE=OFF
            "-DEQUIVAE_CUDA_ARCHITECTURES=$arch")
mib() { awk -v b="$1" 'BEGIN {printf "%.1f MiB", b / 1048576}'; }

# These folders must be git-ignored, or the device tool would also send them as untracked files.
for d in "$build" "$bundle" build-device-run build-runs; do
  if ! git check-ignore -q "$d/"; then
    echo "device_bundle: $d/ is not git-ignored (add it to .gitignore)" >&2
    exit 1
  fi
done

# ---- build ------------------------------------------------------------------------------------
start=$(date +%s)
# tools/setup.sh: the packages (if missing), configure, and only these targets.
EQUIVAE_BUILD_DIR="$build" EQUIVAE_CMAKE_ARGS="${cmake_args[*]}" EQUIVAE_BUILD_TARGETS="${targets[*]}" bash tools/setup.sh
echo "device_bundle: built in $(( $(date +%s) - start )) s"

# ---- stage: binaries --------------------------------------------------------------------------
rm -rf "$stage" "$bundle"
mkdir -p "$stage/lib/compat" "$bundle/data/mnist"
# The payload's layout is fixed (device_run.sh relies on it) whatever folder of $build CMake puts
# each executable in.
fatbin() { readelf -S -W "$1" | grep -E '\.nv_fatbin|\.nvFatBinSegment' | sed 's/^ *\[ *[0-9]*\]//'; }
for i in "${!targets[@]}"; do
  exe=$(find "$build" -path "$stage" -prune -o -type f -name "${targets[$i]}" -perm -u+x -not -path '*/CMakeFiles/*' \
        -printf '%T@ %p\n' | sort -rn | head -1 | cut -d' ' -f2-)
  [[ -n "$exe" ]] || { echo "device_bundle: built no ${targets[$i]} in $build" >&2; exit 1; }
  p=${paths[$i]}
  mkdir -p "$stage/$(dirname "$p")"
  cp "$exe" "$stage/$p"
  # The CUDA fatbin (.nv_fatbin) is an allocated section and survives strip; only symbol tables
  # go. Checked: the section must be the same before and after.
  strip --strip-unneeded "$stage/$p"
  if [[ -z "$(fatbin "$exe")" || "$(fatbin "$exe")" != "$(fatbin "$stage/$p")" ]]; then
    echo "device_bundle: $p: no CUDA fatbin, or strip changed it; keeping it unstripped" >&2
    cp "$exe" "$stage/$p"
  fi
done

# ---- stage: shared libraries ------------------------------------------------------------------
# All of the binaries' (transitively, as ldd lists them) except glibc's, the loader's and CUDA's
# (the device's driver, toolkit or PyTorch wheels provide those; device_run.sh finds them).
glibc='^(linux-vdso|ld-linux|libc|libm|libmvec|libpthread|libdl|librt|libresolv|libutil|libnsl|libanl|libBrokenLocale|libnss_[a-z]*|libthread_db)\.so'
cuda='^(libcuda|libcudart|libcublas|libcublasLt|libcudnn[a-z_]*|libnvrtc[a-z-]*|libnvJitLink|libnvToolsExt|libcufft|libcurand|libcusparse|libcusolver|libnccl)\.so'
compat='^(libstdc\+\+|libgcc_s)\.so'
missing=0
for p in "${paths[@]}"; do
  while read -r name arrow path _; do
    [[ "$arrow" == "=>" ]] || continue
    if [[ "$path" != /* ]]; then echo "device_bundle: $p: $name not found HERE" >&2; missing=1; continue; fi
    if [[ "$name" =~ $glibc || "$name" =~ $cuda ]]; then continue; fi
    if [[ "$name" =~ $compat ]]; then cp -L "$path" "$stage/lib/compat/$name"; else cp -L "$path" "$stage/lib/$name"; fi
  done < <(ldd "$stage/$p")
done
((missing == 0)) || { echo "device_bundle: unresolved libraries here; fix the build first" >&2; exit 1; }

# Check: with only lib (+compat) on the path, every library resolves there, to glibc, or to CUDA.
bad=0
for p in "${paths[@]}"; do
  while read -r name arrow path _; do
    [[ "$arrow" == "=>" ]] || continue
    [[ "$name" =~ $glibc || "$name" =~ $cuda ]] && continue
    case "$path" in
      "$PWD/$stage/lib/"*) ;;
      *) echo "device_bundle: $p: $name resolves to $path, outside the bundled lib/" >&2; bad=1 ;;
    esac
  done < <(LD_LIBRARY_PATH="$PWD/$stage/lib:$PWD/$stage/lib/compat" ldd "$stage/$p")
done
((bad == 0)) || { echo "device_bundle: bundle incomplete" >&2; exit 1; }

# ---- manifest, payload, data ------------------------------------------------------------------
cudnn_h=$(find /usr/local/cuda/ /usr/include -name cudnn_version.h 2>/dev/null | head -1)
{
  echo "equivae device bundle"
  echo "commit: $(git describe --always --dirty 2>/dev/null || echo unknown)"
  echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ), nvcc $(nvcc --version 2>/dev/null | sed -n 's/.*release \([0-9.]*\).*/\1/p' || true), sm_$arch, Release, no -march=native"
  echo "nvcc code: $(grep -o -E -- '--generate-code=[^ ]*' "$build/build.ninja" | sort -u | tr '\n' ' ')"
  echo "here: $(ldd --version | head -1); cuDNN headers $( [[ -n "$cudnn_h" ]] && awk '/#define CUDNN_(MAJOR|MINOR|PATCHLEVEL) / {v = v (v == "" ? "" : ".") $3} END {print v}' "$cudnn_h")"
  echo "payload files (bytes):"
  (cd "$stage" && find . -type f ! -name MANIFEST.txt | sort | xargs stat -c '  %s %n')
} >"$stage/MANIFEST.txt"
cp "$stage/MANIFEST.txt" "$bundle/MANIFEST.txt"
tar -C "$stage" -cf - . | gzip -9 >"$bundle/payload.tar.gz"

# MNIST: ../shared does not travel, so the data goes inside the bundle.
for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
  if [[ -f "$mnist_src/$f.gz" ]]; then src="$mnist_src/$f.gz"; dst="$bundle/data/mnist/$f.gz"
  elif [[ -f "$mnist_src/$f" ]]; then src="$mnist_src/$f"; dst="$bundle/data/mnist/$f"
  else echo "device_bundle: MNIST file $f(.gz) not in $mnist_src (set MNIST_DIR)" >&2; exit 1; fi
  cp "$src" "$dst"
  chmod u+w "$dst"
done

# ---- what the device tool would transfer --------------------------------------------------------
tree=$({ git ls-files -z --cached --others --exclude-standard | xargs -0 -r stat -c %s 2>/dev/null || true; } |
       awk '{s += $1} END {print s + 0}')
bundled=$(du -sb "$bundle" | cut -f1)
total=$((tree + bundled))
echo "device_bundle: binaries (stripped):"
for p in "${paths[@]}"; do printf '  %-30s %s\n' "$p" "$(mib "$(stat -c %s "$stage/$p")")"; done
echo "device_bundle: lib $(mib "$(du -sb "$stage/lib" | cut -f1)") ($(find "$stage/lib" -type f | wc -l) files);" \
     "payload.tar.gz $(mib "$(stat -c %s "$bundle/payload.tar.gz")") of $(mib "$(du -sb "$stage" | cut -f1)");" \
     "data $(mib "$(du -sb "$bundle/data" | cut -f1)")"
echo "device_bundle: transfer = working tree $(mib "$tree") + $bundle $(mib "$bundled") = $(mib "$total") (limit 64 MiB)"
if ((total >= limit)); then
  echo "device_bundle: OVER THE 64 MiB TRANSFER LIMIT: the device call would fail. Shrink the working tree or the bundle." >&2
  exit 1
fi
echo "device_bundle: ok; $(mib $((limit - total))) to spare (room for a carried build-runs/, see docs/gpu_session.md)"
