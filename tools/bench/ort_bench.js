#!/usr/bin/env node
// ort_bench — the ONNX Runtime side of tools/bench/bench_clip.sh.
//
//   usage: node tools/bench/ort_bench.js ONNX_DIR WORK_DIR [options]
//     ONNX_DIR  text.onnx + vision.onnx from tools/bench/export_onnx.py
//     WORK_DIR  inputs and our engine's check outputs from clip_bench
//   options:
//     --threads 1,2      intraOpNumThreads values (interOpNumThreads 1,
//                        graphOptimizationLevel 'all', sequential)
//     --secs S           per case and thread count: time at least S seconds
//     --min-runs N       ... and at least N runs (after one warm-up run)
//     --max-runs N       ... and at most N runs
//     --ours "CMD ..."   also time our engine: start CMD (clip_bench ...
//                        --serve), let it write WORK_DIR, then alternate
//                        its runs with ORT's, one run each in turn, so both
//                        see the same machine load; prints both
//     --gap-ms G         pause between the two engines' runs (default 100:
//                        lets the other side's spinning threads go to sleep)
//     --check-only       only the cross-check
//
// Cross-check: runs WORK_DIR's check texts (mixed lengths, one at a time)
// and check images (one batch) through ORT and compares each output with
// our engine's (cosine >= 0.9999, else exit 1).
//
// Prints "RESULT <engine> <case> <threads> <ms per item> <ms per batch> <runs>
// <min ms per item> <CPU ms per item>" lines: wall-clock median over the
// runs, the fastest run, and the median process CPU time (all threads, so
// spinning pool threads count; comparable across engines at 1 thread, where
// it is immune to being preempted by other processes). Engine "ort" or "ours".
'use strict';

const fs = require('fs');
const path = require('path');
const { spawn } = require('child_process');
const readline = require('readline');
const ort = require('onnxruntime-node');

const CASES = [
  { name: 'image_b1', n: 1, len: 0 }, { name: 'image_b8', n: 8, len: 0 },
  { name: 'text16_b1', n: 1, len: 16 }, { name: 'text16_b32', n: 32, len: 16 },
  { name: 'text77_b1', n: 1, len: 77 }, { name: 'text77_b32', n: 32, len: 77 },
];

function usage() {
  process.stderr.write('usage: node ort_bench.js ONNX_DIR WORK_DIR [--threads 1,2] [--secs S] ' +
    '[--min-runs N] [--max-runs N] [--ours "CMD ARGS"] [--gap-ms G] [--check-only]\n');
  process.exit(2);
}

function parseArgs(argv) {
  const a = { threads: [1, 2], secs: 3, minRuns: 3, maxRuns: 50, ours: null, gapMs: 100, checkOnly: false };
  const pos = [];
  for (let i = 0; i < argv.length; i++) {
    const v = argv[i];
    const next = () => { if (i + 1 >= argv.length) usage(); return argv[++i]; };
    if (v === '--threads') a.threads = next().split(',').map(Number).filter((x) => x >= 1);
    else if (v === '--secs') a.secs = Number(next());
    else if (v === '--min-runs') a.minRuns = Math.max(1, Number(next()));
    else if (v === '--max-runs') a.maxRuns = Number(next());
    else if (v === '--ours') a.ours = next();
    else if (v === '--gap-ms') a.gapMs = Number(next());
    else if (v === '--check-only') a.checkOnly = true;
    else if (v.startsWith('--')) usage();
    else pos.push(v);
  }
  if (pos.length !== 2) usage();
  a.maxRuns = Math.max(a.maxRuns, a.minRuns);
  [a.onnxDir, a.work] = pos;
  return a;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function median(xs) {
  const s = [...xs].sort((x, y) => x - y);
  const h = s.length >> 1;
  return s.length % 2 ? s[h] : 0.5 * (s[h - 1] + s[h]);
}

function readI32(file) {
  const b = fs.readFileSync(file);
  return new Int32Array(b.buffer, b.byteOffset, b.length / 4);
}

function readF32(file) {
  const b = fs.readFileSync(file);
  return new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.length));
}

