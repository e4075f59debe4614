// mmembed demo page: no framework. Each side is a text, an image or a video;
// both sides go through the one model chosen at the top (vectors of two
// models live in different spaces: their cosine means nothing), the page
// shows each vector and the cosine of A and B.
"use strict";

const $ = (id) => document.getElementById(id);
const SIDES = ["a", "b"];
let models = [];   // /info's models: name, modalities, synthetic, dims, default

function kind(side) {
  return document.querySelector(`input[name="kind-${side}"]:checked`).value;
}

function current() {
  return models.find((m) => m.name === $("model").value) || null;
}

function syncInputs(side) {
  const k = kind(side);
  $(`text-${side}`).hidden = k !== "text";
  $(`file-${side}`).hidden = k === "text";
  $(`file-${side}`).accept = k === "video" ? "video/*,image/gif" : "image/*";
}

// Offer only the kinds of input the chosen model embeds.
function syncModel() {
  const m = current();
  const can = (k) => !m || (m.modalities || []).includes(k);
  for (const side of SIDES) {
    let checked = null;
    document.querySelectorAll(`input[name="kind-${side}"]`).forEach((r) => {
      r.disabled = !can(r.value);
      r.parentElement.classList.toggle("disabled", r.disabled);
      if (r.checked && !r.disabled) checked = r;
    });
    if (!checked) {
      const first = document.querySelector(`input[name="kind-${side}"]:not(:disabled)`);
      if (first) first.checked = true;
    }
    syncInputs(side);
  }
  $("model-info").textContent = m ? `${m.dims}-d · ${(m.modalities || []).join(", ")}` : "";
  $("model-note").textContent = m && m.synthetic
    ? `Note: ${m.name} has synthetic (random) weights — its vectors are not semantic, so its cosines mean nothing. ` +
      "Point the config at real weights to compare meaningfully."
    : "";
}

async function apiError(res) {
  try {
    const j = await res.json();
    return `${res.status}: ${j.error ? j.error.message : JSON.stringify(j)}`;
  } catch (e) {
    return `${res.status} ${res.statusText}`;
  }
}

