#!/bin/sh
# Install the Debian packages mmembed needs to build, test and run. Idempotent:
# only missing packages are installed.
set -e
PKGS="build-essential pkg-config libfcgi-dev libconfig-dev libjson-c-dev libjpeg62-turbo-dev
libpng-dev libwebp-dev libgif-dev libavformat-dev libavcodec-dev libswscale-dev libavutil-dev
libopenblas-dev libpcre2-dev libutf8proc-dev libxxhash-dev nginx-light ffmpeg wrk python3 curl
chromium clang llvm libclang-rt-14-dev libdnnl-dev iproute2"
# documents (issue 19): poppler's pdfinfo/pdftoppm/pdftotext, run as isolated child processes
PKGS="$PKGS poppler-utils"
command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || PKGS="$PKGS nodejs npm"
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "deps: installing$missing"
SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq || true
$SUDO apt-get install -y -qq --no-install-recommends $missing
