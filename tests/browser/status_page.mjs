// Drives Debian's chromium (headless, through playwright-core; no browser is downloaded) against
// clusterd's status page while a resync runs, and prints one JSON object with what it saw:
//   node status_page.mjs URL SCREENSHOT.png NODE NODE...
// 1. JavaScript off: the server-rendered page alone shows every NODE and a progress bar.
// 2. JavaScript on, phone-sized viewport: the page updates itself in place (no reload) and the
//    progress value changes; nothing scrolls sideways; no forms or buttons (read-only).
// Exit status 0 when every check passed, 1 otherwise (the JSON says which failed).
import { chromium } from "playwright-core";

const [url, shot, ...nodes] = process.argv.slice(2);
const chromiumPath = process.env.CHROMIUM || "/usr/bin/chromium";
// The flags this machine's chromium needs (no sandbox as root, no GPU, no background connections
// to Google, which the closed network refuses).
const args = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
  "--disable-component-update", "--disable-sync"];
const result = { checks: {}, samples: [] };
const check = (name, ok, detail) => { result.checks[name] = { ok: Boolean(ok), detail }; };
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const browser = await chromium.launch({ executablePath: chromiumPath, headless: true, args });
try {
  // --- without JavaScript: the static view -------------------------------------------------------
  const plain = await browser.newContext({ javaScriptEnabled: false });
  const p0 = await plain.newPage();
  const resp = await p0.goto(url, { waitUntil: "load", timeout: 15000 });
  check("static: HTTP 200", resp && resp.status() === 200, resp && resp.status());
  const staticNodes = await p0.$$eval("[data-node]", (els) => els.map((e) => e.dataset.node));
  check("static: shows every node", nodes.every((n) => staticNodes.includes(n)), staticNodes);
  const staticProgress = await p0.$$eval("progress", (els) => els.map((e) => e.value));
  check("static: a progress bar while the resync runs", staticProgress.length > 0, staticProgress);
  check("static: not live without JavaScript", (await p0.evaluate(() => document.documentElement.dataset.live)) === undefined);
  const sessions = await p0.$$eval("#sessions td", (els) => els.map((e) => e.textContent));
  check("static: session listed", sessions.length > 0, sessions);
  await plain.close();

  // --- with JavaScript, phone-sized --------------------------------------------------------------
  const phone = await browser.newContext({ viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true });
  const page = await phone.newPage();
  let navigations = 0;
  page.on("framenavigated", (f) => { if (f === page.mainFrame()) navigations += 1; });
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
  await page.goto(url, { waitUntil: "load", timeout: 15000 });
  const read = () => page.evaluate(() => ({
    refreshes: Number(document.documentElement.dataset.refreshes || "-1"),
    progress: Array.from(document.querySelectorAll("progress")).map((e) => e.value),
    nodes: Array.from(document.querySelectorAll("[data-node]")).map((e) => e.dataset.node),
  }));
  const first = await read();
  result.samples.push(first);
  let changed = null;
  for (let i = 0; i < 30 && !changed; i++) {
    await sleep(1000);
    const s = await read();
    result.samples.push(s);
    if (s.refreshes >= 1 && s.progress.length > 0 && first.progress.length > 0 && s.progress[0] !== first.progress[0]) {
      changed = s;
    }
  }
  check("live: progress changed in place", changed !== null, { first: first.progress, last: result.samples.at(-1).progress });
  check("live: no reload (one navigation)", navigations === 1, navigations);
  check("live: shows every node", nodes.every((n) => (changed || first).nodes.includes(n)), (changed || first).nodes);
  check("live: no script errors", errors.length === 0, errors);
  const layout = await page.evaluate(() => ({
    scrollWidth: document.documentElement.scrollWidth,
    innerWidth: window.innerWidth,
    controls: document.querySelectorAll("form, button, input, select, textarea").length,
    fontPx: parseFloat(getComputedStyle(document.body).fontSize),
  }));
  check("phone: no sideways scrolling", layout.scrollWidth <= layout.innerWidth, layout);
  check("phone: readable text (>= 14px)", layout.fontPx >= 14, layout.fontPx);
  check("read-only: no forms or buttons", layout.controls === 0, layout.controls);
  if (shot) {
    await page.screenshot({ path: shot, fullPage: true });
  }
  await phone.close();
} finally {
  await browser.close();
}
result.ok = Object.values(result.checks).every((c) => c.ok);
console.log(JSON.stringify(result, null, 1));
process.exit(result.ok ? 0 : 1);
