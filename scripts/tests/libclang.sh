#!/usr/bin/env bash
# Tests scripts/lib/libclang.sh, the libclang detection scripts/setup-deps relies on, against
# directory layouts and `ldconfig -p` listings of the machines it must be right about — above
# all the one of issue 12: Debian with libclang-cpp installed and libclang not. Needs nothing
# installed: every layout is built under a temporary root. Run by scripts/test (and so by
# .ci/run); prints "N passed, M failed" and exits non-zero on any failure.
set -uo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=../lib/libclang.sh
. "$here/lib/libclang.sh"

passed=0
failed=0
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

# The search must see only the fake root: no real llvm-config, no inherited library paths.
unset LIBCLANG_PATH LD_LIBRARY_PATH LIBRARY_PATH
export LIBCLANG_LLVM_CONFIG="$scratch/no-llvm-config"

check() {
    local name=$1 expected=$2 actual=$3
    if [ "$expected" = "$actual" ]; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1))
        printf 'FAIL %s\n  expected: %q\n  actual:   %q\n' "$name" "$expected" "$actual" >&2
    fi
}

# A fresh fake filesystem root holding the given files (relative paths; "a -> b" is a symlink).
new_root() {
    local root entry target
    root=$(mktemp -d "$scratch/root.XXXX")
    for entry in "$@"; do
        if [[ $entry == *" -> "* ]]; then
            target=${entry#* -> }
            entry=${entry%% -> *}
            mkdir -p "$root/$(dirname "$entry")"
            ln -s "$target" "$root/$entry"
        else
            mkdir -p "$root/$(dirname "$entry")"
            : >"$root/$entry"
        fi
    done
    printf '%s\n' "$root"
}

# What libclang_find answers under a root: the path found relative to the root, or "none".
found_under() {
    local root=$1 found
    if found=$(LIBCLANG_SEARCH_ROOT=$root libclang_find); then
        printf '%s\n' "${found#"$root"}"
    else
        echo none
    fi
}

# --- file names --------------------------------------------------------------------------
for name in libclang.so libclang.so.1 libclang-14.so libclang-14.so.1 libclang-14.0.6.so \
    libclang.so.14.0.6; do
    libclang_name_matches "$name" && verdict=loads || verdict=skipped
    check "name $name" loads "$verdict"
done
for name in libclang-cpp.so libclang-cpp.so.14 libclang-cpp.so.14.0.6 libclang.a libclangBasic.a \
    libclang_rt.asan.so libclang.dylib; do
    libclang_name_matches "$name" && verdict=loads || verdict=skipped
    check "name $name" skipped "$verdict"
done

# --- directory layouts -------------------------------------------------------------------
# Issue 12's machine: LLVM 14 installed for its C++ library only.
root=$(new_root \
    "usr/lib/llvm-14/lib/libclang-cpp.so.14" \
    "usr/lib/llvm-14/lib/libLLVM-14.so" \
    "usr/lib/x86_64-linux-gnu/libclang-cpp.so.14 -> ../llvm-14/lib/libclang-cpp.so.14")
check "libclang-cpp only" none "$(found_under "$root")"

# The same machine after `apt-get install libclang-dev` (Debian bookworm's layout).
root=$(new_root \
    "usr/lib/llvm-14/lib/libclang-cpp.so.14" \
    "usr/lib/llvm-14/lib/libclang-14.so.14.0.6" \
    "usr/lib/llvm-14/lib/libclang.so.1 -> libclang-14.so.14.0.6" \
    "usr/lib/llvm-14/lib/libclang.so -> libclang.so.1" \
    "usr/lib/x86_64-linux-gnu/libclang-14.so.14.0.6 -> ../llvm-14/lib/libclang-14.so.14.0.6" \
    "usr/lib/x86_64-linux-gnu/libclang-14.so.1 -> libclang-14.so.14.0.6")
check "libclang-dev installed" /usr/lib/llvm-14/lib/libclang-14.so.14.0.6 "$(found_under "$root")"

# libclang1-14 alone (the runtime library, no -dev symlinks) is enough for bindgen.
root=$(new_root \
    "usr/lib/x86_64-linux-gnu/libclang-14.so.1 -> libclang-14.so.14.0.6" \
    "usr/lib/x86_64-linux-gnu/libclang-14.so.14.0.6")
check "libclang1 runtime only" /usr/lib/x86_64-linux-gnu/libclang-14.so.1 "$(found_under "$root")"

# What `apt-get remove libclang1-14` leaves: libclang-dev's symlinks pointing at nothing.
root=$(new_root \
    "usr/lib/llvm-14/lib/libclang-cpp.so.14" \
    "usr/lib/llvm-14/lib/libclang.so -> libclang-14.so.14.0.6" \
    "usr/lib/llvm-14/lib/libclang.so.1 -> libclang-14.so.14.0.6")
check "dangling libclang links" none "$(found_under "$root")"

# A hand-built LLVM in /usr/local.
root=$(new_root "usr/local/llvm-17/lib/libclang.so.17")
check "/usr/local/llvm*" /usr/local/llvm-17/lib/libclang.so.17 "$(found_under "$root")"

# Too deep for clang-sys's patterns (/usr/lib*/*/* is the deepest): not found, as bindgen.
root=$(new_root "usr/lib/a/b/c/libclang.so")
check "deeper than the patterns" none "$(found_under "$root")"

# An empty machine.
root=$(new_root "usr/lib/libc.so.6")
check "nothing installed" none "$(found_under "$root")"

# --- LIBCLANG_PATH ------------------------------------------------------------------------
# It is exclusive: when it points at nothing usable, a system libclang does not save the build.
root=$(new_root \
    "usr/lib/llvm-14/lib/libclang-14.so.1" \
    "opt/llvm/lib/libclang-cpp.so.16" \
    "opt/llvm/lib/libclang.so.16" \
    "opt/empty/README")
check "LIBCLANG_PATH dir" "$root/opt/llvm/lib/libclang.so.16" \
    "$(LIBCLANG_PATH=$root/opt/llvm/lib LIBCLANG_SEARCH_ROOT=$root libclang_find || echo none)"
check "LIBCLANG_PATH file" "$root/opt/llvm/lib/libclang.so.16" \
    "$(LIBCLANG_PATH=$root/opt/llvm/lib/libclang.so.16 LIBCLANG_SEARCH_ROOT=$root libclang_find || echo none)"
check "LIBCLANG_PATH at libclang-cpp" none \
    "$(LIBCLANG_PATH=$root/opt/llvm/lib/libclang-cpp.so.16 LIBCLANG_SEARCH_ROOT=$root libclang_find || echo none)"
check "LIBCLANG_PATH dir without libclang" none \
    "$(LIBCLANG_PATH=$root/opt/empty LIBCLANG_SEARCH_ROOT=$root libclang_find || echo none)"
check "LIBCLANG_PATH missing" none \
    "$(LIBCLANG_PATH=$root/opt/missing LIBCLANG_SEARCH_ROOT=$root libclang_find || echo none)"

# --- LD_LIBRARY_PATH, LIBRARY_PATH and llvm-config ----------------------------------------
root=$(new_root "opt/a/libclang-cpp.so.15" "opt/b/libclang-15.so.1" "opt/c/lib/libclang.so")
check "LD_LIBRARY_PATH" "$root/opt/b/libclang-15.so.1" \
    "$(LD_LIBRARY_PATH=$root/opt/a:$root/opt/b LIBCLANG_SEARCH_ROOT=$root libclang_find || echo none)"
check "LIBRARY_PATH" "$root/opt/b/libclang-15.so.1" \
    "$(LIBRARY_PATH=$root/opt/a::$root/opt/b LIBCLANG_SEARCH_ROOT=$root libclang_find || echo none)"
check "LD_LIBRARY_PATH with libclang-cpp only" none \
    "$(LD_LIBRARY_PATH=$root/opt/a LIBCLANG_SEARCH_ROOT=$root libclang_find || echo none)"
fake_llvm_config="$scratch/llvm-config"
printf '#!/bin/sh\necho %s\n' "$root/opt/c" >"$fake_llvm_config"
chmod +x "$fake_llvm_config"
check "llvm-config --prefix" "$root/opt/c/lib/libclang.so" \
    "$(LIBCLANG_LLVM_CONFIG=$fake_llvm_config LIBCLANG_SEARCH_ROOT=$root libclang_find || echo none)"

# --- ldconfig -p listings (used to explain, never to decide) -------------------------------
listing_cpp_only='	libclang-cpp.so.14 (libc6,x86-64) => /lib/x86_64-linux-gnu/libclang-cpp.so.14
	libc.so.6 (libc6,x86-64) => /lib/x86_64-linux-gnu/libc.so.6'
check "impostors, cpp only" "libclang-cpp.so.14" "$(libclang_impostors "$listing_cpp_only")"
listing_both='	libclang-cpp.so.14 (libc6,x86-64) => /lib/x86_64-linux-gnu/libclang-cpp.so.14
	libclang-14.so.1 (libc6,x86-64) => /lib/x86_64-linux-gnu/libclang-14.so.1
	libclang-14.so.13 (libc6,x86-64) => /lib/x86_64-linux-gnu/libclang-14.so.13'
check "impostors, both" "libclang-cpp.so.14" "$(libclang_impostors "$listing_both")"
check "impostors, none" "" "$(libclang_impostors "	libc.so.6 (libc6,x86-64) => /lib/libc.so.6")"

echo "libclang detection: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
