// Drive mmembed with the unmodified OpenAI client library (npm `openai`).
// Usage: node openai_client.mjs BASE_URL  -> prints a JSON summary.
import OpenAI from "openai";

const base = process.argv[2];
const client = new OpenAI({ apiKey: "unused", baseURL: base, maxRetries: 0 });
const out = {};
const a = await client.embeddings.create({ model: "tiny", input: "a photo of a cat" });
out.single = { n: a.data.length, dim: a.data[0].embedding.length, model: a.model, usage: a.usage,
               first: a.data[0].embedding.slice(0, 4) };
const b = await client.embeddings.create({ model: "tiny", input: ["a photo of a cat", "a diagram"], dimensions: 8 });
out.batch = { n: b.data.length, dim: b.data[0].embedding.length, index: b.data.map((d) => d.index) };
// the library's default: encoding_format=base64 decoded by the client itself
const c = await client.embeddings.create({ model: "tiny", input: "a photo of a cat", encoding_format: "base64" });
out.base64 = { type: typeof c.data[0].embedding, len: c.data[0].embedding.length };
try {
  await client.embeddings.create({ model: "no-such-model", input: "x" });
  out.error = null;
} catch (e) {
  out.error = { status: e.status, code: e.code, type: e.type, message: e.message };
}
console.log(JSON.stringify(out));
