// What each page makes the browser download and run before it is interactive, and how long
// that takes on a slow phone: 4x CPU slowdown, 1.6 Mbit/s down, 750 kbit/s up, 150 ms RTT
// (Lighthouse's "slow 4G"), in Debian's Chromium. Sizes are of the files as built: raw,
// gzip -9 and brotli at maximum quality; JS counts the wasm's glue and the page's own scripts.
// Interactive means: the islands have hydrated, or, on a page without islands, the document is
// parsed and its deferred scripts have run (DOMContentLoaded has ended: the forms work without
// them, the code page's popup button needs its script).
// Usage: node end2end/frontend-bench.mjs <app origin> [page ...]   (pages: login register code)
import * as fs from "node:fs";
import * as path from "node:path";
import * as zlib from "node:zlib";
import { chromium } from "@playwright/test";
import { pageTarget } from "./pages.mjs";

const origin = process.argv[2] ?? "http://127.0.0.1:3500";
const pages = process.argv.slice(3).length ? process.argv.slice(3) : ["login", "register", "code", "accounts"];
const site = path.resolve(path.dirname(new URL(import.meta.url).pathname), "..", "target", "site");
const RUNS = Number(process.env.BENCH_RUNS ?? 5);

function sizes(file) {
  const bytes = fs.readFileSync(file);
  return {
    raw: bytes.length,
    gzip: zlib.gzipSync(bytes, { level: 9 }).length,
    brotli: zlib.brotliCompressSync(bytes, { params: { [zlib.constants.BROTLI_PARAM_QUALITY]: 11 } }).length,
  };
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_PATH ?? "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run"],
});
const results = [];
try {
  for (const name of pages) {
    const times = [];
    let code = { wasm: { raw: 0, gzip: 0, brotli: 0 }, js: { raw: 0, gzip: 0, brotli: 0 } };
    for (let run = 0; run < RUNS; run++) {
      const { url, cookie } = await pageTarget(origin, name);
      const context = await browser.newContext();
      if (cookie) {
        await context.addCookies(cookie.split("; ").map((c) => {
          const [cname, ...rest] = c.split("=");
          return { name: cname, value: rest.join("="), url: origin };
        }));
      }
      const page = await context.newPage();
      const cdp = await context.newCDPSession(page);
      await cdp.send("Network.enable");
      await cdp.send("Network.setCacheDisabled", { cacheDisabled: true });
      await cdp.send("Network.emulateNetworkConditions", {
        offline: false, latency: 150, downloadThroughput: (1.6 * 1024 * 1024) / 8, uploadThroughput: (750 * 1024) / 8,
      });
      await cdp.send("Emulation.setCPUThrottlingRate", { rate: 4 });
      await page.goto(url, { waitUntil: "commit" });
      const interactive = await page.waitForFunction(() => {
        const islands = document.querySelector("leptos-island") !== null;
        const parsed = (performance.getEntriesByType("navigation")[0]?.domContentLoadedEventEnd ?? 0) > 0;
        if (islands ? window.__stepgateHydrated === true : parsed) {
          return performance.now();
        }
        return false;
      }, null, { polling: 20, timeout: 60_000 });
      times.push(await interactive.jsonValue());
      const loaded = await page.evaluate(() =>
        performance.getEntriesByType("resource").map((e) => new URL(e.name).pathname).filter((p) => /\.(wasm|js)$/.test(p)),
      );
      code = { wasm: { raw: 0, gzip: 0, brotli: 0 }, js: { raw: 0, gzip: 0, brotli: 0 } };
      for (const p of loaded) {
        const s = sizes(path.join(site, p));
        const kind = p.endsWith(".wasm") ? code.wasm : code.js;
        for (const k of ["raw", "gzip", "brotli"]) kind[k] += s[k];
      }
      await context.close();
    }
    times.sort((a, b) => a - b);
    results.push({ page: name, ...code, interactiveMs: Math.round(times[Math.floor(times.length / 2)]) });
  }
} finally {
  await browser.close();
}
console.log("page       wasm raw / gzip / br          JS raw / gzip / br        interactive (median of " + RUNS + ")");
for (const r of results) {
  const f = (s) => `${s.raw} / ${s.gzip} / ${s.brotli}`;
  console.log(`${r.page.padEnd(11)}${f(r.wasm).padEnd(30)}${f(r.js).padEnd(26)}${r.interactiveMs} ms`);
}
if (process.env.BENCH_JSON) fs.writeFileSync(process.env.BENCH_JSON, JSON.stringify(results, null, 2));
