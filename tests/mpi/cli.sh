#!/usr/bin/env bash
# The command line under mpirun (docs/distributed.md), run by ctest:
#   cli.sh <tinyqat> <work dir> <case>
# resume   an interrupted 2-rank train resumed on 2 ranks ends with the same
#          model file, byte for byte, as an uninterrupted one; resuming on
#          another number of ranks is refused with a clear message.
# qat      2-rank train then qat of a small CNN: rank 0 alone writes and prints.
set -euo pipefail
tq=$1 work=$2 case=$3
rm -rf "$work" && mkdir -p "$work" && cd "$work"
mpi=(mpirun -np 2)
fail() { echo "FAIL: $*" >&2; exit 1; }

case "$case" in
resume)
  common=(--arch mlp --hidden 32 --limit-train 600 --limit-test 200 --epochs 2 --batch-size 16 --seed 3 --threads 1)
  "${mpi[@]}" "$tq" train "${common[@]}" --out full.st --json > full.json
  "${mpi[@]}" "$tq" train "${common[@]}" --out part.st --checkpoint-every 7 --checkpoint ck.st --stop-after 25 \
    > stopped.txt || true
  [ -f ck.st ] || fail "no checkpoint after the interrupted run"
  [ ! -f part.st ] || fail "the interrupted run wrote its model"
  "${mpi[@]}" "$tq" train --resume ck.st --out part.st --json > resumed.json
  cmp full.st part.st || fail "the resumed run's model differs from the uninterrupted run's"
  [ "$(wc -l < full.json)" -eq 1 ] || fail "rank 0 alone prints: expected one line, got $(wc -l < full.json)"
  # One process cannot resume a 2-rank run.
  if "$tq" train --resume ck.st --out other.st 2> err.txt; then fail "a 1-process resume of a 2-rank checkpoint ran"; fi
  grep -q "saved by a run of 2 rank(s), this run has 1" err.txt || { cat err.txt; fail "no clear world-size message"; }
  echo "resume: ok"
  ;;
qat)
  "${mpi[@]}" "$tq" train --arch cnn --limit-train 256 --limit-test 100 --epochs 1 --batch-size 16 --threads 1 \
    --out float.st > train.txt
  [ "$(grep -c "float model" train.txt)" -eq 1 ] || { cat train.txt; fail "expected one summary (rank 0's)"; }
  "${mpi[@]}" "$tq" qat --from float.st --limit-train 256 --limit-test 100 --epochs 1 --batch-size 16 --threads 1 \
    --out int8.st --json > qat.json
  [ "$(wc -l < qat.json)" -eq 1 ] || fail "expected one JSON line"
  grep -q '"accuracy"' qat.json || fail "no accuracy in $(cat qat.json)"
  "$tq" eval --model int8.st --limit-test 100 > /dev/null 2>&1 || "$tq" inspect --model int8.st > /dev/null
  echo "qat: ok"
  ;;
*) fail "unknown case $case" ;;
esac
