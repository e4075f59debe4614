// ort_common — what the ONNX Runtime sides of the benchmarks share
// (ort_bench.js for CLIP, ort_text_bench.js for BERT, ort_use_bench.js for
// USE Lite): option parsing, input files, session options, our engine as a
// child process speaking the drivers' --serve protocol, and the loop that
// alternates one run of ours with one run of ORT so both see the same load.
//
// Options of every script:
//   --threads 1,2      intraOpNumThreads values (interOpNumThreads 1,
//                      graphOptimizationLevel 'all', sequential)
//   --secs S           per case and thread count: time at least S seconds
//   --min-runs N       ... and at least N runs (after one warm-up run)
//   --max-runs N       ... and at most N runs
//   --ours "CMD ..."   also time our engine: start CMD (the C driver with
//                      --serve), then alternate its runs with ORT's
//   --variants a,b     time our engine once per variant (its dtypes: f32,bf16,q8),
//                      each run named "ours-<variant>" in RESULT lines
//   --gap-ms G         pause between the two engines' runs (default 100: lets
//                      the other side's spinning threads go to sleep)
//   --check-only       only the cross-check
//
// Prints "RESULT <engine> <case> <threads> <ms per item> <ms per batch> <runs>
// <min ms per item> <CPU ms per item>": wall-clock median over the runs, the
// fastest run, and the median process CPU time (all threads).
'use strict';

const fs = require('fs');
const path = require('path');
const { spawn } = require('child_process');
const readline = require('readline');
const ort = require('onnxruntime-node');

