#!/usr/bin/env bash
# Coverage-guided fuzzing of every parser of untrusted bytes, FUZZ_SECONDS (default 60) per target:
#   prometheus_text  Milvus /metrics bodies (arbitrary bytes, whole vs chunked must agree)
#   label_selector   the HPA's labelSelector query parameter (external metrics API)
#   keda_metadata    ScaledObject trigger metadata (KEDA external scaler)
#   access_log       segment-cache's access log read back at start (a crash can damage it)
# S3 Range and conditional headers are parsed by s3s before our code sees them; our handling of
# the parsed values is property-tested in crates/segment-cache/tests.
#
# cargo-fuzz with `--sanitizer none` on the stable toolchain: the sanitizer-coverage
# instrumentation libFuzzer needs is a stable `-C passes`/`-C llvm-args` flag, but cargo-fuzz
# also passes `-Z` options, which the stable compiler accepts only with RUSTC_BOOTSTRAP=1 (no
# nightly toolchain can be installed on these machines). Without AddressSanitizer the targets
# find panics, overflows (debug assertions are on) and aborts; there is no `unsafe` to corrupt
# memory in the code under test.
#
# Corpora grow in fuzz/corpus/<target>/ (ignored); a finding is saved in fuzz/artifacts/<target>/
# and the run fails naming it: turn it into a regression test in the crate, then fix.
# Writes fuzz/results.md: per target, executions, coverage (libFuzzer's cov/ft) and findings.
set -euo pipefail
cd "$(dirname "$0")"
export PATH="$HOME/.cargo/bin:$PATH"
export RUSTC_BOOTSTRAP=1
seconds="${FUZZ_SECONDS:-60}"
targets=(prometheus_text label_selector keda_metadata access_log)
command -v cargo-fuzz >/dev/null || { echo "fuzz: cargo-fuzz missing: run bash tests/setup.sh --fuzz"; exit 2; }

# Seeds: the real Milvus 2.3.5 captures (first byte: where the chunked run cuts the body).
mkdir -p corpus/prometheus_text
for f in ../tests/fixtures/*.prom ../crates/milvus-signals/tests/fixtures/milvus-generations/*/*.prom; do
  [ -f "$f" ] || continue
  seed="corpus/prometheus_text/seed-$(basename "$(dirname "$f")")-$(basename "$f")"
  [ -f "$seed" ] || { printf '\x80' > "$seed"; head -c 60000 "$f" >> "$seed"; }
done
mkdir -p corpus/label_selector corpus/keda_metadata corpus/access_log
printf 'milvus=demo,collection in (docs,images),!canary' > corpus/label_selector/seed-1
printf 'milvus=demo\nsignal=search_demand\ntarget=6\nactivationTarget=0.5' > corpus/keda_metadata/seed-1
printf '1733200000 1048576 files/insert_log/1/2/3/4/5\n1733200001 7 files/index%%20files/9\n' > corpus/access_log/seed-1

cargo fuzz build -s none --release --debug-assertions
{
  echo "# Fuzzing run $(date -u '+%Y-%m-%d %H:%M UTC'), ${seconds} s per target (cargo-fuzz, libFuzzer, no sanitizer)"
  echo
  echo "| target | executions | exec/s | coverage (cov / ft) | corpus | findings |"
  echo "|---|---|---|---|---|---|"
} > results.md
failed=0
for t in "${targets[@]}"; do
  log="$(mktemp)"
  rc=0
  cargo fuzz run -s none --release --debug-assertions "$t" "corpus/$t" -- -max_total_time="$seconds" -print_final_stats=1 \
    -rss_limit_mb=2048 >"$log" 2>&1 || rc=$?
  done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -1 || true)
  runs=$(grep -E '^stat::number_of_executed_units' "$log" | awk '{print $2}' || true)
  speed=$(grep -E '^stat::average_exec_per_sec' "$log" | awk '{print $2}' || true)
  cov=$(echo "$done_line" | sed -nE 's/.*cov: ([0-9]+) ft: ([0-9]+).*/\1 \/ \2/p')
  corp=$(echo "$done_line" | sed -nE 's/.*corp: ([0-9]+)\/.*/\1/p')
  finding="none"
  if [ "$rc" -ne 0 ]; then
    failed=1
    finding=$(ls -t "artifacts/$t"/* 2>/dev/null | head -1 || echo "exit $rc, see log")
    echo "fuzz: $t FOUND A PROBLEM ($finding); log tail:"; tail -30 "$log"
  fi
  echo "| $t | ${runs:-?} | ${speed:-?} | ${cov:-?} | ${corp:-?} | $finding |" >> results.md
  echo "fuzz: $t: ${runs:-?} runs, cov/ft ${cov:-?}, findings: $finding"
  rm -f "$log"
done
cat results.md
exit "$failed"
