# shellcheck shell=bash
# Finds the libclang that bindgen would load, by the rules of clang-sys 1.x (the crate bindgen
# uses to load it at run time), so that scripts/setup-deps never answers "present" for a
# library bindgen cannot use. Sourced by scripts/setup-deps and scripts/tests/libclang.sh.
#
# clang-sys's rules (build/common.rs and build/dynamic.rs, Linux, `runtime` feature):
# - file names: libclang.so, libclang-*.so, libclang.so.*, libclang-*.so.*, except any name
#   containing "-cpp." — libclang-cpp is LLVM's C++ library, which bindgen cannot load and
#   which Debian installs with LLVM itself (the cause of issue 12);
# - if LIBCLANG_PATH is set, only that path: a matching file, or a directory holding one;
# - otherwise `llvm-config --prefix`'s bin/, lib/ and lib64/, every directory in
#   LD_LIBRARY_PATH and LIBRARY_PATH, then the patterns in LIBCLANG_DIRECTORY_PATTERNS.
# The ld.so cache (`ldconfig -p`) is not among them: a library it lists counts only when it
# also lies in one of those directories, so it is used here for nothing but the message.
#
# For tests, LIBCLANG_SEARCH_ROOT prefixes every fixed absolute directory, and
# LIBCLANG_LLVM_CONFIG names the llvm-config to ask (an absent command means "none").

LIBCLANG_DIRECTORY_PATTERNS=(
    "/usr/local/llvm*/lib*"
    "/usr/local/lib*/*/*"
    "/usr/local/lib*/*"
    "/usr/local/lib*"
    "/usr/lib*/*/*"
    "/usr/lib*/*"
    "/usr/lib*"
)
LIBCLANG_FILE_PATTERNS=("libclang.so" "libclang-*.so" "libclang.so.*" "libclang-*.so.*")

# True when a file name is one clang-sys would try to load.
libclang_name_matches() {
    local name=$1 pattern
    [[ $name == *-cpp.* ]] && return 1
    for pattern in "${LIBCLANG_FILE_PATTERNS[@]}"; do
        # shellcheck disable=SC2053 # the right side is a glob on purpose
        [[ $name == $pattern ]] && return 0
    done
    return 1
}

# Prints each loadable libclang in one directory, one path a line.
libclang_in_directory() {
    local dir=$1 path
    [ -d "$dir" ] || return 0
    for path in "$dir"/libclang*; do
        # -e follows symbolic links: a link left dangling by a removed package cannot load.
        [ -e "$path" ] || continue
        libclang_name_matches "$(basename "$path")" && printf '%s\n' "$path"
    done
    return 0
}

# Prints every libclang clang-sys would consider, in its order of search, one path a line.
libclang_candidates() {
    local root=${LIBCLANG_SEARCH_ROOT:-} dir prefix pattern
    if [ -n "${LIBCLANG_PATH+set}" ]; then
        if [ -f "$LIBCLANG_PATH" ]; then
            # clang-sys names the file itself only when it passes the same name rule.
            libclang_name_matches "$(basename "$LIBCLANG_PATH")" && printf '%s\n' "$LIBCLANG_PATH"
            return 0
        fi
        libclang_in_directory "$LIBCLANG_PATH"
        return 0
    fi
    if prefix=$("${LIBCLANG_LLVM_CONFIG:-llvm-config}" --prefix 2>/dev/null) && [ -n "$prefix" ]; then
        prefix=$(printf '%s\n' "$prefix" | head -n 1)
        for dir in "$prefix/bin" "$prefix/lib" "$prefix/lib64"; do
            libclang_in_directory "$dir"
        done
    fi
    local -a list
    for var in LD_LIBRARY_PATH LIBRARY_PATH; do
        IFS=: read -r -a list <<<"${!var:-}"
        for dir in "${list[@]}"; do
            [ -n "$dir" ] && libclang_in_directory "$dir"
        done
    done
    (
        shopt -s nullglob nocaseglob
        for pattern in "${LIBCLANG_DIRECTORY_PATTERNS[@]}"; do
            # Unquoted on purpose: the pattern is expanded; a '*' never matches '/'.
            for dir in $root$pattern; do
                libclang_in_directory "$dir"
            done
        done
    )
}

# Succeeds, printing the first library found, when bindgen will find a libclang.
libclang_find() {
    local first
    first=$(libclang_candidates | head -n 1)
    [ -n "$first" ] || return 1
    printf '%s\n' "$first"
}

# Names what the ld.so cache lists under libclang* that clang-sys will not load, for the message
# that explains why an install is needed although "libclang" seems to be there.
libclang_impostors() {
    local listing=$1
    printf '%s\n' "$listing" | awk '{print $1}' | grep '^libclang' | while read -r name; do
        libclang_name_matches "$name" || printf '%s\n' "$name"
    done
}
