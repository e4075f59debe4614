// mmembed demo page: no framework. Each side is a text, an image or a video;
// the page posts it to the API, shows the vector and the cosine of A and B.
"use strict";

const $ = (id) => document.getElementById(id);

function kind(side) {
  return document.querySelector(`input[name="kind-${side}"]:checked`).value;
}

function syncInputs(side) {
  const k = kind(side);
  $(`text-${side}`).hidden = k !== "text";
  $(`file-${side}`).hidden = k === "text";
  $(`file-${side}`).accept = k === "video" ? "video/*,image/gif" : "image/*";
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
  const t0 = performance.now();
  let res;
  if (k === "text") {
    const text = $(`text-${side}`).value;
    if (!text.trim()) throw new Error("enter a text");
    res = await fetch("/embed/text", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ texts: [text] }),
    });
  } else {
    const f = $(`file-${side}`).files[0];
    if (!f) throw new Error(`choose a${k === "image" ? "n image" : " video"} file`);
    const fd = new FormData();
    fd.append(k === "image" ? "image" : "video", f, f.name);
    res = await fetch(k === "image" ? "/embed/image" : "/embed/video", { method: "POST", body: fd });
  }
  if (!res.ok) throw new Error(await apiError(res));
  const j = await res.json();
  const ms = performance.now() - t0;
  const vec = j.data[0].embedding;
  return { kind: k, model: j.model, vec, ms, frames: j.frames };
}

function show(side, r) {
  const el = $(`result-${side}`);
  el.classList.remove("error");
  const first = r.vec.slice(0, 6).map((v) => v.toFixed(4)).join(", ");
  let s = `${r.kind} · model ${r.model} · dim ${r.vec.length} · ${r.ms.toFixed(1)} ms\n[${first}, …]`;
  if (r.frames) s += `\nframes at ${r.frames.map((f) => f.time.toFixed(2) + "s").join(", ")}`;
  el.textContent = s;
  el.dataset.dim = String(r.vec.length);
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
  const out = {};
  for (const side of ["a", "b"]) {
    try {
      out[side] = await embedSide(side);
      show(side, out[side]);
    } catch (e) {
      const el = $(`result-${side}`);
      el.textContent = e.message;
      el.classList.add("error");
    }
  }
  if (out.a && out.b && out.a.vec.length === out.b.vec.length) {
    const c = cosine(out.a.vec, out.b.vec);
    $("cosine").textContent = `cosine(A, B) = ${c.toFixed(4)}`;
    $("cosine").dataset.value = String(c);
  }
  $("status").textContent = "done";
}

for (const side of ["a", "b"]) {
  document.querySelectorAll(`input[name="kind-${side}"]`).forEach((r) => r.addEventListener("change", () => syncInputs(side)));
  syncInputs(side);
}
$("form").addEventListener("submit", run);
fetch("/info").then((r) => r.json()).then((info) => {
  const syn = (info.models || []).filter((m) => m.synthetic);
  if (syn.length) $("model-note").textContent = `Note: ${syn.map((m) => m.name).join(", ")} has synthetic weights — vectors are not semantic.`;
}).catch(() => {});
