# contrib/deps.sh - sourced by quickstart.sh and check.sh: install what ferry needs to build and
# test on Debian 12, using apt-get, only when something is missing.

FERRY_BUILD_PACKAGES="build-essential autoconf automake libtool pkg-config \
libssl-dev libcurl4-openssl-dev libjansson-dev libjwt-dev liboath-dev libmicrohttpd-dev \
libyaml-dev libexpat1-dev \
openssl ca-certificates"
# wrk: tests/bench/run-exchange.sh (the token-exchange benchmark over HTTP).
FERRY_TEST_PACKAGES="libcriterion-dev libjose-dev python3 python3-cryptography valgrind gdb clang \
libclang-rt-14-dev wrk"

# ferry_install_missing PACKAGE... : apt-get install the packages that are not installed yet.
ferry_install_missing() {
    local missing=() p
    for p in "$@"; do
        if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
            missing+=("$p")
        fi
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    echo "ferry: installing missing packages: ${missing[*]}" >&2
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
            echo "ferry: need root (or sudo) to install: ${missing[*]}" >&2
            return 1
        fi
    fi
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq >&2 || return 1
    $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2 || return 1
}

# ferry_npm_peers : install the npm test peers (tests/peers/package-lock.json, exact versions)
# with `npm ci` when tests/peers/node_modules is missing or older than the lock file. When node
# or npm is missing, Debian's nodejs and npm are installed first. A machine that already has
# node and npm (say Node 20 from elsewhere) keeps them.
ferry_npm_peers() {
    local dir="$FERRY_TOP/tests/peers"
    [ -f "$dir/package-lock.json" ] || return 0
    if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
        ferry_install_missing nodejs npm || return 1
    fi
    if [ -f "$dir/node_modules/.package-lock.json" ] &&
        [ ! "$dir/package-lock.json" -nt "$dir/node_modules/.package-lock.json" ]; then
        return 0
    fi
    echo "ferry: npm ci in tests/peers" >&2
    ( cd "$dir" && npm ci --no-audit --no-fund ) >&2
}

# ferry_build DIR [CONFIGURE-ARGS...] : configure and build ferry out of tree in DIR.
# Without CONFIGURE-ARGS an existing configuration is kept. With them, DIR is configured again
# when it was configured with other arguments (then cleaned, so that every object is rebuilt
# with the new flags: quickstart.sh configures build/ without --enable-werror, check.sh with
# it). DIR is also configured again after a package change (configure must see
# libcriterion-dev and libjose-dev once check.sh has installed them).
ferry_build() {
    local dir=$1; shift
    local stamp="$dir/ferry-configure-args"
    ( cd "$FERRY_TOP" && { [ -x configure ] || ./autogen.sh >/dev/null 2>&1; } ) || return 1
    mkdir -p "$dir" || return 1
    if [ -f "$dir/Makefile" ] && [ $# -gt 0 ] && [ "$(cat "$stamp" 2>/dev/null)" != "$*" ]; then
        make -C "$dir" -s clean >/dev/null 2>&1
        rm -f "$dir/Makefile"
    fi
    if [ ! -f "$dir/Makefile" ]; then
        ( cd "$dir" && "$FERRY_TOP/configure" -q "$@" ) || return 1
        printf '%s' "$*" > "$stamp"
    elif [ /var/lib/dpkg/status -nt "$dir/config.status" ]; then
        # Same arguments as last time, fresh package checks.
        ( cd "$dir" && ./config.status --recheck >/dev/null && ./config.status >/dev/null ) \
            || return 1
    fi
    make -C "$dir" -s -j"$(nproc)" >&2 || return 1
}
