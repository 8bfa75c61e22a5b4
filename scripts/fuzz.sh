#!/usr/bin/env bash
# Fuzzes the file readers with libFuzzer + ASan + UBSan (docs/reliability.md).
#
#   scripts/fuzz.sh [seconds-per-target] [target ...]     targets: idx safetensors model checkpoint
#
# Builds fuzz/ with clang into build-fuzz/, rewrites the seed files
# (fuzz/corpus/<target>/seed-*), runs each target for the given time
# (default 60 s) on a working corpus in build-fuzz/work/<target>/, then
# rewrites fuzz/corpus/<target>/ as the seeds plus a minimal set of small
# inputs covering every edge reached so far. A crash, hang (> 10 s), leak,
# sanitizer report, violated property or allocation above 2 GiB is saved in
# fuzz/corpus/regressions/<target>/; the script then exits 1. tests/test_fuzz_regressions.cpp feeds every file of
# fuzz/corpus to the same entry points in the normal build, so commit them.
#
# Environment: FUZZ_JOBS=n runs n targets at once (default 1);
# FUZZ_MAX_LEN (default 1048576) is the largest input the fuzzer makes: large
# enough for headers of thousands of tensors, now that every reader is linear
# in its input; FUZZ_MERGE=0 leaves the committed corpus as it is;
# FUZZ_COMMIT_MAX_BYTES (default 8192) keeps larger inputs out of it (they
# stay in build-fuzz/work/); FUZZ_LEN_CONTROL (libFuzzer's -len_control,
# default 100) set to 0 lets inputs grow to FUZZ_MAX_LEN at once instead of
# slowly (by default libFuzzer grows them only as coverage stops growing).
# Needs clang and libclang-rt-14-dev (apt-get install clang libclang-rt-14-dev);
# not part of scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(idx safetensors model checkpoint)
jobs=${FUZZ_JOBS:-1}
merge=${FUZZ_MERGE:-1}
commit_max_bytes=${FUZZ_COMMIT_MAX_BYTES:-8192}
max_len=${FUZZ_MAX_LEN:-1048576}
len_control=${FUZZ_LEN_CONTROL:-100}

bash scripts/setup.sh fuzz  # clang and libFuzzer's runtime
command -v clang++ >/dev/null || { echo "fuzz.sh: clang++ not found: apt-get install clang libclang-rt-14-dev" >&2; exit 2; }
cmake -S fuzz -B build-fuzz -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build-fuzz -j"$(nproc)" >/dev/null
./build-fuzz/make_corpus fuzz/corpus

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
mkdir -p build-fuzz/logs fuzz/corpus/regressions

run_target() {
  local t=$1
  local work=build-fuzz/work/$t regressions=fuzz/corpus/regressions/$t
  mkdir -p "$work" "$regressions"
  # New inputs go to the first folder (work); the committed corpus and the
  # regressions are read as seeds, so a regression that crashes again stops the run.
  local start rc=0
  start=$(date +%s)
  ./build-fuzz/fuzz_"$t" "$work" "fuzz/corpus/$t" "$regressions" \
    -max_total_time="$seconds" -max_len="$max_len" -len_control="$len_control" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=2048 \
    -artifact_prefix="$regressions/" -print_final_stats=1 >"build-fuzz/logs/$t.log" 2>&1 || rc=$?
  echo "$rc $(($(date +%s) - start))" >"build-fuzz/logs/$t.result"
}

before=$(find fuzz/corpus/regressions -type f | wc -l)
running=0
for t in "${targets[@]}"; do
  echo "fuzz.sh: fuzzing $t for ${seconds}s (log: build-fuzz/logs/$t.log)"
  run_target "$t" &
  running=$((running + 1))
  if [ "$running" -ge "$jobs" ]; then wait -n; running=$((running - 1)); fi
done
wait

status=0
for t in "${targets[@]}"; do
  log=build-fuzz/logs/$t.log
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  read -r rc time_s <"build-fuzz/logs/$t.result"
  if [ "$rc" = 0 ]; then
    echo "fuzz.sh: $t: ${execs:-?} executions in ${time_s} s, no failure"
  else
    # libFuzzer stops at the first failure and exits non-zero.
    echo "fuzz.sh: $t: FAILURE after ${execs:-?} executions in ${time_s} s (exit code $rc):"
    grep -E 'SUMMARY|ERROR|runtime error|property violated|ALARM|out-of-memory|malloc limit|Test unit written' "$log" |
      head -6 | sed 's/^/    /'
    status=1
  fi
  if [ "$merge" = 1 ]; then
    # The committed corpus: the seeds plus a small set of inputs that together
    # reach every edge the whole corpus reaches (greedy set cover, edges only:
    # -use_counters=0). The full corpus stays in build-fuzz/work/ for next time.
    merged=build-fuzz/merged/$t
    rm -rf "$merged" && mkdir -p "$merged"
    if ./build-fuzz/fuzz_"$t" -use_counters=0 -set_cover_merge=1 "$merged" "fuzz/corpus/$t" "build-fuzz/work/$t" \
         >>"$log" 2>&1; then
      seeds=$(sha1sum fuzz/corpus/"$t"/seed-* | cut -d' ' -f1)
      find "fuzz/corpus/$t" -type f ! -name 'seed-*' -delete
      for f in "$merged"/*; do
        [ -e "$f" ] || continue
        [ "$(stat -c %s "$f")" -le "$commit_max_bytes" ] || continue
        grep -qx "$(basename "$f")" <<<"$seeds" || cp "$f" "fuzz/corpus/$t/"
      done
    else
      echo "fuzz.sh: $t: merge failed (see $log); the committed corpus is unchanged"
    fi
  fi
  echo "fuzz.sh: $t: committed corpus now $(find "fuzz/corpus/$t" -type f | wc -l) files," \
       "$(du -sh --apparent-size "fuzz/corpus/$t" | cut -f1)"
done
after=$(find fuzz/corpus/regressions -type f | wc -l)
if [ "$after" -gt "$before" ]; then
  echo "fuzz.sh: $((after - before)) new regression file(s) in fuzz/corpus/regressions/: fix the reader, then commit them"
  status=1
fi
exit "$status"
