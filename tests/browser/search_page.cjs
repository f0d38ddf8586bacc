// The search page in a real headless Chromium (Playwright driving Debian's chromium):
// type a query, get highlighted results; type "amster" and see Amsterdam without pressing
// Enter; watch the freshness badge follow the live change stream; click the map near Paris,
// get results with distances and true totals, page through them, clear the map filter; the
// map shows land; save a screenshot.
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

  // 1b. As you type: "amster" (no Enter) finds Amsterdam, the Netherlands, first.
  await page.fill("#q", "");
  await page.type("#q", "amster", { delay: 40 });
  await page.waitForFunction(() => {
    const h = document.querySelector("#results li.hit");
    return h && /^Amsterdam$/.test(h.querySelector(".name").textContent) && /\bNL\b/.test(h.querySelector(".meta").textContent);
  }, null, { timeout: 15000 });
  console.log("as you type: amster -> " + (await page.textContent("#results li.hit")).replace(/\s+/g, " ").trim());

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

  // 4. True totals and paging: more places than a page lie within 200 km of Paris.
  await page.waitForFunction(() => / found/.test(document.getElementById("summary").textContent), null, { timeout: 15000 });
  const summary = await page.textContent("#summary");
  const found = Number((/([\d,]+) found/.exec(summary) || [])[1]?.replace(/,/g, ""));
  if (!(found > 20)) fail("total within 200 km of Paris: " + summary);
  if (!(await page.isVisible("#geo"))) fail("the map filter is not shown");
  const page1 = await page.$$eval("#results li.hit", (l) => l.map((e) => e.dataset.key));
  await page.click("#next");
  await page.waitForFunction(() => /page 2 of/.test(document.getElementById("page").textContent), null, { timeout: 15000 });
  await page.waitForFunction((p1) => { const k = document.querySelector("#results li.hit")?.dataset.key; return k && !p1.includes(k); }, page1, { timeout: 15000 });
  const page2 = await page.$$eval("#results li.hit", (l) => l.map((e) => e.dataset.key));
  if (page2.some((k) => page1.includes(k))) fail("page 2 repeats page 1: " + page2);
  const farthest = Number(/([\d.]+) km away/.exec(await page.textContent("#results li.hit:last-child"))[1]);
  if (!(farthest <= 200)) fail("page 2 reaches " + farthest + " km");
  console.log(`paging: ${found} found, page 2 has ${page2.length} other places`);

  // 5. Clearing the map filter: a text search is no longer limited to 200 km of Paris.
  await page.click("#clear-geo");
  if (await page.isVisible("#geo")) fail("the map filter is still shown after clearing it");
  await page.fill("#q", "amsterdam");
  await page.waitForFunction(() => /^Amsterdam$/.test(document.querySelector("#results li.hit .name")?.textContent || ""), null, { timeout: 15000 });
  console.log("map filter cleared: amsterdam found again");

  // 6. The map shows land (central Africa) and sea (the Pacific).
  const colour = await page.evaluate(() => {
    const c = document.getElementById("map"), g = c.getContext("2d");
    const at = (lat, lon) => Array.from(g.getImageData(Math.round((lon + 180) / 360 * c.width), Math.round((90 - lat) / 180 * c.height), 1, 1).data.slice(0, 3)).join(",");
    return { land: at(5, 22), sea: at(-10, -140) };
  });
  if (colour.land === colour.sea) fail("no land on the map: " + JSON.stringify(colour));
  console.log("map: land " + colour.land + ", sea " + colour.sea);

  await page.screenshot({ path: shot, fullPage: true });
  if (errors.length) fail("page errors: " + errors.join("; "));
  if (external.length) fail("fetched from elsewhere: " + external.join(", "));
  await browser.close();
  console.log("ok");
})().catch((e) => fail(e.stack || String(e)));
