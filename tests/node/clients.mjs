// Third-party OpenAI-API clients against mmembed, each with its default
// settings; only baseURL (and a dummy key) and the model name are given.
//   openai              embeddings.create (the library asks for base64 by default
//                       and decodes it), models.retrieve, models.list
//   @langchain/openai   OpenAIEmbeddings.embedDocuments of 1,000 texts
//                       (default batchSize 512: two requests)
//   ai + @ai-sdk/openai embedMany of 2,048 texts (one request: OpenAI's limit)
// Usage: node clients.mjs BASE_URL MODEL N_LANGCHAIN N_AI -> JSON on stdout:
// per client the vectors it returned (the test compares them with the server's).
import OpenAI from "openai";
import { OpenAIEmbeddings } from "@langchain/openai";
import { embedMany } from "ai";
import { createOpenAI } from "@ai-sdk/openai";

const [base, model, nLang, nAi] = process.argv.slice(2);
const apiKey = "sk-unused";
// distinct texts, so that a vector at the wrong index shows
const text = (i) => `document ${i}: a photo of ${["a cat", "a dog", "the sea", "a red car"][i % 4]} number ${i}`;
const texts = (n) => Array.from({ length: n }, (_, i) => text(i));
const out = { texts: { langchain: texts(Number(nLang)), ai: texts(Number(nAi)) } };
const errorOf = (e) => ({ name: e.name, status: e.status ?? e.statusCode, message: String(e.message).slice(0, 500) });

async function step(name, fn) {
  const t0 = performance.now();
  try {
    out[name] = await fn();
  } catch (e) {
    out[name] = { error: errorOf(e) };
  }
  out[name].ms = Math.round(performance.now() - t0);
}

const client = new OpenAI({ apiKey, baseURL: base });
await step("openai", async () => {
  const one = await client.embeddings.create({ model, input: "a photo of a cat" });
  const two = await client.embeddings.create({ model, input: ["a photo of a cat", "a diagram"] });
  return {
    model: one.model,
    usage: one.usage,
    isArray: Array.isArray(one.data[0].embedding),
    single: one.data[0].embedding,
    batch: two.data.map((d) => d.embedding),
    index: two.data.map((d) => d.index),
  };
});
await step("openai_models", async () => {
  const m = await client.models.retrieve(model);
  const list = await client.models.list();
  const ids = [];
  for await (const x of list) ids.push(x.id);
  let missing;
  try {
    await client.models.retrieve("no-such-model");
    missing = { status: 200 };
  } catch (e) {
    missing = errorOf(e);
  }
  return { retrieve: { id: m.id, object: m.object, created: m.created, owned_by: m.owned_by }, ids, missing };
});
await step("langchain", async () => {
  const emb = new OpenAIEmbeddings({ model, apiKey, configuration: { baseURL: base } });
  const vecs = await emb.embedDocuments(out.texts.langchain);
  const q = await emb.embedQuery(out.texts.langchain[0]);
  return { batchSize: emb.batchSize, vectors: vecs, query: q };
});
await step("ai", async () => {
  const provider = createOpenAI({ apiKey, baseURL: base });
  const r = await embedMany({ model: provider.embedding(model), values: out.texts.ai });
  return { vectors: r.embeddings, usage: r.usage, responses: (r.responses || []).length };
});
console.log(JSON.stringify(out));
