#!/usr/bin/env bash
# Memory and undefined-behaviour checks of the C core, for CI (.ci/run).
#
#   1. builds specstream._core with SPECSTREAM_SANITIZE=1 (ASan + UBSan,
#      CPU only) into $SS_SANITIZE_DIR, never touching the in-place build;
#      the build is cached there, keyed by a hash of setup.py and csrc/;
#   2. runs the pytest subset listed in tests/sanitize_subset.txt against it
#      (libasan preloaded into the interpreter); every ASan/UBSan report
#      fails the run, and so does any leak whose stack passes through the
#      extension (CPython's own exit-time leaks are ignored);
#   3. tests/c/harness.c (pure C, no interpreter) under ASan + LeakSanitizer
#      (3 and 4 run in the background while 2 runs);
#   4. the same harness under valgrind memcheck: 0 errors, no definite leaks;
#   5. scripts/leakcheck.py with the regular build: RSS and references stay
#      flat over 200 load/generate/free cycles.
#
# Exit status non-zero on any failure; the last line is a summary starting
# with "sanitize: OK" or "sanitize: FAILED".
#
# Environment: PYTHON (interpreter, default python3), SS_SANITIZE_DIR (work
# directory, default $TMPDIR/specstream-sanitize), SS_SANITIZE_STEPS (subset
# of "asan-pytest harness-asan valgrind leakcheck"), SS_SANITIZE_SUBSET
# (another subset file), SS_SANITIZE_PY_LEAKS=0 (no leak detection in the
# Python process).
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
START=$SECONDS
WORK=${SS_SANITIZE_DIR:-${TMPDIR:-/tmp}/specstream-sanitize}
STEPS=${SS_SANITIZE_STEPS:-asan-pytest harness-asan valgrind leakcheck}
PY_LEAKS=${SS_SANITIZE_PY_LEAKS:-1}
SUBSET=${SS_SANITIZE_SUBSET:-tests/sanitize_subset.txt}
JOBS=$(nproc 2>/dev/null || echo 2)
# The real interpreter, not a wrapper script: libasan must be preloaded into
# Python itself, and shells run under it would report their own leaks.
PY=$("${PYTHON:-python3}" -c 'import sys; print(sys.executable)') || { echo "sanitize: FAILED: no python"; exit 2; }
CC=${CC:-gcc}

declare -a SUMMARY=()
FAILED=0
note() { SUMMARY+=("$1"); }
fail() { SUMMARY+=("$1"); FAILED=1; }
has_step() { [[ " $STEPS " == *" $1 "* ]]; }
elapsed() { echo "$(( SECONDS - $1 ))s"; }

# valgrind for step 4 (Debian); without it that step is skipped, except in
# CI, where a check that did not run must not pass.
if has_step valgrind && ! command -v valgrind >/dev/null && command -v apt-get >/dev/null; then
    echo "== sanitize: installing valgrind"
    { apt-get update -qq && apt-get install -y -qq valgrind; } >"${TMPDIR:-/tmp}/specstream-valgrind-install.log" 2>&1 ||
        tail -5 "${TMPDIR:-/tmp}/specstream-valgrind-install.log"
fi

LIBASAN=$($CC -print-file-name=libasan.so)
LIBSTDCXX=$($CC -print-file-name=libstdc++.so)
if [[ ! -e "$LIBASAN" ]]; then
    echo "sanitize: FAILED: $CC has no libasan.so"
    exit 2
fi

# ------------------------------------------------------------ 1. ASan build
KEY=$( (cat setup.py; $CC --version; "$PY" --version; find csrc -type f \( -name '*.c' -o -name '*.h' \) -print0 |
        sort -z | xargs -0 sha1sum) | sha1sum | cut -c1-16)
