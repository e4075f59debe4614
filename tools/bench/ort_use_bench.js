#!/usr/bin/env node
// ort_use_bench — the ONNX Runtime side of tools/bench/bench_use.sh.
//
//   usage: node tools/bench/ort_use_bench.js ONNX_FILE WORK_DIR [options]
//     ONNX_FILE  use_lite.onnx from tools/bench/export_use.py
//                (input_ids, attention_mask int64 [B, T] -> embedding [B, 512])
//     WORK_DIR   use_bench's files: the sentences' ids (from mm_use_tokenize,
//                so ORT sees exactly the ids our engine sees; no tokenizer in
//                ORT's time) and our engine's vectors for them
//   options: see tools/bench/ort_common.js
//     --threads 1,2  --secs S  --min-runs N  --max-runs N  --gap-ms G
//     --ours "CMD ..."  start CMD (use_bench ... --serve) and alternate its
//                       runs with ORT's, one each in turn
//     --check-only
//
// Cases: b1 = sentence 0 ([1, its length], no padding); b32 = all 32
// sentences as one padded batch [32, longest] with attention_mask.
// Cross-check: the b32 batch against our vectors (texts in, tokenized by
// our engine): cosine >= 0.9999 each, else exit 1.
//
// Prints "RESULT <engine> <case> <threads> <ms per item> <ms per batch> <runs>
// <min ms per item> <CPU ms per item>" (medians; engine "ort" or "ours").
'use strict';

const path = require('path');
const { readI32, readF32, readMeta, makeSession, paddedFeed, checkVectors, run } = require('./ort_common');

run('ort_use_bench', {
  usage: 'node ort_use_bench.js ONNX_FILE WORK_DIR',
  cases: [{ name: 'b1', n: 1 }, { name: 'b32', n: 32 }],
  load(a) {
    const work = a.pos[1];
    const st = {
      meta: readMeta(work),
      lens: Array.from(readI32(path.join(work, 'lens.i32'))),
      ids: Array.from(readI32(path.join(work, 'ids.i32'))),
      checkOut: readF32(path.join(work, 'check_out.f32')),
      feeds: {},
    };
    for (const c of this.cases) st.feeds[c.name] = paddedFeed(st.ids, st.lens, 0, c.n).feed;
    return st;
  },
  session: (a, threads) => makeSession(a.pos[0], threads),
  async check(sess, st) {
    const n = st.lens.length;
    const { T, feed } = paddedFeed(st.ids, st.lens, 0, n);
    const got = (await sess.run(feed)).embedding.data;
    return checkVectors(`use ${n} sentences, one padded batch of ${T}`, got, st.checkOut, st.meta.dim, st.lens);
  },
  run: (sess, c, st) => sess.run(st.feeds[c.name]),
});
