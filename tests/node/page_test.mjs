// The upload page's model handling and layout in headless Chromium (Debian's,
// driven by playwright-core). Usage: node page_test.mjs BASE_URL IMAGE OUTDIR
// Prints a JSON summary; saves screenshots into OUTDIR.
import { chromium } from "playwright-core";

const [base, image, outdir] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const out = { widths: {} };
try {
  for (const width of [390, 1280]) {
    const page = await browser.newPage({ viewport: { width, height: 844 } });
    const failed = [], errors = [];
    page.on("response", (r) => { if (r.status() >= 400) failed.push(`${r.status()} ${r.url()}`); });
    page.on("pageerror", (e) => errors.push(String(e)));
    await page.goto(base + "/");
    await page.waitForFunction(() => document.body.dataset.ready === "1", null, { timeout: 15000 });
    const w = { failed, errors };
    w.scroll = await page.evaluate(() => ({ scrollWidth: document.documentElement.scrollWidth,
                                            clientWidth: document.documentElement.clientWidth }));
    w.icon = await page.evaluate(async () => {
      const l = document.querySelector('link[rel~="icon"]');
      if (!l) return null;
      const r = await fetch(l.href);
      return { href: l.getAttribute("href"), status: r.status, type: r.headers.get("content-type") };
    });
    w.model = await page.inputValue("#model");
    w.options = await page.$$eval("#model option", (os) => os.map((o) => o.value));
    w.note = await page.textContent("#model-note");
    // the default form: text A against an uploaded image B, in the chosen model
    await page.fill("#text-a", "a photo of a cat");
    await page.check('input[name="kind-b"][value="image"]');
    await page.setInputFiles("#file-b", image);
    await page.click("#go");
    await page.waitForFunction(() => document.getElementById("status").textContent === "done", null, { timeout: 30000 });
    w.compare = {
      cosine: Number(await page.getAttribute("#cosine", "data-value")),
      text: await page.textContent("#cosine"),
      modelA: await page.getAttribute("#result-a", "data-model"),
      modelB: await page.getAttribute("#result-b", "data-model"),
    };
    w.scrollAfter = await page.evaluate(() => document.documentElement.scrollWidth);
    await page.screenshot({ path: `${outdir}/page-${width}.png`, fullPage: true });
    // a text-only model: image and video cannot be chosen on either side
    const textOnly = await page.evaluate(() => [...document.querySelectorAll("#model option")]
      .map((o) => o.value).find((v) => v && !/image/.test(document.querySelector(`#model option[value="${v}"]`).textContent)));
    if (textOnly) {
      await page.selectOption("#model", textOnly);
      w.textOnly = {
        model: textOnly,
        disabled: await page.$$eval('input[type="radio"]:disabled', (rs) => rs.map((r) => `${r.name}:${r.value}`)),
        kindB: await page.$eval('input[name="kind-b"]:checked', (r) => r.value),
        note: await page.textContent("#model-note"),
        docMode: await page.$eval('input[name="doc-mode"]:checked', (r) => r.value),
        docNote: await page.textContent("#doc-note"),
      };
    }
    out.widths[width] = w;
    await page.close();
  }
} finally {
  await browser.close();
}
console.log(JSON.stringify(out));
