#!/bin/bash
# Proves the README's first command: runs `make run` in the background,
# waits until /health answers 200, checks one /v1/embeddings answer, stops
# it (SIGINT, as Ctrl-C does) and checks that nothing is left running.
#
# Usage: tools/readme_check.sh [--clone]
#   --clone  first make a clean clone of HEAD in a temp dir and run there
#            (what a new user does; .ci/run runs in a clean clone already)
# The README's port (8080) is used when it is free; otherwise a copy of the
# config with another http.listen is passed as MMEMBED_CONF (README: "Another
# port"). READMECHECK_TIMEOUT: seconds for build + start (default 1800).
set -eu
cd "$(dirname "$0")/.."
TIMEOUT=${READMECHECK_TIMEOUT:-1800}
TMP=$(mktemp -d /tmp/mmembed-readme.XXXXXX)
chmod 755 "$TMP"   # nginx's and the workers' user reach the sockets in the clone
say() { echo "readme-check: $*" >&2; }
if [ "${1:-}" = --clone ]; then
    git clone -q "$PWD" "$TMP/clone"
    cd "$TMP/clone"
    say "clean clone of $(git rev-parse --short HEAD) in $PWD"
fi

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
PORT=8080
if ! port_free $PORT; then
    PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    sed "s/127\.0\.0\.1:8080/127.0.0.1:$PORT/" conf/mmembed.conf > "$TMP/mmembed.conf"
    export MMEMBED_CONF="$TMP/mmembed.conf"
    say "port 8080 is taken here; using $PORT through MMEMBED_CONF"
fi
URL="http://127.0.0.1:$PORT"

LOG="$TMP/make-run.log"
set -m   # make run in its own process group: Ctrl-C reaches make and tools/run.sh
make run > "$LOG" 2>&1 &
RUN=$!
set +m
fail() {
    say "FAIL: $*"
    tail -n 40 "$LOG" >&2 || true
    kill -INT -- "-$RUN" 2>/dev/null || true
    sleep 5
    kill -KILL -- "-$RUN" 2>/dev/null || true
    exit 1
}

end=$(( $(date +%s) + TIMEOUT ))
while :; do
    if ! kill -0 "$RUN" 2>/dev/null; then
        wait "$RUN" && rc=0 || rc=$?
        fail "make run exited (status $rc) before /health answered 200"
    fi
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$URL/health" || true)
    # run.sh says "serving on" after its own /health check, which may come a
    # moment after ours: wait for both, never grep the log on the first 200
    [ "$code" = 200 ] && grep -q "serving on $URL" "$LOG" && break
    [ "$(date +%s)" -lt "$end" ] || fail "no /health 200 and 'serving on $URL' within ${TIMEOUT}s (last: $code)"
    sleep 1
done
say "/health 200 on $URL"

out=$(curl -s -w '\n%{http_code}' "$URL/v1/embeddings" -H 'Content-Type: application/json' \
      -d '{"input": ["a photo of a cat", "a diagram"]}')
code=${out##*$'\n'}
body=${out%$'\n'*}
[ "$code" = 200 ] || fail "/v1/embeddings answered $code: $body"
python3 - "$body" <<'EOF' || fail "/v1/embeddings answer is not what the README shows: $body"
import json, math, sys
r = json.loads(sys.argv[1])
assert r["object"] == "list" and len(r["data"]) == 2, r
for i, d in enumerate(r["data"]):
    assert d["object"] == "embedding" and d["index"] == i, d
    v = d["embedding"]
    assert len(v) == 512 and abs(math.sqrt(sum(x * x for x in v)) - 1) < 1e-4, len(v)
assert r["model"] == "use-lite" and r["usage"]["prompt_tokens"] > 0, r
EOF
say "/v1/embeddings: 2 x 512-d unit vectors from use-lite"

kill -INT -- "-$RUN"
for _ in $(seq 1 300); do kill -0 "$RUN" 2>/dev/null || break; sleep 0.1; done
kill -0 "$RUN" 2>/dev/null && fail "make run did not stop within 30 s of Ctrl-C"
sleep 0.5
if port_free "$PORT"; then :; else fail "something still listens on $PORT after the stop"; fi
[ -e run/mmembed.pid ] && fail "run/mmembed.pid is left behind"
ls run/*.sock >/dev/null 2>&1 && fail "sockets are left behind: $(ls run/*.sock)"
rm -rf "$TMP"
say "PASS: make run served the README's request and stopped cleanly"