function readInputs(work) {
  const meta = {};
  for (const line of fs.readFileSync(path.join(work, 'meta.txt'), 'utf8').split('\n')) {
    const [k, v] = line.split(' ');
    if (k) meta[k] = Number(v);
  }
  const toBig = (i32) => BigInt64Array.from(i32, (x) => BigInt(x));
  return {
    meta,
    ids77: toBig(readI32(path.join(work, 'ids77.i32'))),
    ids16: toBig(readI32(path.join(work, 'ids16.i32'))),
    pixels: readF32(path.join(work, 'pixels.f32')),
    checkLens: Array.from(readI32(path.join(work, 'check_lens.i32'))),
    checkIds: toBig(readI32(path.join(work, 'check_ids.i32'))),
    checkText: readF32(path.join(work, 'check_text.f32')),
    checkImage: readF32(path.join(work, 'check_image.f32')),
  };
}

async function makeSessions(onnxDir, threads) {
  const opts = {
    intraOpNumThreads: threads, interOpNumThreads: 1, graphOptimizationLevel: 'all',
    executionMode: 'sequential', executionProviders: ['cpu'],
  };
  return {
    text: await ort.InferenceSession.create(path.join(onnxDir, 'text.onnx'), opts),
    vision: await ort.InferenceSession.create(path.join(onnxDir, 'vision.onnx'), opts),
  };
}

// Feeds for every case, made once: the same ids and pixels our engine uses.
function makeFeeds(inp) {
  const { image_size: S, channels: C } = inp.meta;
  const feeds = {};
  for (const c of CASES) {
    if (c.len) {
      const src = c.len === 16 ? inp.ids16 : inp.ids77;
      feeds[c.name] = { input_ids: new ort.Tensor('int64', src.subarray(0, c.n * c.len), [c.n, c.len]) };
    } else {
      const per = C * S * S;
      feeds[c.name] = { pixel_values: new ort.Tensor('float32', inp.pixels.subarray(0, c.n * per), [c.n, C, S, S]) };
    }
  }
  return feeds;
}

// one run: [wall ms, process CPU ms (all threads)]
async function ortRun(sess, c, feeds) {
  const s = c.len ? sess.text : sess.vision;
  const c0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  await s.run(feeds[c.name]);
  const wall = Number(process.hrtime.bigint() - t0) / 1e6;
  const cu = process.cpuUsage(c0);
  return [wall, (cu.user + cu.system) / 1e3];
}

function cosine(a, b) {
  let d = 0, na = 0, nb = 0;
  for (let i = 0; i < a.length; i++) { d += a[i] * b[i]; na += a[i] * a[i]; nb += b[i] * b[i]; }
  return d / Math.sqrt(na * nb);
}

async function check(sess, inp) {
  const D = inp.meta.dim, { image_size: S, channels: C } = inp.meta;
  let worstText = 1, off = 0;
  const per = [];
  for (let s = 0; s < inp.checkLens.length; s++) {
    const len = inp.checkLens[s];
    const ids = new ort.Tensor('int64', inp.checkIds.slice(off, off + len), [1, len]);
    off += len;
    const got = (await sess.text.run({ input_ids: ids })).text_embeds.data;
    const cs = cosine(got, inp.checkText.subarray(s * D, (s + 1) * D));
    per.push(`${len}:${cs.toFixed(7)}`);
    worstText = Math.min(worstText, cs);
  }
  const nImg = inp.checkImage.length / D, pl = C * S * S;
  const px = new ort.Tensor('float32', inp.pixels.slice(0, nImg * pl), [nImg, C, S, S]);
  const img = (await sess.vision.run({ pixel_values: px })).image_embeds.data;
  let worstImage = 1;
  for (let i = 0; i < nImg; i++)
    worstImage = Math.min(worstImage, cosine(img.subarray(i * D, (i + 1) * D), inp.checkImage.subarray(i * D, (i + 1) * D)));
  console.log(`CHECK text ${inp.checkLens.length} sequences (len:cosine ${per.join(' ')}) worst ${worstText.toFixed(7)}`);
  console.log(`CHECK image ${nImg} images worst ${worstImage.toFixed(7)}`);
  return Math.min(worstText, worstImage) >= 0.9999;
}

