#!/bin/bash
# `make run`: render the nginx config from the mmembed config, then run the
# master and a private nginx (own prefix, pid and logs under run/) in the
# foreground. Ctrl-C stops both.
#
# Says "serving on" only once nginx holds its port (it has written its pid
# file, which it does after binding) and /health answers 200 through it.
# If nginx cannot start (the port is taken, ...), or the master or nginx exits, the
# other one is stopped too and the script exits non-zero with the reason:
# nothing is left running, no stale pid file or sockets.
#
# Environment: MMEMBED_CONF (default conf/mmembed.conf; change the port with
# `http.listen` there), MMEMBED_START_TIMEOUT (seconds to wait for /health,
# default 300), MMEMBED_RUN_DIR (nginx prefix, pid and logs; default run/,
# with the rendered config at nginx/mmembed.conf; elsewhere it is
# MMEMBED_RUN_DIR/nginx.conf), MMEMBED_BIN (default build/mmembed).
set -eu
# paths given in the environment are relative to where we were started
[ -n "${MMEMBED_CONF:-}" ] && MMEMBED_CONF=$(realpath -m "$MMEMBED_CONF")
[ -n "${MMEMBED_RUN_DIR:-}" ] && MMEMBED_RUN_DIR=$(realpath -m "$MMEMBED_RUN_DIR")
cd "$(dirname "$0")/.."
CONF=${MMEMBED_CONF:-conf/mmembed.conf}
TIMEOUT=${MMEMBED_START_TIMEOUT:-300}
BIN=${MMEMBED_BIN:-build/mmembed}
if [ -n "${MMEMBED_RUN_DIR:-}" ]; then
    PREFIX=$MMEMBED_RUN_DIR
    NGCONF="$PREFIX/nginx.conf"
else
    PREFIX="$PWD/run"
    NGCONF="$PWD/nginx/mmembed.conf"
fi
mkdir -p "$PREFIX"
chmod 755 "$PREFIX"

say() { echo "mmembed: $*" >&2; }

"$BIN" check-config -c "$CONF" >/dev/null
"$BIN" render-nginx -c "$CONF" -t nginx/mmembed.conf.in -p "$PREFIX" -w "$PWD/nginx/www" -o "$NGCONF"
nginx -t -q -p "$PREFIX" -c "$NGCONF" -e "$PREFIX/nginx-error.log"

# What the rendered config says: where nginx listens, which worker sockets
# the master creates (removed if the master dies without doing it).
LISTEN=$(sed -n 's/^ *listen  *\([^ ;]*\).*;/\1/p' "$NGCONF" | head -n 1)
SOCKETS=$(sed -n 's/^ *server  *unix:\([^ ;]*\).*/\1/p' "$NGCONF")
PIDFILE=$(sed -n 's/^ *pid_file *= *"\([^"]*\)".*/\1/p' "$CONF" | tail -n 1)
case "$LISTEN" in
    *:*) HOST=${LISTEN%:*}; PORT=${LISTEN##*:} ;;
    *) HOST=127.0.0.1; PORT=$LISTEN ;;
esac
case "$HOST" in
    ""|"*"|0.0.0.0) HOST=127.0.0.1 ;;
    "[::]") HOST="[::1]" ;;
esac
URL="http://$HOST:$PORT"

# As root, nginx's workers and the pool's workers run as the configured user
# and must reach the sockets: a clone under a private directory (root's
# 0700 home, a mktemp -d) gives 502 for ever. Say so instead.
NGUSER=$(sed -n 's/^user  *\([^ ;]*\).*;/\1/p' "$NGCONF" | head -n 1)
if [ "$(id -u)" = 0 ] && [ -n "$NGUSER" ] && command -v runuser >/dev/null 2>&1; then
    for s in $SOCKETS; do
        d=$(dirname "$s")
        while [ ! -d "$d" ]; do d=$(dirname "$d"); done
        if ! runuser -u "$NGUSER" -- test -x "$d" 2>/dev/null; then
            say "user '$NGUSER' (nginx's and the workers' user) cannot reach $(dirname "$s"), where the"
            say "worker sockets go: make its parent directories searchable (chmod o+x), clone elsewhere,"
            say "or change user/group or listen in $CONF"
            exit 1
        fi
    done
