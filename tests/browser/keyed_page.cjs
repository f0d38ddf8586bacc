// The search page against an API that needs keys, in headless Chromium: it asks for a key,
// then searches and follows the change stream with it, and never puts the key in a URL.
//   node tests/browser/keyed_page.cjs <base-url> <read-key>
// PLAYWRIGHT_CORE: the playwright-core package directory; CHROMIUM: the browser binary.
"use strict";
const { chromium } = require(process.env.PLAYWRIGHT_CORE);

const [base, key] = process.argv.slice(2);
const fail = (msg) => { console.error("FAIL: " + msg); process.exit(1); };

(async () => {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu"],
  });
  const page = await browser.newPage();
  const errors = [], urls = [], keyed = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("request", (r) => {
    urls.push(r.url());
    if (r.headers()["x-api-key"] === key) keyed.push(r.url());
  });
  await page.goto(base + "/");

  // Without a key every call is a 401: the page asks for one.
  await page.waitForSelector("#key:not([hidden])", { timeout: 15000 });
  if (!/needs a key/.test(await page.textContent("#summary"))) fail("no prompt for a key");
  await page.fill("#key", key);
  await page.press("#key", "Enter");

  // Searches carry it.
  await page.fill("#q", "place");
  await page.press("#q", "Enter");
  await page.waitForSelector("#results li.hit", { timeout: 15000 });
  console.log("search: " + (await page.textContent("#summary")));

  // The change stream carries it too: the badge counts the writer's changes.
  await page.waitForFunction(() => /live · [1-9]\d* changes/.test(document.getElementById("badge").textContent), null, { timeout: 30000 });
  console.log("badge: " + (await page.textContent("#badge")));
  if (!keyed.some((u) => u.includes("/changes"))) fail("the change stream was not opened with the key");

  if (urls.some((u) => u.includes(key))) fail("the key appeared in a URL");
  if (errors.length) fail("page errors: " + errors.join("; "));
  await browser.close();
  console.log("ok");
})().catch((e) => fail(e.stack || String(e)));