async function embedSide(side) {
  const k = kind(side);
  const model = $("model").value;
  const t0 = performance.now();
  let res;
  if (k === "text") {
    const text = $(`text-${side}`).value;
    if (!text.trim()) throw new Error("enter a text");
    const body = { texts: [text] };
    if (model) body.model = model;
    res = await fetch("/embed/text", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
  } else {
    const f = $(`file-${side}`).files[0];
    if (!f) throw new Error(`choose a${k === "image" ? "n image" : " video"} file`);
    const fd = new FormData();
    if (model) fd.append("model", model);
    fd.append(k === "image" ? "image" : "video", f, f.name);
    res = await fetch(k === "image" ? "/embed/image" : "/embed/video", { method: "POST", body: fd });
  }
  if (!res.ok) throw new Error(await apiError(res));
  const j = await res.json();
  const ms = performance.now() - t0;
  // every route answers data[]; older servers put a video's vector at the top level
  const vec = j.data ? j.data[0].embedding : j.embedding;
  const frames = j.frames || (j.data && j.data[0].frames);
  return { kind: k, model: j.model, vec, ms, frames };
}

function show(side, r) {
  const el = $(`result-${side}`);
  el.classList.remove("error");
  const first = r.vec.slice(0, 6).map((v) => v.toFixed(4)).join(", ");
  let s = `${r.kind} · model ${r.model} · dim ${r.vec.length} · ${r.ms.toFixed(1)} ms\n[${first}, …]`;
  if (r.frames) s += `\nframes at ${r.frames.map((f) => f.time.toFixed(2) + "s").join(", ")}`;
  el.textContent = s;
  el.dataset.dim = String(r.vec.length);
  el.dataset.model = r.model;
  el.dataset.ms = r.ms.toFixed(1);
}

function cosine(a, b) {
  let d = 0, na = 0, nb = 0;
  for (let i = 0; i < a.length; i++) { d += a[i] * b[i]; na += a[i] * a[i]; nb += b[i] * b[i]; }
  return d / Math.sqrt(na * nb);
}

async function run(ev) {
  ev.preventDefault();
  $("status").textContent = "working…";
  $("cosine").textContent = "";
  delete $("cosine").dataset.value;
  const out = {};
  for (const side of SIDES) {
    try {
      out[side] = await embedSide(side);
      show(side, out[side]);
    } catch (e) {
      const el = $(`result-${side}`);
      el.textContent = e.message;
      el.classList.add("error");
    }
  }
  if (out.a && out.b) {
    if (out.a.model !== out.b.model || out.a.vec.length !== out.b.vec.length) {
      // cannot happen with one model chosen, but the server's defaults may pick two
      $("cosine").textContent = `A (${out.a.model}) and B (${out.b.model}) come from different models: not comparable`;
    } else {
      const c = cosine(out.a.vec, out.b.vec);
      const m = models.find((x) => x.name === out.a.model);
      $("cosine").textContent = `cosine(A, B) = ${c.toFixed(4)} in ${out.a.model}'s space` +
        (m && m.synthetic ? " (synthetic weights: not meaningful)" : "");
      $("cosine").dataset.value = String(c);
    }
  }
  $("status").textContent = "done";
}

// ---------------------------------------------------------------- PDF page search
// The pages and the query go through ONE model: the query text and page
// images need a model with both (CLIP, Qwen2-VL); page text needs a text
// model. Other combinations are not offered.
const THUMB = 160;   // thumbnail long side, pixels (the server scales its rendered page down)

function docMode() {
  const r = document.querySelector('input[name="doc-mode"]:checked');
  return r ? r.value : null;
}

function syncDoc() {
  const m = current();
  const mods = m ? (m.modalities || []) : ["text", "image"];
  const can = { image: mods.includes("text") && mods.includes("image"), text: mods.includes("text") };
  let checked = null;
  document.querySelectorAll('input[name="doc-mode"]').forEach((r) => {
    r.disabled = !can[r.value];
    r.parentElement.classList.toggle("disabled", r.disabled);
    if (r.checked && !r.disabled) checked = r;
  });
  if (!checked) {
    const first = document.querySelector('input[name="doc-mode"]:not(:disabled)');
    if (first) first.checked = true;
    else document.querySelectorAll('input[name="doc-mode"]').forEach((r) => { r.checked = false; });
  }
  const none = !can.image && !can.text;
  $("doc-go").disabled = none;
  $("doc-note").textContent = none
    ? `${m.name} cannot embed a query text, so its page vectors cannot be compared with one: choose a model with text.`
    : !can.image ? `${m ? m.name : "This model"} has no vision: pages are searched by their text layer.` : "";
}

function pageCard(p, best) {
  const li = document.createElement("li");
  li.dataset.page = String(p.page);
  li.dataset.score = String(p.score);
  if (best) li.classList.add("best");
  if (p.thumbnail && p.thumbnail.startsWith("data:image/png;base64,")) {
    const img = document.createElement("img");
    img.src = p.thumbnail;
    img.alt = `page ${p.page}`;
    img.width = p.tw;
    img.height = p.th;
    li.appendChild(img);
  }
  const cap = document.createElement("div");
  cap.className = "score";
  cap.textContent = `page ${p.page} · ${p.score.toFixed(4)}`;
  li.appendChild(cap);
  const bar = document.createElement("div");
  bar.className = "bar";
  bar.style.width = `${Math.max(2, Math.round(((p.score + 1) / 2) * 100))}%`;
  li.appendChild(bar);
  if (p.text !== undefined) {
    const t = document.createElement("div");
    t.className = "snippet";
    t.textContent = p.text;
    li.appendChild(t);
  }
  return li;
}

async function searchDoc(ev) {
  ev.preventDefault();
  const list = $("doc-pages");
  list.textContent = "";
  $("doc-status").textContent = "working…";
  $("doc-status").classList.remove("error");
  try {
    const f = $("doc-file").files[0];
    if (!f) throw new Error("choose a PDF file");
    const query = $("doc-query").value;
    if (!query.trim()) throw new Error("enter a query text");
    const mode = docMode();
    if (!mode) throw new Error("this model cannot compare a query text with pages");
    const model = $("model").value;
    const t0 = performance.now();
    const fd = new FormData();
    if (model) fd.append("model", model);
    fd.append("mode", mode);
    if (mode === "image") fd.append("thumbnails", String(THUMB));
    else fd.append("return_text", "true");
    fd.append("document", f, f.name);
    const rd = await fetch("/embed/document", { method: "POST", body: fd });
    if (!rd.ok) throw new Error(await apiError(rd));
    const doc = await rd.json();
    // the query through the model that embedded the pages: one space
    const rq = await fetch("/embed/text", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ texts: [query], model: doc.model }),
    });
    if (!rq.ok) throw new Error(await apiError(rq));
    const qv = (await rq.json()).data[0].embedding;
    // one card per page: a page's text chunks score as their best one
    const pages = new Map();
    for (const it of doc.data) {
      const score = cosine(qv, it.embedding);
      const p = pages.get(it.page);
      if (p && p.score >= score) continue;
      pages.set(it.page, {
        page: it.page, score, thumbnail: it.thumbnail, text: it.kind === "text" ? it.text : undefined,
        tw: it.width && it.height ? Math.round(it.width * THUMB / Math.max(it.width, it.height, THUMB)) : undefined,
        th: it.width && it.height ? Math.round(it.height * THUMB / Math.max(it.width, it.height, THUMB)) : undefined,
      });
    }
    const all = [...pages.values()].sort((a, b) => a.page - b.page);
    const best = all.reduce((b, p) => (!b || p.score > b.score ? p : b), null);
    for (const p of all) list.appendChild(pageCard(p, p === best));
    const m = models.find((x) => x.name === doc.model);
    $("doc-status").textContent = `done: ${all.length} of ${doc.pages} pages in ${doc.model}'s space, ` +
      `${(performance.now() - t0).toFixed(0)} ms` + (best ? `; best: page ${best.page}` : "") +
      (m && m.synthetic ? " (synthetic weights: not meaningful)" : "");
    list.dataset.model = doc.model;
  } catch (e) {
    $("doc-status").textContent = e.message;
    $("doc-status").classList.add("error");
  }
  document.getElementById("doc").dataset.done = String(Number(document.getElementById("doc").dataset.done || 0) + 1);
}

for (const side of SIDES) {
  document.querySelectorAll(`input[name="kind-${side}"]`).forEach((r) => r.addEventListener("change", () => syncInputs(side)));
  syncInputs(side);
}
$("model").addEventListener("change", () => { syncModel(); syncDoc(); });
$("form").addEventListener("submit", run);
$("doc-form").addEventListener("submit", searchDoc);

// The models: pick the first that embeds both texts and images (so A and B
// of the default form are comparable), else the default one.
fetch("/info").then((r) => r.json()).then((info) => {
  models = info.models || [];
  const sel = $("model");
  sel.textContent = "";
  for (const m of models) {
    const o = document.createElement("option");
    o.value = m.name;
    o.textContent = `${m.name} (${(m.modalities || []).join(", ")}${m.synthetic ? "; synthetic weights" : ""})`;
    sel.appendChild(o);
  }
  const both = models.find((m) => (m.modalities || []).includes("text") && (m.modalities || []).includes("image"));
  const pick = both || models.find((m) => m.default) || models[0];
  if (pick) sel.value = pick.name;
  syncModel();
  syncDoc();
  document.body.dataset.ready = "1";
}).catch(() => { document.body.dataset.ready = "1"; });
