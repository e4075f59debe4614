// End-to-end test of the upload page in headless Chromium (Debian's), driven
// by playwright-core. Usage: node web_test.mjs BASE_URL IMAGE VIDEO|- OUTDIR
// Prints a JSON summary; saves screenshots into OUTDIR.
import { chromium } from "playwright-core";

const [base, image, video, outdir] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const out = {};
try {
  const page = await browser.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.goto(base + "/");
  out.title = await page.title();
  // A: the default caption text; B: an image file uploaded through the form
  await page.fill("#text-a", "a photo of a cat");
  await page.check('input[name="kind-b"][value="image"]');
  await page.setInputFiles("#file-b", image);
  await page.click("#go");
  await page.waitForFunction(() => document.getElementById("status").textContent === "done", null, { timeout: 30000 });
  out.image = {
    cosine: Number(await page.getAttribute("#cosine", "data-value")),
    dimA: Number(await page.getAttribute("#result-a", "data-dim")),
    dimB: Number(await page.getAttribute("#result-b", "data-dim")),
    textB: await page.textContent("#result-b"),
  };
  await page.screenshot({ path: `${outdir}/web-image.png`, fullPage: true });
  if (video !== "-") {
    await page.check('input[name="kind-b"][value="video"]');
    await page.setInputFiles("#file-b", video);
    await page.click("#go");
    await page.waitForFunction(() => document.getElementById("status").textContent === "done", null, { timeout: 60000 });
    out.video = {
      cosine: Number(await page.getAttribute("#cosine", "data-value")),
      dimB: Number(await page.getAttribute("#result-b", "data-dim")),
      textB: await page.textContent("#result-b"),
    };
    await page.screenshot({ path: `${outdir}/web-video.png`, fullPage: true });
  }
  out.errors = errors;
} finally {
  await browser.close();
}
console.log(JSON.stringify(out));
