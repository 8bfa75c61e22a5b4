#!/bin/sh
# 1 rank x 1 thread against 2 ranks x 1 thread with the same global batch
# (docs/distributed.md §9): one epoch of the MLP and of the CNN on the whole
# training set, the test accuracy on the whole test set, the two runs one
# right after the other, RUNS times, with the load average beside each pair.
#
#   scripts/data_parallel_speed.sh [BUILD_DIR] [RUNS] [ARCHS]
#   scripts/data_parallel_speed.sh build 2 "mlp cnn"
#
# The speed-up is the single process's epoch seconds over the 2 ranks'
# (the training loop only: the "seconds" of the epoch in --json, without
# start-up and evaluation). Needs mpirun (Open MPI) and Fashion-MNIST.
#
# The machine's own ceiling is measured beside it: two independent single
# processes at once, one pinned to each core, each training on half the
# training set at the per-rank batch -- each rank's work with no
# communication at all. The 2 ranks cannot beat the slower of the two, so
# "ceiling" = 1 rank s / that time. On two real cores it is near 2x; where
# the two virtual cores are one physical core's two hardware threads (they
# share its vector units) it is near 1x, whatever the training code does.
set -eu
BUILD=${1:-build}
RUNS=${2:-2}
ARCHS=${3:-"mlp cnn"}
TQ="$BUILD/tinyqat"
[ -x "$TQ" ] || { echo "data_parallel_speed.sh: $TQ not found (build first)" >&2; exit 2; }
command -v mpirun >/dev/null || { echo "data_parallel_speed.sh: mpirun not found (apt-get install openmpi-bin)" >&2; exit 2; }
command -v taskset >/dev/null || { echo "data_parallel_speed.sh: taskset not found (apt-get install util-linux)" >&2; exit 2; }
export OPENBLAS_NUM_THREADS=1
# Open MPI refuses root (a container) unless told.
if [ "$(id -u)" = 0 ]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# "<epoch seconds> <test accuracy>" from a --json summary.
field() { python3 -c 'import json,sys; j=json.load(sys.stdin); print(j["epochs"][0]["seconds"], j["accuracy"])'; }
load() { cut -d' ' -f1 /proc/loadavg; }

grep -m1 "model name" /proc/cpuinfo | sed 's/.*: /cpu: /'
echo "cores: $(nproc)"
# Two single processes at once, pinned to cores 0 and 1, each on half the
# training set at batch 32: prints the slower one's epoch seconds.
halves() {
  taskset -c 0 "$TQ" train --arch "$1" --epochs 1 --threads 1 --batch-size 32 --limit-train 30000 --limit-test 1000 \
    --out "$TMP/half0.st" --json >"$TMP/half0.json" &
  taskset -c 1 "$TQ" train --arch "$1" --epochs 1 --threads 1 --batch-size 32 --limit-train 30000 --limit-test 1000 \
    --out "$TMP/half1.st" --json >"$TMP/half1.json"
  wait
  a=$(field <"$TMP/half0.json" | cut -d' ' -f1)
  b=$(field <"$TMP/half1.json" | cut -d' ' -f1)
  python3 -c "import sys; print(max(float(sys.argv[1]), float(sys.argv[2])))" "$a" "$b"
}

printf '%-4s %-3s %10s %10s %8s %12s %8s %12s %12s %6s\n' arch run "1 rank s" "2 ranks s" speed-up "2 halves s" ceiling \
  "acc 1 rank" "acc 2 ranks" load
for arch in $ARCHS; do
  for run in $(seq "$RUNS"); do
    l0=$(load)
    one=$("$TQ" train --arch "$arch" --epochs 1 --threads 1 --batch-size 64 --out "$TMP/one.st" --json | field)
    two=$(mpirun -np 2 "$TQ" train --arch "$arch" --epochs 1 --threads 1 --batch-size 32 --out "$TMP/two.st" --json | field)
    half=$(halves "$arch")
    l1=$(load)
    set -- $one $two
    python3 -c "import sys; a,b,h=float(sys.argv[1]),float(sys.argv[3]),float(sys.argv[8]); print('%-4s %-3s %10.2f %10.2f %7.2fx %12.2f %7.2fx %11.2f%% %11.2f%% %6s' % (sys.argv[5], sys.argv[6], a, b, a/b, h, a/h, float(sys.argv[2]), float(sys.argv[4]), sys.argv[7]))" \
      "$1" "$2" "$3" "$4" "$arch" "$run" "$l0-$l1" "$half"
  done
done
