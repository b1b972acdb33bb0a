#!/usr/bin/env bash
# Runs the fuzz targets for a bounded time; exits non-zero on any crash,
# hang, leak, sanitizer report or broken contract.
#
#   fuzz/run.sh TARGET [SECONDS]     one target (default 60 s)
#   fuzz/run.sh all [SECONDS]        every target, SECONDS each (CI: all 12)
#   fuzz/run.sh list                 the target names
#
# Python targets (atheris, coverage of the Python parsers):
#   safetensors     specstream.safetensors.read_header + load on arbitrary bytes
#   load            specstream.load on a directory: fuzzed config.json + model.safetensors
#   config          ModelConfig.from_json / from_dict on arbitrary bytes and JSON values
#   tokenizer_json  Tokenizer.from_str on mutated tokenizer.json text
#   tokenizer_py    Tokenizer encode/decode/decode_stream through the binding, real vocabulary
# C targets (libFuzzer + AddressSanitizer + UBSan on csrc/tokenizer, clang):
#   tokenizer_encode  ss_tokenizer_encode on arbitrary bytes, 4 tokenizer configurations
#   tokenizer_decode  ss_tokenizer_decode / decode stream on arbitrary id arrays
#   tokenizer_config  ss_tokenizer_create on fuzzed vocabularies, merges and added tokens
#
# Each run first replays fuzz/regressions/TARGET/* (past crashes), then fuzzes
# from the seeds in fuzz/corpus/TARGET plus what earlier runs found (kept in
# $SPECSTREAM_FUZZ_WORK, default /tmp/specstream-fuzz). Reproducers of new
# crashes are written to $SPECSTREAM_FUZZ_WORK/TARGET/artifacts/ and listed
# at the end. Environment: PYTHON (default python3), CLANG (default clang-14
# or clang), SPECSTREAM_FUZZ_STRICT=1 (Python targets: only each parser's own
# documented exception class counts as a clean rejection), SPECSTREAM_FUZZ_SEED=N
# (libFuzzer's -seed: the same mutations on every run; CI sets it).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(dirname "$HERE")
PY=${PYTHON:-python3}
WORK=${SPECSTREAM_FUZZ_WORK:-${TMPDIR:-/tmp}/specstream-fuzz}
PY_TARGETS="safetensors load config tokenizer_json tokenizer_py"
C_TARGETS="tokenizer_encode tokenizer_decode tokenizer_config"

usage() { sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
[ $# -ge 1 ] || usage
TARGET=$1
SECS=${2:-60}
case "$SECS" in ''|*[!0-9]*) usage ;; esac
if [ "$TARGET" = list ]; then echo $PY_TARGETS $C_TARGETS; exit 0; fi
if [ "$TARGET" = all ]; then TARGETS="$PY_TARGETS $C_TARGETS"; else TARGETS=$TARGET; fi
for t in $TARGETS; do
    case " $PY_TARGETS $C_TARGETS " in *" $t "*) ;; *) echo "fuzz: unknown target '$t' (fuzz/run.sh list)" >&2; exit 2 ;; esac
done
mkdir -p "$WORK"

need_atheris() {
    "$PY" -c "import atheris" 2>/dev/null && return 0
    echo "fuzz: installing atheris" >&2
    "$PY" -m pip install -q --disable-pip-version-check atheris >&2
}

CC_FUZZ=${CLANG:-}
links_libfuzzer() {  # Debian ships clang's libFuzzer in a package of its own (libclang-rt-*-dev)
    printf '#include <stddef.h>\n#include <stdint.h>\nint LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { (void)d; (void)n; return 0; }\n' |
        "$1" -x c -fsanitize=fuzzer,address,undefined - -o "$WORK/.libfuzzer-probe" >/dev/null 2>&1
}
need_clang() {
    [ -n "$CC_FUZZ" ] && return 0
    local c
    for c in clang-14 clang clang-15 clang-16 clang-17 clang-18; do
        if command -v "$c" >/dev/null 2>&1 && links_libfuzzer "$c"; then CC_FUZZ=$c; return 0; fi
    done
    echo "fuzz: installing clang and libFuzzer" >&2
    if command -v apt-get >/dev/null 2>&1; then
        apt-get update -qq >&2 && apt-get install -y -qq clang libclang-rt-dev >&2
    fi
    links_libfuzzer clang || { echo "fuzz: no clang that links libFuzzer: cannot build the C targets" >&2; exit 1; }
    CC_FUZZ=clang
}

# The C harness links the tokenizer sources as they are in the working tree,
# rebuilt when a source or header is newer than its object. UBSan stops at
# the first report except pointer-overflow, whose known reports
# fuzz/c/ubsan.supp lists (halt_on_error still stops at the others).
# shellcheck disable=SC2054  # the commas belong to the flags
SAN_FLAGS=(-fsanitize=address,undefined -fno-sanitize-recover=all -fsanitize-recover=pointer-overflow
           -fno-omit-frame-pointer)
