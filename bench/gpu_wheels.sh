#!/usr/bin/env bash
# The wheels bench.gpu_check needs on a lent GPU machine that has only torch, numpy, scipy,
# scikit-learn, h5py and matplotlib and can install nothing: zarr (the sample store), numcodecs,
# pydantic (the run config), PyYAML (the ready configs) and their dependencies, for CPython 3.11
# and 3.12 on manylinux x86_64, into bench/gpu_wheels/ (git-ignored). bench.gpu_check unpacks
# the ones matching its interpreter into a temporary folder and puts it on sys.path.
#
#     bash bench/gpu_wheels.sh            # then carry bench/gpu_wheels (docs/gpu.md)
#
# Versions are those of constraints.txt; dependencies are listed explicitly (--no-deps) so that
# numpy, which the GPU machine has, is not downloaded.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out="$here/gpu_wheels"
pip=${PIP:-"$here/../.venv/bin/pip"}
[ -x "$pip" ] || pip="python3 -m pip"
pin() { grep -i -E "^$1==" "$here/../constraints.txt" | head -1; }
pkgs=()
for p in zarr numcodecs pydantic pydantic_core annotated-types typing-inspection typing_extensions \
         donfig PyYAML google-crc32c packaging; do
  v=$(pin "$p")
  [ -n "$v" ] || { echo "gpu_wheels.sh: $p is not pinned in constraints.txt" >&2; exit 1; }
  pkgs+=("$v")
done
rm -rf "$out.tmp"
for py in 3.11 3.12; do
  $pip download --quiet --no-deps --only-binary=:all: --implementation cp \
    --python-version "$py" --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux_2_28_x86_64 --dest "$out.tmp/cp${py/./}" "${pkgs[@]}"
done
rm -rf "$out" && mv "$out.tmp" "$out"
du -sh "$out"
total=$(du -sk "$out" | cut -f1)
if [ "$total" -gt 40960 ]; then
  echo "gpu_wheels.sh: $out is ${total} KiB, over the 40 MiB share of the 64 MiB carry" >&2
  exit 1
fi
