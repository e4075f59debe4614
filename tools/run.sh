#!/bin/bash
# `make run`: render the nginx config from the mmembed config, then run the
# master and a private nginx (own prefix, pid and logs under run/) in the
# foreground. Ctrl-C stops both.
#
# SIGHUP to this script (kill -HUP <its pid>) reloads both, in an order
# that never leaves nginx pointing at a socket nobody listens on: the new
# config is checked (check-config) and nginx's config rendered from it and
# tested (nginx -t) aside; the master is sent SIGHUP and answers (it was
# started with MMEMBED_RELOAD_NOTIFY=this pid) with SIGUSR2 once its new
# generation's sockets listen, or SIGUSR1 if it kept the old configuration;
# only then is the rendered config put in place and nginx reloaded (nginx
# -s reload), so its upstream lists the new workers. Anything wrong (a
# broken config, a model that does not load) changes nothing and is
# reported here. A SIGHUP sent to the master directly is followed too: its
# SIGUSR2 comes without a request from us, and nginx's config is rendered
# again and nginx reloaded.
#
# Says "serving on" only once nginx holds its port (it has written its pid
# file, which it does after binding) and /health answers 200 through it.
# If nginx cannot start (the port is taken, ...), or the master or nginx exits, the
# other one is stopped too and the script exits non-zero with the reason:
# nothing is left running, no stale pid file or sockets.
#
# Environment: MMEMBED_CONF (default conf/mmembed.conf; change the port with
# `http.listen` there), MMEMBED_START_TIMEOUT (seconds to wait for /health,
# and for the master to answer a reload; default 300), MMEMBED_RUN_DIR (nginx prefix, pid and logs; default run/,
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

# render nginx's config from $CONF into $1 and test it (quiet; the errors
# on stderr)
render() {
    "$BIN" render-nginx -c "$CONF" -t nginx/mmembed.conf.in -p "$PREFIX" -w "$PWD/nginx/www" -o "$1" &&
        nginx -t -q -p "$PREFIX" -c "$1" -e "$PREFIX/nginx-error.log"
}
upstream_sockets() { sed -n 's/^ *server  *unix:\([^ ;]*\).*/\1/p' "$1"; }

"$BIN" check-config -c "$CONF" >/dev/null
render "$NGCONF"

# What the rendered config says: where nginx listens, which worker sockets
# the master creates (removed if the master dies without doing it).
LISTEN=$(sed -n 's/^ *listen  *\([^ ;]*\).*;/\1/p' "$NGCONF" | head -n 1)
SOCKETS=$(upstream_sockets "$NGCONF")
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
# SIGHUP, and the master's answers to it, only set flags: the loop below
# acts on them (a HUP during the start is acted on once serving).
HUP_ASKED=0 MASTER_OK=0 MASTER_FAILED=0
trap 'HUP_ASKED=1' HUP
trap 'MASTER_OK=1' USR2
trap 'MASTER_FAILED=1' USR1
set -m
MMEMBED_RELOAD_NOTIFY=$$ "$BIN" serve -c "$CONF" &
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
    trap '' USR1 USR2
    stop_pid "$NGINX" QUIT
    stop_pid "$MASTER" INT
    # what a master killed with SIGKILL could not remove
    for s in $SOCKETS; do [ -S "$s" ] && rm -f "$s"; done
    if [ -n "$PIDFILE" ] && [ -f "$PIDFILE" ] && [ "$(cat "$PIDFILE" 2>/dev/null)" = "$MASTER" ]; then
        rm -f "$PIDFILE"
    fi
    rm -f "$PREFIX/nginx.pid"
}
trap 'cleanup; exit 0' INT TERM
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

# Put the config rendered in $NGCONF.new in place and reload nginx; the
# sockets it names are removed at exit too.
switch_nginx() {
    local out
    mv -f "$NGCONF.new" "$NGCONF"
    SOCKETS=$(printf '%s\n' $SOCKETS $(upstream_sockets "$NGCONF") | sort -u)
    if ! out=$(nginx -s reload -p "$PREFIX" -c "$NGCONF" -e "$PREFIX/nginx-error.log" 2>&1); then
        say "nginx -s reload failed: $out"
        return 1
    fi
    say "reloaded: nginx's upstream lists $(upstream_sockets "$NGCONF" | wc -l) sockets (workers and overflow)"
}

# SIGHUP to this script: check, render aside, reload the master, wait for
# its new sockets, then nginx.
reload() {
    local out end
    say "SIGHUP: reloading $CONF"
    if ! out=$("$BIN" check-config -c "$CONF" 2>&1); then
        say "reload refused, nothing changed: $out"
        return
    fi
    if ! out=$(render "$NGCONF.new" 2>&1); then
        rm -f "$NGCONF.new"
        say "reload refused, nothing changed: nginx's config does not render or test: $out"
        return
    fi
    MASTER_OK=0 MASTER_FAILED=0
    kill -HUP "$MASTER"
    end=$(( $(date +%s) + TIMEOUT ))
    while [ "$MASTER_OK" = 0 ] && [ "$MASTER_FAILED" = 0 ] && alive "$MASTER" && [ "$(date +%s)" -lt "$end" ]; do
        sleep 0.1
    done
    if [ "$MASTER_OK" = 1 ]; then
        MASTER_OK=0 MASTER_FAILED=0
        switch_nginx
    else
        rm -f "$NGCONF.new"
        if [ "$MASTER_FAILED" = 1 ]; then
            MASTER_FAILED=0
            say "reload refused, nothing changed: the master kept its configuration (its log says why)"
        elif alive "$MASTER"; then
            # should it finish later, its SIGUSR2 makes nginx follow then
            say "the master has not reloaded within ${TIMEOUT}s (MMEMBED_START_TIMEOUT); nginx is unchanged"
        fi
    fi
}

# The master reloaded without us asking (SIGHUP sent to it directly):
# make nginx follow it.
follow() {
    local out
    say "the master reloaded (SIGHUP sent to it directly): rendering nginx's config again"
    if out=$(render "$NGCONF.new" 2>&1); then
        switch_nginx
    else
        rm -f "$NGCONF.new"
        say "nginx's config does not render from $CONF, nginx keeps its upstream: $out"
    fi
}

# Supervise: act on SIGHUP and the master's reload answers; whichever of
# the master and nginx exits first, stop the other one.
set +e
while alive "$MASTER" && alive "$NGINX"; do
    if [ "$HUP_ASKED" = 1 ]; then
        HUP_ASKED=0
        reload
    elif [ "$MASTER_OK" = 1 ]; then
        MASTER_OK=0 MASTER_FAILED=0
        follow
    elif [ "$MASTER_FAILED" = 1 ]; then
        MASTER_FAILED=0     # a direct SIGHUP with a bad config: the master logged why
    fi
    sleep 0.2
done
if ! alive "$MASTER"; then
    wait "$MASTER"
    rc=$?
    # even a clean exit (someone sent it SIGTERM) ends the service: non-zero
    say "the master exited (status $rc); stopping nginx"
    cleanup
    exit $(( rc ? rc : 1 ))
fi
wait "$NGINX"
rc=$?
say "nginx exited (status $rc); stopping the master"
cleanup
exit 1