C_FLAGS=(-std=c11 -g -O1 -Wall -Wextra -Werror -I"$REPO/csrc/include" -I"$REPO/csrc")
build_c() {  # build_c MODE -> prints the binary's path
    local mode=$1 out="$WORK/build/tokenizer_$1" obj="$WORK/build/obj"
    mkdir -p "$obj"
    # The core's sources once (instrumented for coverage, not linked with
    # libFuzzer's main), then each harness mode against them.
    local src o objs=()
    for src in "$REPO"/csrc/tokenizer/*.c "$REPO/csrc/common.c"; do
        o="$obj/$(basename "$(dirname "$src")")_$(basename "$src" .c).o"
        if [ ! -f "$o" ] || [ -n "$(find "$src" "$REPO"/csrc/tokenizer/*.h "$REPO"/csrc/include/*.h "$REPO"/csrc/common.h \
                -newer "$o" 2>/dev/null | head -1)" ]; then
            "$CC_FUZZ" "${C_FLAGS[@]}" "${SAN_FLAGS[@]}" -fsanitize=fuzzer-no-link -c "$src" -o "$o.tmp" >&2
            mv "$o.tmp" "$o"
        fi
        objs+=("$o")
    done
    if [ ! -x "$out" ] || [ -n "$(find "$HERE/c/tokenizer_fuzz.c" "${objs[@]}" -newer "$out" 2>/dev/null | head -1)" ]; then
        local mflag
        mflag=$(echo "$mode" | tr a-z A-Z)
        "$CC_FUZZ" "${C_FLAGS[@]}" "${SAN_FLAGS[@]}" -fsanitize=fuzzer -DFUZZ_"$mflag" \
            "$HERE/c/tokenizer_fuzz.c" "${objs[@]}" -o "$out.tmp" >&2
        mv "$out.tmp" "$out"
    fi
    echo "$out"
}

tokenizer_dump() {  # the real tokenizer for the encode/decode targets
    local out="$WORK/tokenizer.bin" src
    src=$(cd "$HERE" && "$PY" -c "import _common; print(_common.real_tokenizer_json())")
    if [ ! -s "$out" ] || [ "$src" -nt "$out" ] || [ "$HERE/c/dump_tokenizer.py" -nt "$out" ]; then
        (cd "$REPO" && PYTHONPATH="$REPO" "$PY" "$HERE/c/dump_tokenizer.py" "$src" "$out.tmp") && mv "$out.tmp" "$out"
    fi
    echo "fuzz: tokenizer for the C targets: $src" >&2
    echo "$out"
}

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:allocator_may_return_null=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1:suppressions=$HERE/c/ubsan.supp}

FAILED=""
SUMMARY=""
for t in $TARGETS; do
    dir="$WORK/$t"
    mkdir -p "$dir/corpus" "$dir/artifacts"
    flags=(-max_total_time="$SECS" -timeout=20 -rss_limit_mb=3072 -artifact_prefix="$dir/artifacts/"
           -print_final_stats=1)
    # A fixed seed makes a CI run repeat the same mutations (up to how far it gets in SECS).
    if [ -n "${SPECSTREAM_FUZZ_SEED:-}" ]; then flags+=(-seed="$SPECSTREAM_FUZZ_SEED"); fi
    case $t in safetensors|load|config|tokenizer_json) flags+=(-dict="$HERE/json.dict") ;; esac
    case $t in load|tokenizer_json) flags+=(-max_len=65536) ;; tokenizer_config) flags+=(-max_len=2048 -len_control=0) ;; esac
    if [[ " $PY_TARGETS " == *" $t "* ]]; then
        need_atheris
        cmd=("$PY" "$HERE/fuzz_$t.py")
    else
        need_clang
        bin=$(build_c "${t#tokenizer_}")
        export SS_FUZZ_TOKENIZER
        SS_FUZZ_TOKENIZER=$(tokenizer_dump)
        cmd=("$bin")
    fi
    log="$dir/fuzz.log"
    # 1. Past crashes must stay fixed.
    reg=()
    if [ -d "$HERE/regressions/$t" ]; then
        while IFS= read -r -d '' f; do reg+=("$f"); done < <(find "$HERE/regressions/$t" -type f ! -name '*.md' -print0 | sort -z)
    fi
    if [ ${#reg[@]} -gt 0 ]; then
        if ! (cd "$dir" && "${cmd[@]}" -timeout=20 -rss_limit_mb=3072 "${reg[@]}") >"$dir/regressions.log" 2>&1; then
            echo "fuzz: $t: a regression input fails again:" >&2
            tail -40 "$dir/regressions.log" >&2
            FAILED="$FAILED $t"
            SUMMARY="$SUMMARY\n  $t: REGRESSION (see $dir/regressions.log)"
            continue
        fi
    fi
    # 2. Fuzz.
    echo "fuzz: $t for ${SECS}s ..." >&2
    rc=0
    (cd "$dir" && "${cmd[@]}" "${flags[@]}" "$dir/corpus" "$HERE/corpus/$t") >"$log" 2>&1 || rc=$?
    runs=$(grep -Eo 'Done [0-9]+ runs' "$log" | tail -1 | grep -Eo '[0-9]+' || true)
    [ -n "$runs" ] || runs=$(grep -Eo 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -Eo '[0-9]+$' | tail -1 || true)
    cov=$(grep -Eo 'cov: [0-9]+' "$log" | tail -1 || true)
    corpus=$(find "$dir/corpus" -type f | wc -l)
    if [ $rc -ne 0 ]; then
        echo "fuzz: $t FAILED (exit $rc); last lines of $log:" >&2
        tail -60 "$log" >&2
        FAILED="$FAILED $t"
        SUMMARY="$SUMMARY\n  $t: FAILED after ${runs:-?} runs; reproducer(s): $(ls "$dir"/artifacts/ 2>/dev/null | tr '\n' ' ')"
    else
        SUMMARY="$SUMMARY\n  $t: ok, ${runs:-?} runs in ${SECS}s, ${cov:-cov: ?}, corpus $corpus"
    fi
done
printf "fuzz summary:%b\n" "$SUMMARY"
if [ -n "$FAILED" ]; then
    echo "fuzz: FAILED:$FAILED (reproducers under $WORK/<target>/artifacts/)"
    exit 1
fi