// Our engine as a child process speaking clip_bench's --serve protocol.
function startOurs(cmdline) {
  const parts = cmdline.split(/\s+/).filter(Boolean);
  const child = spawn(parts[0], parts.slice(1), { stdio: ['pipe', 'pipe', 'inherit'] });
  const rl = readline.createInterface({ input: child.stdout });
  const waiting = [];
  const lines = [];
  rl.on('line', (l) => { if (waiting.length) waiting.shift()(l); else lines.push(l); });
  let dead = null;
  child.on('exit', (code) => {
    dead = `our engine exited (${code})`;
    while (waiting.length) waiting.shift()(null);
  });
  const nextLine = () => (lines.length ? Promise.resolve(lines.shift())
    : dead ? Promise.resolve(null) : new Promise((r) => waiting.push(r)));
  return {
    async ready() {
      const l = await nextLine();
      if (!l || !l.startsWith('READY')) throw new Error(dead || `our engine: unexpected "${l}"`);
      console.log(`INFO ours ${l}`);
    },
    async run(c, th, k) {
      child.stdin.write(`run ${c.name} ${th} ${k}\n`);
      const l = await nextLine();
      if (!l || !l.startsWith('TIMES')) throw new Error(dead || `our engine: unexpected "${l}"`);
      return l.split(' ').slice(3).map((x) => x.split('/').map(Number));
    },
    quit() { child.stdin.end('quit\n'); },
  };
}

function result(engine, c, th, runs) {
  const wall = runs.map((r) => r[0]), cpu = runs.map((r) => r[1]);
  const med = median(wall), min = Math.min(...wall), cmed = median(cpu);
  console.log(`RESULT ${engine} ${c.name} ${th} ${(med / c.n).toFixed(3)} ${med.toFixed(3)} ${runs.length} ` +
    `${(min / c.n).toFixed(3)} ${(cmed / c.n).toFixed(3)}`);
}

async function main() {
  const a = parseArgs(process.argv.slice(2));
  let ours = null;
  if (a.ours) {
    ours = startOurs(a.ours);
    await ours.ready();
  }
  const inp = readInputs(a.work);
  const sessions = {};
  for (const th of a.threads) sessions[th] = await makeSessions(a.onnxDir, th);
  console.log(`INFO onnxruntime-node ${ort.env.versions.node}, sessions ready`);
  const ok = await check(sessions[a.threads[0]], inp);
  if (!ok) console.log('CHECK FAILED: cosine below 0.9999');
  if (a.checkOnly || !ok) {
    if (ours) ours.quit();
    process.exit(ok ? 0 : 1);
  }
  const feeds = makeFeeds(inp);
  for (const th of a.threads) {
    const sess = sessions[th];
    for (const c of CASES) {
      await ortRun(sess, c, feeds); // warm-up (ours warms up on its first request)
      const tOrt = [], tOurs = [];
      const start = Date.now();
      for (;;) {
        if (ours) {
          await sleep(a.gapMs);
          tOurs.push(...(await ours.run(c, th, 1)));
          await sleep(a.gapMs);
        }
        tOrt.push(await ortRun(sess, c, feeds));
        const runs = tOrt.length;
        if (runs >= a.maxRuns || (runs >= a.minRuns && (Date.now() - start) / 1e3 >= a.secs)) break;
      }
      if (ours) result('ours', c, th, tOurs);
      result('ort', c, th, tOrt);
    }
  }
  if (ours) ours.quit();
}

main().catch((e) => { console.error(`ort_bench: ${e.stack || e}`); process.exit(1); });
