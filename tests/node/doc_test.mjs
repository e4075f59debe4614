// The upload page's PDF page search in headless Chromium (Debian's, driven by
// playwright-core): upload a PDF, type a query, read the page cards (thumbnail,
// page number, score) for page images and then for page text.
// Usage: node doc_test.mjs BASE_URL PDF QUERY OUTDIR [MODEL]
// Prints a JSON summary; saves screenshots into OUTDIR.
import { chromium } from "playwright-core";

const [base, pdf, query, outdir, model] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const out = {};
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const errors = [], failed = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("response", (r) => { if (r.status() >= 400) failed.push(`${r.status()} ${r.url()}`); });
  await page.goto(base + "/");
  await page.waitForFunction(() => document.body.dataset.ready === "1", null, { timeout: 15000 });
  if (model) await page.selectOption("#model", model);
  out.model = await page.inputValue("#model");
  out.modes = await page.$$eval('input[name="doc-mode"]', (rs) => rs.map((r) => ({ value: r.value, disabled: r.disabled })));
  await page.setInputFiles("#doc-file", pdf);
  await page.fill("#doc-query", query);
  const cards = async () => page.$$eval("#doc-pages li", (lis) => lis.map((li) => {
    const img = li.querySelector("img");
    return {
      page: Number(li.dataset.page), score: Number(li.dataset.score), best: li.classList.contains("best"),
      caption: li.querySelector(".score").textContent,
      img: img ? { loaded: img.complete && img.naturalWidth > 0, w: img.naturalWidth, h: img.naturalHeight,
                   src: img.src.slice(0, 22) } : null,
      snippet: li.querySelector(".snippet") ? li.querySelector(".snippet").textContent : null,
    };
  }));
  let n = 0;
  for (const mode of ["image", "text"]) {
    if (out.modes.find((m) => m.value === mode).disabled) continue;
    await page.check(`input[name="doc-mode"][value="${mode}"]`);
    await page.click("#doc-go");
    n++;
    await page.waitForFunction((k) => document.getElementById("doc").dataset.done === String(k), n, { timeout: 60000 });
    // images decode asynchronously after insertion
    await page.waitForFunction(() => [...document.querySelectorAll("#doc-pages img")].every((i) => i.complete), null,
                               { timeout: 10000 });
    out[mode] = { status: await page.textContent("#doc-status"), listModel: await page.getAttribute("#doc-pages", "data-model"),
                  cards: await cards() };
    await page.screenshot({ path: `${outdir}/web-doc-${mode}.png`, fullPage: true });
  }
  out.errors = errors;
  out.failed = failed;
} finally {
  await browser.close();
}
console.log(JSON.stringify(out));
