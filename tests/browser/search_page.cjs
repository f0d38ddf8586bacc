// The search page in a real headless Chromium (Playwright driving Debian's chromium):
// type a query, get highlighted results; watch the freshness badge follow the live change
// stream; click the world plot near Paris, get results with distances; save a screenshot.
//   node tests/browser/search_page.cjs <base-url> <screenshot.png>
// PLAYWRIGHT_CORE: the playwright-core package directory; CHROMIUM: the browser binary.
"use strict";
const { chromium } = require(process.env.PLAYWRIGHT_CORE);

const [base, shot] = process.argv.slice(2);
const fail = (msg) => { console.error("FAIL: " + msg); process.exit(1); };

(async () => {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu"],
  });
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  const external = [];
  page.on("request", (r) => { if (!r.url().startsWith(base)) external.push(r.url()); });
  await page.goto(base + "/");

  // 1. A text query: hits with highlighted snippets.
  await page.fill("#q", "amsterdam");
  await page.press("#q", "Enter");
  await page.waitForSelector("#results li.hit", { timeout: 15000 });
  const first = await page.textContent("#results li.hit .name");
  if (!/amsterdam/i.test(first)) fail("first hit for amsterdam is " + first);
  if ((await page.locator("#results li.hit b").count()) === 0) fail("no highlighted match");
  console.log("text: first hit " + first.trim());

  // 2. The live writer's changes reach the page through the change stream.
  await page.waitForFunction(() => /live · [1-9]\d* changes/.test(document.getElementById("badge").textContent), null, { timeout: 20000 });
  await page.waitForFunction(() => /lag \d+ ms/.test(document.getElementById("badge").textContent), null, { timeout: 20000 });
  console.log("badge: " + (await page.textContent("#badge")));
  await page.fill("#q", "live");
  await page.press("#q", "Enter");
  await page.waitForFunction(() => [...document.querySelectorAll("#results .name")].some((n) => /^Live /.test(n.textContent)), null, { timeout: 15000 });
  console.log("live rows found through the page");

  // 3. Near me: click the plot at Paris (48.86 N, 2.35 E), 200 km.
  await page.fill("#q", "");
  const box = await page.locator("#map").boundingBox();
  const x = box.x + (2.35 + 180) / 360 * box.width, y = box.y + (90 - 48.86) / 180 * box.height;
  await page.mouse.click(x, y);
  await page.waitForFunction(() => /km away/.test(document.getElementById("results").textContent), null, { timeout: 15000 });
  const near = await page.textContent("#results li.hit");
  if (!/km away/.test(near)) fail("no distance in " + near);
  const km = Number(/([\d.]+) km away/.exec(near)[1]);
  if (!(km <= 200)) fail("first hit " + km + " km away, radius 200 km");
  console.log("near Paris: " + near.replace(/\s+/g, " ").trim());

  await page.screenshot({ path: shot, fullPage: true });
  if (errors.length) fail("page errors: " + errors.join("; "));
  if (external.length) fail("fetched from elsewhere: " + external.join(", "));
  await browser.close();
  console.log("ok");
})().catch((e) => fail(e.stack || String(e)));
