#!/bin/bash
# pss_qwen2vl.sh — issue 16's "Pss with 2 workers": serves the Ops-MM-2B
# shape (tools/mkqwen2vl.c, synthetic weights) with 2 workers through nginx
# (tools/run.sh), sends one 256-token image and one text per worker so both
# read every weight, then reports with tools/pss_report.py how much of the
# shared pack each process maps (Rss) and is charged for (Pss).
#
#   tools/bench/pss_qwen2vl.sh [MODEL_DIR]     (default /tmp/mmembed-qwen2vl-2b)
#   DTYPE=q8|bf16|q4|f32 (default q8)  PORT (default a free one)
#
# Writes the model first when MODEL_DIR has none (~4.4 GB, bf16). Needs
# `make all` done (build/mmembed, nginx from `make run-deps`).
set -eu
cd "$(dirname "$0")/../.."
DIR=${1:-/tmp/mmembed-qwen2vl-2b}
DTYPE=${DTYPE:-q8}
say() { echo "pss_qwen2vl: $*" >&2; }
[ -e "$DIR/config.json" ] || {
    make -s build/mkqwen2vl
    say "writing the 2B shape into $DIR"
    build/mkqwen2vl "$DIR" tests/fixtures/qwen3/tokenizer.json.gz >&2
}
PORT=${PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
T=$(mktemp -d /tmp/mmembed-pss.XXXXXX)
chmod 755 "$T"
sed -e "s/127\.0\.0\.1:8080/127.0.0.1:$PORT/" -e 's/^workers = .*/workers = 2;/' \
-e 's/^request_timeout = .*/request_timeout = 600.0;/' \
    -e "s|^pack_cache = .*|pack_cache = \"$T/packs\";|" -e "s|^listen = .*|listen = \"$T/mmembed-%d.sock\";|" \
    -e "s|^pid_file = .*|pid_file = \"$T/mmembed.pid\";|" conf/mmembed.conf |
    awk -v dir="$DIR" -v dt="$DTYPE" '/^models = \(/ { print "models = ( { name = \"q2b\"; path = \"" dir "\"; dtype = \"" dt "\"; default = true; } );"; skip = 1; next }
         skip && /^\);/ { skip = 0; next } !skip' > "$T/mmembed.conf"
# its own run dir (nginx prefix, sockets, pid): another server here is left alone
MMEMBED_CONF="$T/mmembed.conf" MMEMBED_RUN_DIR="$T/run" tools/run.sh > "$T/run.log" 2>&1 &
RUN=$!
trap 'kill -TERM $RUN 2>/dev/null; wait $RUN 2>/dev/null; rm -rf "$T"' EXIT
URL=http://127.0.0.1:$PORT
for _ in $(seq 1 1200); do
    grep -q "serving on" "$T/run.log" && break
    kill -0 $RUN 2>/dev/null || { cat "$T/run.log" >&2; exit 1; }
    sleep 1
done
grep "weights prepared\|ready in" "$T/run.log" | tail -n 2 >&2
# a 448x448 picture: 32 x 32 patches of 14 = 256 visual tokens after the 2x2 merge
python3 - "$URL" <<'PY'
import base64, io, json, sys, threading, urllib.request, zlib, struct
url = sys.argv[1]
def png(w, h):
    rows = []
    for y in range(h):
        rows.append(b"\0" + b"".join(bytes(((x * 7 + y * 3) % 256, (x * y) % 256, (x + 2 * y) % 256)) for x in range(w)))
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xffffffff)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) +
            chunk(b"IDAT", zlib.compress(b"".join(rows))) + chunk(b"IEND", b""))
img = "data:image/png;base64," + base64.b64encode(png(448, 448)).decode()
def post(path, body, out, i):
    req = urllib.request.Request(url + path, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=900) as r:
        out[i] = (r.status, len(json.load(r)["data"]))
res = [None] * 4
ts = [threading.Thread(target=post, args=("/embed/image", {"images": [img]}, res, i)) for i in range(2)]
ts += [threading.Thread(target=post, args=("/embed/text", {"texts": ["a short text of a few words"]}, res, 2 + i)) for i in range(2)]
for t in ts: t.start()
for t in ts: t.join()
print("requests:", res, file=sys.stderr)
PY
echo "model $DIR, dtype $DTYPE, 2 workers"
python3 tools/pss_report.py "$(grep -o 'master pid [0-9]*' "$T/run.log" | head -n 1 | awk '{print $3}')"
[ -z "${HOLD:-}" ] || { echo "holding: $T"; sleep "$HOLD"; }
