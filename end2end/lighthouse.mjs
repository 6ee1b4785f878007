// Lighthouse (mobile preset: emulated mid-range phone, simulated slow 4G and 4x CPU slowdown) on
// Stepgate's pages, in Debian's Chromium. Prints one line per page and writes each full report
// to target/lighthouse/. Usage: node end2end/lighthouse.mjs <app origin> [page ...]
// Pages: login, register, code (a sign-in waiting at its second factor), accounts (signed in,
// one connected account).
import * as fs from "node:fs";
import * as path from "node:path";
import { pageTarget } from "./pages.mjs";
import lighthouse from "lighthouse";
import * as chromeLauncher from "chrome-launcher";

const origin = process.argv[2] ?? "http://127.0.0.1:3500";
const pages = process.argv.slice(3).length ? process.argv.slice(3) : ["login", "code", "accounts"];
const outDir = path.resolve(path.dirname(new URL(import.meta.url).pathname), "..", "target", "lighthouse");
fs.mkdirSync(outDir, { recursive: true });

// A fresh browser per page: each is measured as a new visitor's (the cookies a page sets, such
// as /login's passkey autofill, would otherwise ride along to the next).
const launch = () =>
  chromeLauncher.launch({
    chromePath: process.env.CHROMIUM_PATH ?? "/usr/bin/chromium",
    chromeFlags: [
      "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
      "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
    ],
  });
let chrome;
let failed = false;
try {
  console.log("page      performance  accessibility  best-practices  FCP      LCP      TBT     TTI");
  for (const page of pages) {
    if (chrome) await chrome.kill();
    chrome = await launch();
    const { url, cookie } = await pageTarget(origin, page);
    const result = await lighthouse(url, {
      port: chrome.port,
      output: "json",
      logLevel: "error",
      onlyCategories: ["performance", "accessibility", "best-practices"],
      extraHeaders: cookie ? { Cookie: cookie } : undefined,
    });
    const lhr = result.lhr;
    fs.writeFileSync(path.join(outDir, `${page}.json`), result.report);
    const score = (c) => Math.round((lhr.categories[c].score ?? 0) * 100);
    const audit = (a) => lhr.audits[a].displayValue ?? "-";
    console.log(
      `${page.padEnd(10)}${String(score("performance")).padEnd(13)}${String(score("accessibility")).padEnd(15)}` +
        `${String(score("best-practices")).padEnd(16)}${audit("first-contentful-paint").padEnd(9)}` +
        `${audit("largest-contentful-paint").padEnd(9)}${audit("total-blocking-time").padEnd(8)}${audit("interactive")}`,
    );
    for (const c of ["accessibility", "best-practices"]) {
      for (const ref of lhr.categories[c].auditRefs) {
        const a = lhr.audits[ref.id];
        if (ref.weight > 0 && a.score !== null && a.score < 1) console.log(`  ${c}: ${a.id}: ${a.title}`);
      }
    }
    if (lhr.runtimeError) {
      console.log(`  runtime error: ${lhr.runtimeError.message}`);
      failed = true;
    }
  }
} finally {
  if (chrome) await chrome.kill();
}
process.exit(failed ? 1 : 0);