// Parses argv: two positional arguments (returned as a.pos) and the options above.
function parseArgs(argv, usageLine) {
  const usage = () => {
    process.stderr.write(`usage: ${usageLine} [--threads 1,2] [--secs S] [--min-runs N] [--max-runs N] ` +
      '[--ours "CMD ARGS"] [--gap-ms G] [--check-only]\n');
    process.exit(2);
  };
  const a = { threads: [1, 2], secs: 3, minRuns: 3, maxRuns: 50, ours: null, gapMs: 100, checkOnly: false, pos: [],
    variants: [] };
  for (let i = 0; i < argv.length; i++) {
    const v = argv[i];
    const next = () => { if (i + 1 >= argv.length) usage(); return argv[++i]; };
    if (v === '--threads') a.threads = next().split(',').map(Number).filter((x) => x >= 1);
    else if (v === '--secs') a.secs = Number(next());
    else if (v === '--min-runs') a.minRuns = Math.max(1, Number(next()));
    else if (v === '--max-runs') a.maxRuns = Number(next());
    else if (v === '--ours') a.ours = next();
    else if (v === '--gap-ms') a.gapMs = Number(next());
    else if (v === '--variants') a.variants = next().split(',').filter(Boolean);
    else if (v === '--check-only') a.checkOnly = true;
    else if (v.startsWith('--')) usage();
    else a.pos.push(v);
  }
  if (a.pos.length !== 2) usage();
  a.maxRuns = Math.max(a.maxRuns, a.minRuns);
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

// WORK_DIR/meta.txt: "key value" lines written by the C driver.
function readMeta(work) {
  const meta = {};
  for (const line of fs.readFileSync(path.join(work, 'meta.txt'), 'utf8').split('\n')) {
    const [k, v] = line.split(' ');
    if (k) meta[k] = Number(v);
  }
  return meta;
}

const toBig = (i32) => BigInt64Array.from(i32, (x) => BigInt(x));

function makeSession(file, threads) {
  return ort.InferenceSession.create(file, {
    intraOpNumThreads: threads, interOpNumThreads: 1, graphOptimizationLevel: 'all',
    executionMode: 'sequential', executionProviders: ['cpu'],
  });
}

// Sequences n0..n0+n-1 of a packed id list as one padded batch [n, longest]
// with attention_mask.
function paddedFeed(ids, lens, n0, n) {
  let off = 0;
  for (let s = 0; s < n0; s++) off += lens[s];
  const T = Math.max(...lens.slice(n0, n0 + n));
  const pid = new BigInt64Array(n * T), mask = new BigInt64Array(n * T);
  for (let s = 0; s < n; s++) {
    for (let i = 0; i < lens[n0 + s]; i++) {
      pid[s * T + i] = BigInt(ids[off + i]);
      mask[s * T + i] = 1n;
    }
    off += lens[n0 + s];
  }
  return { T, feed: { input_ids: new ort.Tensor('int64', pid, [n, T]), attention_mask: new ort.Tensor('int64', mask, [n, T]) } };
}

// One run: [wall ms, process CPU ms (all threads)].
async function timed(fn) {
  const c0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  await fn();
  const wall = Number(process.hrtime.bigint() - t0) / 1e6;
  const cu = process.cpuUsage(c0);
  return [wall, (cu.user + cu.system) / 1e3];
}

function cosine(a, b) {
  let d = 0, na = 0, nb = 0;
  for (let i = 0; i < a.length; i++) { d += a[i] * b[i]; na += a[i] * a[i]; nb += b[i] * b[i]; }
  return d / Math.sqrt(na * nb);
}

// Cosines of n D-vectors, one line "CHECK <label> (len:cosine ...) worst W"; true if all >= 0.9999.
function checkVectors(label, got, want, D, lens) {
  let worst = 1;
  const per = [];
  for (let s = 0; s < want.length / D; s++) {
    const cs = cosine(got.subarray(s * D, (s + 1) * D), want.subarray(s * D, (s + 1) * D));
    if (lens) per.push(`${lens[s]}:${cs.toFixed(7)}`);
    worst = Math.min(worst, cs);
  }
  console.log(`CHECK ${label}${lens ? ` (len:cosine ${per.join(' ')})` : ''} worst ${worst.toFixed(7)}`);
  return worst >= 0.9999;
}

// Our engine as a child process speaking the C drivers' --serve protocol.
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
    async run(c, th, k, variant) {
      child.stdin.write(`run ${c.name} ${th} ${k}${variant ? ` ${variant}` : ''}\n`);
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

// The whole run. spec: { usage, cases: [{name, n, ...}],
//   load(a) -> state (inputs read from a.pos[1], after our driver wrote them),
//   session(a, threads) -> Promise of this engine's session(s),
//   check(session, state) -> Promise of bool (cross-check with our outputs),
//   run(session, c, state) -> Promise (one timed ORT run of case c) }.
async function benchMain(spec) {
  const a = parseArgs(process.argv.slice(2), spec.usage);
  let ours = null;
  if (a.ours) {
    ours = startOurs(a.ours);
    await ours.ready();   // the driver writes WORK_DIR before it says READY
  }
  const sessions = {};
  const state = spec.load(a);
  for (const th of a.threads) sessions[th] = await spec.session(a, th);
  console.log(`INFO onnxruntime-node ${ort.env.versions.node}, sessions ready`);
  const ok = await spec.check(sessions[a.threads[0]], state);
  if (!ok) console.log('CHECK FAILED: cosine below 0.9999');
  if (a.checkOnly || !ok) {
    if (ours) ours.quit();
    process.exit(ok ? 0 : 1);
  }
  for (const th of a.threads) {
    for (const c of spec.cases) {
      const once = () => timed(() => spec.run(sessions[th], c, state));
      await once(); // warm-up (ours warms up on its first request)
      const variants = a.variants.length ? a.variants : [null];
      const tOrt = [], tOurs = variants.map(() => []);
      const start = Date.now();
      for (;;) {
        if (ours) {
          for (let v = 0; v < variants.length; v++) {
            await sleep(a.gapMs);
            tOurs[v].push(...(await ours.run(c, th, 1, variants[v])));
          }
          await sleep(a.gapMs);
        }
        tOrt.push(await once());
        const runs = tOrt.length;
        if (runs >= a.maxRuns || (runs >= a.minRuns && (Date.now() - start) / 1e3 >= a.secs)) break;
      }
      if (ours) variants.forEach((v, i) => result(v ? `ours-${v}` : 'ours', c, th, tOurs[i]));
      result('ort', c, th, tOrt);
    }
  }
  if (ours) ours.quit();
}

function run(name, spec) {
  benchMain(spec).catch((e) => { console.error(`${name}: ${e.stack || e}`); process.exit(1); });
}

module.exports = { ort, readI32, readF32, readMeta, toBig, makeSession, paddedFeed, checkVectors, run };