fi

rm -f "$PREFIX/nginx.pid"
LOGSTART=$(( $(stat -c %s "$PREFIX/nginx-error.log" 2>/dev/null || echo 0) + 1 ))
# Each in its own process group (set -m), so that what either leaves behind
# can be killed as a group: nginx's workers outlive a SIGKILLed nginx master
# and keep the port.
set -m
"$BIN" serve -c "$CONF" &
MASTER=$!
nginx -p "$PREFIX" -c "$NGCONF" -e "$PREFIX/nginx-error.log" &
NGINX=$!
set +m

alive() { kill -0 "$1" 2>/dev/null && [ "$(cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null)" != Z ]; }

# cleanup: nginx first (no new requests), then the master; each is escalated
# to SIGKILL after a bounded wait, so nothing is left behind.
stop_pid() {   # PID GENTLE_SIGNAL
    if alive "$1"; then kill -"$2" "$1" 2>/dev/null || true; fi
    for _ in $(seq 1 100); do
        alive "$1" || break
        sleep 0.1
    done
    alive "$1" && kill -KILL "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
    kill -KILL -- "-$1" 2>/dev/null || true   # orphans of its group
}
cleanup() {
    trap - INT TERM HUP EXIT
    stop_pid "$NGINX" QUIT
    stop_pid "$MASTER" INT
    # what a master killed with SIGKILL could not remove
    for s in $SOCKETS; do [ -S "$s" ] && rm -f "$s"; done
    if [ -n "$PIDFILE" ] && [ -f "$PIDFILE" ] && [ "$(cat "$PIDFILE" 2>/dev/null)" = "$MASTER" ]; then
        rm -f "$PIDFILE"
    fi
    rm -f "$PREFIX/nginx.pid"
}
trap 'cleanup; exit 0' INT TERM HUP
trap 'cleanup' EXIT

nginx_failed() {
    local why
    # the first error of this start says why (later ones: "still could not bind()")
    why=$(tail -c +"$LOGSTART" "$PREFIX/nginx-error.log" 2>/dev/null | grep -E '\[(emerg|alert)\]' | head -n 1 |
          sed 's/^.*\[\(emerg\|alert\)\] [0-9#]*: //' || true)
    say "nginx could not start on $LISTEN: ${why:-see $PREFIX/nginx-error.log}"
    case "$why" in *"Address already in use"*)
        say "the port is taken (an earlier 'make run' still running? $PREFIX/nginx.pid). To use another port,"
        say "copy conf/mmembed.conf, set its http.listen (http = { listen = \"127.0.0.1:8081\"; }) and run"
        say "  MMEMBED_CONF=that.conf make run" ;;
    esac
}

# Wait until nginx is up (its pid file says our pid: it has bound its
# port) and /health answers 200 through it.
end=$(( $(date +%s) + TIMEOUT ))
while :; do
    if ! alive "$NGINX"; then
        nginx_failed
        cleanup
        exit 1
    fi
    if ! alive "$MASTER"; then
        wait "$MASTER" && rc=0 || rc=$?
        say "the master exited (status $rc) before the server was ready; stopping nginx"
        cleanup
        exit $(( rc ? rc : 1 ))
    fi
    if [ "$(cat "$PREFIX/nginx.pid" 2>/dev/null)" = "$NGINX" ] &&
       curl -fsS -o /dev/null --max-time 2 "$URL/health" 2>/dev/null; then
        break
    fi
    if [ "$(date +%s)" -ge "$end" ]; then
        say "/health did not answer 200 within ${TIMEOUT}s (MMEMBED_START_TIMEOUT); stopping"
        cleanup
        exit 1
    fi
    sleep 0.2
done
say "serving on $URL (Ctrl-C stops nginx and the master)"

# Whichever exits first, stop the other one.
set +e
wait -n "$MASTER" "$NGINX"
rc=$?
if ! alive "$MASTER"; then
    # even a clean exit (someone sent it SIGTERM) ends the service: non-zero
    say "the master exited (status $rc); stopping nginx"
    cleanup
    exit $(( rc ? rc : 1 ))
fi
say "nginx exited (status $rc); stopping the master"
cleanup
exit 1
