#!/usr/bin/env node
// ort_bench — the ONNX Runtime side of tools/bench/bench_clip.sh.
//
//   usage: node tools/bench/ort_bench.js ONNX_DIR WORK_DIR [options]
//     ONNX_DIR  text.onnx + vision.onnx from tools/bench/export_onnx.py
//     WORK_DIR  inputs and our engine's check outputs from clip_bench
//   options: see tools/bench/ort_common.js (--ours starts clip_bench ... --serve)
//
// Cross-check: runs WORK_DIR's check texts (mixed lengths, one at a time)
// and check images (one batch) through ORT and compares each output with
// our engine's (cosine >= 0.9999, else exit 1).
'use strict';

const path = require('path');
const { ort, readI32, readF32, readMeta, toBig, makeSession, checkVectors, run } = require('./ort_common');

run('ort_bench', {
  usage: 'node ort_bench.js ONNX_DIR WORK_DIR',
  cases: [
    { name: 'image_b1', n: 1, len: 0 }, { name: 'image_b8', n: 8, len: 0 },
    { name: 'text16_b1', n: 1, len: 16 }, { name: 'text16_b32', n: 32, len: 16 },
    { name: 'text77_b1', n: 1, len: 77 }, { name: 'text77_b32', n: 32, len: 77 },
  ],
  // feeds for every case, made once: the same ids and pixels our engine uses
  load(a) {
    const work = a.pos[1];
    const st = {
      meta: readMeta(work),
      ids77: toBig(readI32(path.join(work, 'ids77.i32'))),
      ids16: toBig(readI32(path.join(work, 'ids16.i32'))),
      pixels: readF32(path.join(work, 'pixels.f32')),
      checkLens: Array.from(readI32(path.join(work, 'check_lens.i32'))),
      checkIds: toBig(readI32(path.join(work, 'check_ids.i32'))),
      checkText: readF32(path.join(work, 'check_text.f32')),
      checkImage: readF32(path.join(work, 'check_image.f32')),
      feeds: {},
    };
    const { image_size: S, channels: C } = st.meta;
    for (const c of this.cases) {
      if (c.len) {
        const src = c.len === 16 ? st.ids16 : st.ids77;
        st.feeds[c.name] = { input_ids: new ort.Tensor('int64', src.subarray(0, c.n * c.len), [c.n, c.len]) };
      } else {
        const per = C * S * S;
        st.feeds[c.name] = { pixel_values: new ort.Tensor('float32', st.pixels.subarray(0, c.n * per), [c.n, C, S, S]) };
      }
    }
    return st;
  },
  async session(a, threads) {
    return {
      text: await makeSession(path.join(a.pos[0], 'text.onnx'), threads),
      vision: await makeSession(path.join(a.pos[0], 'vision.onnx'), threads),
    };
  },
  async check(sess, st) {
    const D = st.meta.dim, { image_size: S, channels: C } = st.meta;
    const text = new Float32Array(st.checkText.length);
    let off = 0;
    for (let s = 0; s < st.checkLens.length; s++) {
      const len = st.checkLens[s];
      const ids = new ort.Tensor('int64', st.checkIds.slice(off, off + len), [1, len]);
      off += len;
      text.set((await sess.text.run({ input_ids: ids })).text_embeds.data, s * D);
    }
    const nImg = st.checkImage.length / D, pl = C * S * S;
    const px = new ort.Tensor('float32', st.pixels.slice(0, nImg * pl), [nImg, C, S, S]);
    const img = (await sess.vision.run({ pixel_values: px })).image_embeds.data;
    const okText = checkVectors(`text ${st.checkLens.length} sequences`, text, st.checkText, D, st.checkLens);
    const okImage = checkVectors(`image ${nImg} images`, img, st.checkImage, D, null);
    return okText && okImage;
  },
  run: (sess, c, st) => (c.len ? sess.text : sess.vision).run(st.feeds[c.name]),
});
