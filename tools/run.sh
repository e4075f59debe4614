#!/bin/sh
# `make run`: render the nginx config from the mmembed config, then run the
# master (foreground) and a private nginx (own prefix, pid and logs under
# run/). Ctrl-C stops both.
set -e
cd "$(dirname "$0")/.."
CONF=${MMEMBED_CONF:-conf/mmembed.conf}
PREFIX="$PWD/run"
mkdir -p "$PREFIX"
chmod 755 "$PREFIX"
build/mmembed check-config -c "$CONF" >/dev/null
build/mmembed render-nginx -c "$CONF" -t nginx/mmembed.conf.in -p "$PREFIX" -w "$PWD/nginx/www" -o nginx/mmembed.conf
nginx -t -q -p "$PREFIX" -c "$PWD/nginx/mmembed.conf" -e "$PREFIX/nginx-error.log"
build/mmembed serve -c "$CONF" &
MASTER=$!
nginx -p "$PREFIX" -c "$PWD/nginx/mmembed.conf" -e "$PREFIX/nginx-error.log" &
NGINX=$!
stop() {
    trap - INT TERM
    kill -INT "$MASTER" 2>/dev/null || true
    kill -QUIT "$NGINX" 2>/dev/null || true
    wait "$MASTER" 2>/dev/null || true
    wait "$NGINX" 2>/dev/null || true
    exit 0
}
trap stop INT TERM
LISTEN=$(sed -n 's/^ *listen *= *"\([0-9.:]*\)".*/\1/p' "$CONF" | grep -v '^$' | tail -n 1)
echo "mmembed: serving on http://${LISTEN:-127.0.0.1:8080} (Ctrl-C stops nginx and the master)"
wait "$MASTER"
kill -QUIT "$NGINX" 2>/dev/null || true
wait "$NGINX" 2>/dev/null || true