BUILD="$WORK/$KEY"
EXT_LIB="$BUILD/lib"
EXT_TMP="$BUILD/tmp"
mkdir -p "$WORK"
# Keep only the current build and its predecessor.
ls -1dt "$WORK"/*/ 2>/dev/null | tail -n +3 | xargs -r rm -rf

t0=$SECONDS
SO=$(find "$EXT_LIB" -name '_core*.so' 2>/dev/null | head -1)
if [[ -z "$SO" ]]; then
    echo "== sanitize: building the ASan+UBSan extension in $BUILD"
    rm -rf "$BUILD" && mkdir -p "$BUILD"
    # CPU only: nvcc objects are not instrumented, and the CUDA runtime does
    # not run under ASan's default shadow layout.
    if ! SPECSTREAM_SANITIZE=1 SPECSTREAM_CUDA=0 "$PY" setup.py -q build_ext -j "$JOBS" -b "$EXT_LIB" -t "$EXT_TMP" \
            >"$BUILD/build.log" 2>&1; then
        tail -40 "$BUILD/build.log"
        echo "sanitize: FAILED: the sanitizer build failed (log: $BUILD/build.log)"
        exit 1
    fi
    SO=$(find "$EXT_LIB" -name '_core*.so' | head -1)
    note "build $(elapsed $t0)"
else
    note "build cached"
fi

# The package as Python sees it: the sources of specstream/ (links) plus the
# instrumented extension.
STAGE="$BUILD/stage"
rm -rf "$STAGE" && mkdir -p "$STAGE/specstream"
for f in specstream/* specstream/.[!.]*; do
    [[ -e "$f" ]] || continue
    case "$(basename "$f")" in _core*.so|_core*.pyd|__pycache__) continue ;; esac
    ln -s "$ROOT/$f" "$STAGE/specstream/"
done
cp "$SO" "$STAGE/specstream/"

# ------------------------------------------------ 3./4. the pure-C harness
# Runs in the background while the pytest subset runs (which keeps mostly one
# core busy); its report is printed after it.
CBUILD="$BUILD/ctest"
C_LOG="$BUILD/c_checks.log"
C_SUMMARY="$BUILD/c_checks.summary"
c_checks() {
    local t0 status out leaks
    : >"$C_SUMMARY"
    if has_step harness-asan; then
        echo "== sanitize: tests/c/harness under ASan+UBSan+LSan"
        t0=$SECONDS
        # Reuse the instrumented objects of step 1 (not the CPython binding);
        # when they are gone the Makefile compiles its own.
        local objs
        objs=$(find "$EXT_TMP" -name '*.o' -not -path '*/python/*' -not -path '*/cuda/*' 2>/dev/null | sort | tr '\n' ' ')
        if make -s -j "$JOBS" -C tests/c BUILD="$CBUILD" ASAN_OBJS="$objs" CC="$CC" asan 2>&1 | tail -30; then
            printf 'OK\tharness-asan OK %s\n' "$(elapsed "$t0")" >>"$C_SUMMARY"
        else
            printf 'FAIL\tharness-asan: FAILED (above)\n' >>"$C_SUMMARY"
        fi
    fi
    if has_step valgrind; then
        if command -v valgrind >/dev/null; then
            echo "== sanitize: tests/c/harness under valgrind memcheck"
            t0=$SECONDS
            out=$(make -s -j "$JOBS" -C tests/c BUILD="$CBUILD" CC="$CC" valgrind 2>&1)
            status=$?
            echo "$out" | grep -E "harness:|ERROR SUMMARY|definitely lost|indirectly lost" | head -30
            if [[ $status == 0 ]]; then
                leaks=$(echo "$out" | grep -Eo "definitely lost: [0-9,]+ bytes" | head -1)
                printf 'OK\tvalgrind OK (0 errors, %s) %s\n' "${leaks:-definitely lost: 0 bytes}" "$(elapsed "$t0")" >>"$C_SUMMARY"
            else
                echo "$out" | tail -80
                printf 'FAIL\tvalgrind: errors or definite leaks (exit %s, above)\n' "$status" >>"$C_SUMMARY"
            fi
        elif [[ -n "${CI:-}" ]]; then
            printf 'FAIL\tvalgrind: not installed\n' >>"$C_SUMMARY"
        else
            printf 'OK\tvalgrind SKIPPED (not installed)\n' >>"$C_SUMMARY"
        fi
    fi
}
C_PID=""
if has_step harness-asan || has_step valgrind; then
    c_checks >"$C_LOG" 2>&1 &
    C_PID=$!
fi

# ------------------------------------------------- 2. pytest subset under ASan
LOGS="$BUILD/logs"
check_logs() {  # prints the reports that matter; returns 1 if there are any
    "$PY" - "$LOGS" <<'EOF'
import re, sys
from pathlib import Path
bad = 0
for f in sorted(Path(sys.argv[1]).glob("*")):
    text = f.read_text(errors="replace")
    if re.search(r"ERROR: AddressSanitizer|runtime error:|ERROR: UndefinedBehaviorSanitizer", text):
        print(f"---- {f.name}\n{text}")
        bad += 1
        continue
    if "ERROR: LeakSanitizer" in text:
        # A leak is ours when its allocation stack passes through the
        # extension or the C core; CPython leaves many objects at exit.
        blocks = re.split(r"\n(?=(?:Direct|Indirect) leak of)", text)
        ours = [b for b in blocks[1:] if re.search(r"csrc/|_core\.cpython|\bss_\w+", b)]
        if ours:
            print(f"---- {f.name}: {len(ours)} leak(s) from the extension\n" + "\n".join(ours))
            bad += 1
sys.exit(1 if bad else 0)
EOF
}

if has_step asan-pytest; then
    echo "== sanitize: pytest subset under ASan+UBSan ($(basename "$SO"))"
    t0=$SECONDS
    rm -rf "$LOGS" && mkdir -p "$LOGS"
    mapfile -t ARGS < <(sed -e 's/#.*//' -e 's/[[:space:]]*$//' "$SUBSET" | grep -v '^[[:space:]]*$')
    missing=0
    for a in "${ARGS[@]}"; do
        if [[ "$a" != -* && ! -e "${a%%::*}" ]]; then echo "sanitize: subset entry $a does not exist"; missing=1; fi
    done
    RC_FILE="$BUILD/pytest.rc"
    rm -f "$RC_FILE"
    # libstdc++ too: C++ extensions (matplotlib, ...) throw, and ASan must
    # find __cxa_throw when it starts.
    LD_PRELOAD="$LIBASAN $LIBSTDCXX" \
    ASAN_OPTIONS="detect_leaks=$PY_LEAKS:halt_on_error=1:detect_stack_use_after_return=1:log_path=$LOGS/asan" \
    UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$LOGS/ubsan" \
    PYTHONSAFEPATH=1 PYTHONPATH="$STAGE" PYTHONMALLOC=malloc OMP_NUM_THREADS=2 \
        "$PY" -c '
