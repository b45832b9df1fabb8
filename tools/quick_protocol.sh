#!/usr/bin/env bash
# "It learns": the quick CPU configuration of Split CIFAR-10/2 with the small edge CNN and Barlow
# Twins, Fine-tune vs CaSSLe vs CroMo-Mixup with the same seed and budget, then one comparison
# table. Every run also evaluates its random-init encoder before the first task (the baseline
# the trained encoders are compared with: "LA at start" in the table).
#
# Exact command (repository root, after `cargo build --release`):
#     bash tools/quick_protocol.sh [OUT_DIR]            # default OUT_DIR: runs/quick
# Data: ../shared/data/cifar10-jpeg.tar.zst (or $CROMO_SHARED_DATA); set DATA=data/cifar10-subset.tar.zst
# to use the subset shipped in the repository instead. Budget knobs (environment):
#     IPC (train images per class, default 1000), TEST_IPC (default 1000), EPOCHS (per task, default 10),
#     BATCH (default 128), THREADS (default 2), SEED (default 0).
# Measured on a 2-core machine (2026-11-24): the defaults take 6.5 / 8.4 / 10.0 min for finetune /
# cassle / cromo (final LA 43.74 / 43.80 / 44.16 %, random init 39.77 %). DESIGN §5's protocol is
#     IPC=5000 EPOCHS=6 BATCH=256 bash tools/quick_protocol.sh runs/design
# (finetune: 19.4 min, final LA 49.56 % and kNN 45.20 % against 43.52 % / 37.74 % at random init).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/quick}
DATA=${DATA:-cifar10}
IPC=${IPC:-1000}
TEST_IPC=${TEST_IPC:-1000}
EPOCHS=${EPOCHS:-10}
BATCH=${BATCH:-128}
THREADS=${THREADS:-2}
SEED=${SEED:-0}
CROMO=${CROMO:-target/release/cromo}
mkdir -p "$OUT"
start=$(date +%s)
for s in finetune cassle cromo; do
  if [ -f "$OUT/$s/checkpoint.json" ]; then
    echo "== $s: resuming (a finished run stays as it is)"
    "$CROMO" train --resume "$OUT/$s" --threads "$THREADS"
  else
    echo "== $s"
    "$CROMO" train --data "$DATA" --tasks 2 --arch small-cnn --method barlow --strategy "$s" \
      --images-per-class "$IPC" --test-images-per-class "$TEST_IPC" --epochs-per-task "$EPOCHS" \
      --batch "$BATCH" --buffer 500 --buffer-batch 64 --eval both --seed "$SEED" \
      --threads "$THREADS" --out "$OUT/$s"
  fi
done
"$CROMO" compare "$OUT/finetune" "$OUT/cassle" "$OUT/cromo" --out "$OUT/compare.md"
echo "total wall time: $(( $(date +%s) - start )) s"
