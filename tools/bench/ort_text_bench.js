#!/usr/bin/env node
// ort_text_bench — the ONNX Runtime side of tools/bench/bench_text.sh.
//
//   usage: node tools/bench/ort_text_bench.js ONNX_FILE WORK_DIR [options]
//     ONNX_FILE  minilm.onnx from tools/bench/export_bert.py
//                (input_ids, attention_mask int64 [B, T] -> pooled [B, dim])
//     WORK_DIR   inputs and our engine's check outputs from text_bench
//   options (as tools/bench/ort_bench.js):
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

const fs = require('fs');
const path = require('path');
const { spawn } = require('child_process');
const readline = require('readline');
const ort = require('onnxruntime-node');

const LEN = 16;
const CASES = [{ name: 'b1', n: 1 }, { name: 'b32', n: 32 }];

function usage() {
  process.stderr.write('usage: node ort_text_bench.js ONNX_FILE WORK_DIR [--threads 1,2] [--secs S] ' +
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
    ids16: BigInt64Array.from(readI32(path.join(work, 'ids16.i32')), (x) => BigInt(x)),
    checkLens: Array.from(readI32(path.join(work, 'check_lens.i32'))),
    checkIds: Array.from(readI32(path.join(work, 'check_ids.i32'))),
    checkOut: readF32(path.join(work, 'check_out.f32')),
  };
}

function makeSession(onnx, threads) {
  return ort.InferenceSession.create(onnx, {
    intraOpNumThreads: threads, interOpNumThreads: 1, graphOptimizationLevel: 'all',
    executionMode: 'sequential', executionProviders: ['cpu'],
  });
}

function makeFeeds(inp) {
  const feeds = {};
  for (const c of CASES) {
    feeds[c.name] = {
      input_ids: new ort.Tensor('int64', inp.ids16.subarray(0, c.n * LEN), [c.n, LEN]),
      attention_mask: new ort.Tensor('int64', new BigInt64Array(c.n * LEN).fill(1n), [c.n, LEN]),
    };
  }
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
  const D = inp.meta.dim, n = inp.checkLens.length, T = Math.max(...inp.checkLens);
  const ids = new BigInt64Array(n * T), mask = new BigInt64Array(n * T);
  let off = 0;
  for (let s = 0; s < n; s++) {
    for (let i = 0; i < inp.checkLens[s]; i++) {
      ids[s * T + i] = BigInt(inp.checkIds[off + i]);
      mask[s * T + i] = 1n;
    }
    off += inp.checkLens[s];
  }
  const got = (await sess.run({
    input_ids: new ort.Tensor('int64', ids, [n, T]),
    attention_mask: new ort.Tensor('int64', mask, [n, T]),
  })).pooled.data;
  let worst = 1;
  const per = [];
  for (let s = 0; s < n; s++) {
    const cs = cosine(got.subarray(s * D, (s + 1) * D), inp.checkOut.subarray(s * D, (s + 1) * D));
    per.push(`${inp.checkLens[s]}:${cs.toFixed(7)}`);
    worst = Math.min(worst, cs);
  }
  console.log(`CHECK text ${n} sequences, one padded batch of ${T} (len:cosine ${per.join(' ')}) worst ${worst.toFixed(7)}`);
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

main().catch((e) => { console.error(`ort_text_bench: ${e.stack || e}`); process.exit(1); });
