#!/usr/bin/env node
// ort_use_bench — the ONNX Runtime side of tools/bench/bench_use.sh.
//
//   usage: node tools/bench/ort_use_bench.js ONNX_FILE WORK_DIR [options]
//     ONNX_FILE  use_lite.onnx from tools/bench/export_use.py
//                (input_ids, attention_mask int64 [B, T] -> embedding [B, 512])
//     WORK_DIR   use_bench's files: the sentences' ids (from mm_use_tokenize,
//                so ORT sees exactly the ids our engine sees; no tokenizer in
//                ORT's time) and our engine's vectors for them
//   options (as tools/bench/ort_use_bench.js):
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

const fs = require('fs');
const path = require('path');
const { spawn } = require('child_process');
const readline = require('readline');
const ort = require('onnxruntime-node');

const CASES = [{ name: 'b1', n: 1 }, { name: 'b32', n: 32 }];

function usage() {
  process.stderr.write('usage: node ort_use_bench.js ONNX_FILE WORK_DIR [--threads 1,2] [--secs S] ' +
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
  [a.onnx, a.work] = pos;
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
  return Int32Array.from(new Int32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.length)));
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
  return {
    meta,
    lens: Array.from(readI32(path.join(work, 'lens.i32'))),
    ids: Array.from(readI32(path.join(work, 'ids.i32'))),
    checkOut: readF32(path.join(work, 'check_out.f32')),
  };
}

// the first n sentences as one padded batch [n, longest of them]
function padded(inp, n) {
  const T = Math.max(...inp.lens.slice(0, n));
  const ids = new BigInt64Array(n * T), mask = new BigInt64Array(n * T);
  let off = 0;
  for (let s = 0; s < n; s++) {
    for (let i = 0; i < inp.lens[s]; i++) {
      ids[s * T + i] = BigInt(inp.ids[off + i]);
      mask[s * T + i] = 1n;
    }
    off += inp.lens[s];
  }
  return { T, feed: { input_ids: new ort.Tensor('int64', ids, [n, T]), attention_mask: new ort.Tensor('int64', mask, [n, T]) } };
}

function makeSession(onnx, threads) {
  return ort.InferenceSession.create(onnx, {
    intraOpNumThreads: threads, interOpNumThreads: 1, graphOptimizationLevel: 'all',
    executionMode: 'sequential', executionProviders: ['cpu'],
  });
}

function makeFeeds(inp) {
  const feeds = {};
  for (const c of CASES) feeds[c.name] = padded(inp, c.n).feed;
  return feeds;
}

async function ortRun(sess, c, feeds) {
  const c0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  await sess.run(feeds[c.name]);
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
  const D = inp.meta.dim, n = inp.lens.length;
  const { T, feed } = padded(inp, n);
  const got = (await sess.run(feed)).embedding.data;
  let worst = 1;
  const per = [];
  for (let s = 0; s < n; s++) {
    const cs = cosine(got.subarray(s * D, (s + 1) * D), inp.checkOut.subarray(s * D, (s + 1) * D));
    per.push(`${inp.lens[s]}:${cs.toFixed(7)}`);
    worst = Math.min(worst, cs);
  }
  console.log(`CHECK use ${n} sentences, one padded batch of ${T} (len:cosine ${per.join(' ')}) worst ${worst.toFixed(7)}`);
  return worst >= 0.9999;
}

function startOurs(cmdline) {
  const parts = cmdline.split(/\s+/).filter(Boolean);
  const child = spawn(parts[0], parts.slice(1), { stdio: ['pipe', 'pipe', 'inherit'] });
  const rl = readline.createInterface({ input: child.stdout });
  const waiting = [], lines = [];
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
  for (const th of a.threads) sessions[th] = await makeSession(a.onnx, th);
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

main().catch((e) => { console.error(`ort_use_bench: ${e.stack || e}`); process.exit(1); });
