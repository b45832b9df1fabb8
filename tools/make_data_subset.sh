#!/usr/bin/env bash
# Builds the small real-data subset shipped in the repository (data/cifar10-subset.tar.zst) from the
# full CIFAR-10 JPEG archive in ../shared/data, and copies the demo photos.
#
# Exact command (from the repository root):  bash tools/make_data_subset.sh [../shared/data]
#
# Subset: the first 1,000 train and the first 200 test JPEGs of each CIFAR-10 class (file names
# sorted), same layout as the full archive (cifar10-jpeg/{train,test}/<class>/NNNN.jpg), packed as a
# reproducible tar (sorted names, fixed mtime/owner) compressed with zstd -19.
set -euo pipefail
shared=${1:-../shared/data}
src="$shared/cifar10-jpeg.tar.zst"
[ -f "$src" ] || { echo "missing $src (see ../shared/data/README.md)" >&2; exit 1; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
tar --zstd -xf "$src" -C "$tmp"
out="$tmp/out/cifar10-jpeg"
for split_n in train:1000 test:200; do
  split=${split_n%%:*}; n=${split_n##*:}
  for dir in "$tmp/cifar10-jpeg/$split"/*/; do
    cls=$(basename "$dir")
    mkdir -p "$out/$split/$cls"
    find "$dir" -maxdepth 1 -name '*.jpg' -printf '%f\n' | LC_ALL=C sort | awk -v n="$n" 'NR <= n' |
      while read -r f; do cp "$dir/$f" "$out/$split/$cls/$f"; done
  done
done
mkdir -p data
tar -C "$tmp/out" --sort=name --mtime='2020-01-01 00:00Z' --owner=0 --group=0 --numeric-owner \
  -cf - cifar10-jpeg | zstd -19 -q -o data/cifar10-subset.tar.zst.tmp -f
mv data/cifar10-subset.tar.zst.tmp data/cifar10-subset.tar.zst
mkdir -p data/photos
for p in astronaut.png chelsea.png china.jpg coffee.png flower.jpg rocket.jpg; do
  cp "$shared/photos/$p" data/photos/$p; chmod 644 data/photos/$p
done
ls -l data/cifar10-subset.tar.zst data/photos