import os, sys
# Interpreters that tests start inherit the preloaded ASan: a memory error
# still stops them (and lands in the logs), but the exit-time leaks of
# CPython itself would fail their exit status.
os.environ["ASAN_OPTIONS"] = os.environ["ASAN_OPTIONS"].replace("detect_leaks=1", "detect_leaks=0")
import specstream
if not specstream._core.__file__.startswith(sys.argv[1]):
    sys.exit(f"sanitize: imported {specstream._core.__file__}, not the ASan build")
import pytest
rc = int(pytest.main(["-q", "-p", "no:cacheprovider", *sys.argv[3:]]))
open(sys.argv[2], "w").write(str(rc))
sys.exit(rc)
' "$STAGE" "$RC_FILE" "${ARGS[@]}" 2>&1 | tail -25
    rc=$(cat "$RC_FILE" 2>/dev/null || echo crashed)
    if ! check_logs; then
        fail "asan-pytest: SANITIZER REPORT (above; logs in $LOGS)"
    elif [[ "$rc" != 0 ]]; then
        fail "asan-pytest: pytest exit $rc"
    elif [[ $missing != 0 ]]; then
        fail "asan-pytest: $SUBSET names missing files"
    else
        note "asan-pytest OK $(elapsed $t0)"
    fi
fi

if [[ -n "$C_PID" ]]; then
    wait "$C_PID"
    cat "$C_LOG"
    while IFS=$'\t' read -r kind text; do
        if [[ "$kind" == OK ]]; then note "$text"; else fail "$text"; fi
    done <"$C_SUMMARY"
    [[ -s "$C_SUMMARY" ]] || fail "C checks: no result (see $C_LOG)"
fi

# ----------------------------------------------------------- 5. leakcheck
if has_step leakcheck; then
    echo "== sanitize: scripts/leakcheck.py (regular build)"
    t0=$SECONDS
    if ! (cd /tmp && "$PY" -c 'import specstream._core' 2>/dev/null); then
        echo "sanitize: building the regular extension in place (pip install -e . --no-build-isolation)"
        "$PY" -m pip install -q -e . --no-build-isolation >"$WORK/normal-build.log" 2>&1 ||
            { tail -20 "$WORK/normal-build.log"; fail "leakcheck: the regular build failed"; }
    fi
    if OMP_NUM_THREADS=2 "$PY" scripts/leakcheck.py; then
        note "leakcheck OK $(elapsed $t0)"
    else
        fail "leakcheck: memory grows (above)"
    fi
fi

# -------------------------------------------------------------- summary
line=$(printf '%s; ' "${SUMMARY[@]}")
if [[ $FAILED == 0 ]]; then
    echo "sanitize: OK in $(( SECONDS - START ))s: ${line%; }"
else
    echo "sanitize: FAILED in $(( SECONDS - START ))s: ${line%; }"
fi
exit $FAILED
