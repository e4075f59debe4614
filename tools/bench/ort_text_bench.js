#!/usr/bin/env node
// ort_text_bench — the ONNX Runtime side of tools/bench/bench_text.sh.
//
//   usage: node tools/bench/ort_text_bench.js ONNX_FILE WORK_DIR [options]
//     ONNX_FILE  minilm.onnx from tools/bench/export_bert.py
//                (input_ids, attention_mask int64 [B, T] -> pooled [B, dim])
//     WORK_DIR   inputs and our engine's check outputs from text_bench
//   options: see tools/bench/ort_common.js
//     --threads 1,2  --secs S  --min-runs N  --max-runs N  --gap-ms G
//     --ours "CMD ..."  start CMD (text_bench ... --serve) and alternate its
//                       runs with ORT's, one each in turn
//     --check-only
//
// Cross-check: WORK_DIR's check sequences (mixed lengths) as ONE padded
// batch with attention_mask (so ORT's masking path is exercised) against
// our engine's packed outputs: cosine >= 0.9999 each, else exit 1.
//
// Prints "RESULT <engine> <case> <threads> <ms per item> <ms per batch> <runs>
// <min ms per item> <CPU ms per item>" (medians; engine "ort" or "ours").
'use strict';

const path = require('path');
const { ort, readI32, readF32, readMeta, toBig, makeSession, paddedFeed, checkVectors, run } = require('./ort_common');

const LEN = 16;

run('ort_text_bench', {
  usage: 'node ort_text_bench.js ONNX_FILE WORK_DIR',
  cases: [{ name: 'b1', n: 1 }, { name: 'b32', n: 32 }],
  load(a) {
    const work = a.pos[1];
    const ids16 = toBig(readI32(path.join(work, 'ids16.i32')));
    const feeds = {};
    for (const c of this.cases) {
      feeds[c.name] = {
        input_ids: new ort.Tensor('int64', ids16.subarray(0, c.n * LEN), [c.n, LEN]),
        attention_mask: new ort.Tensor('int64', new BigInt64Array(c.n * LEN).fill(1n), [c.n, LEN]),
      };
    }
    return {
      meta: readMeta(work), feeds,
      checkLens: Array.from(readI32(path.join(work, 'check_lens.i32'))),
      checkIds: Array.from(readI32(path.join(work, 'check_ids.i32'))),
      checkOut: readF32(path.join(work, 'check_out.f32')),
    };
  },
  session: (a, threads) => makeSession(a.pos[0], threads),
  async check(sess, st) {
    const n = st.checkLens.length;
    const { T, feed } = paddedFeed(st.checkIds, st.checkLens, 0, n);
    const got = (await sess.run(feed)).pooled.data;
    return checkVectors(`text ${n} sequences, one padded batch of ${T}`, got, st.checkOut, st.meta.dim, st.checkLens);
  },
  run: (sess, c, st) => sess.run(st.feeds[c.name]),
});
