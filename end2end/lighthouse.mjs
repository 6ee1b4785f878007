// Lighthouse (mobile preset: emulated mid-range phone, simulated slow 4G and 4x CPU slowdown) on
// Stepgate's pages, in Debian's Chromium. Prints one line per page and writes each full report
// to target/lighthouse/. Usage: node end2end/lighthouse.mjs <app origin> [page ...]
// Pages: login, register, code (a sign-in waiting at its second factor).
import * as fs from "node:fs";
import * as path from "node:path";
import { createHmac } from "node:crypto";
import lighthouse from "lighthouse";
import * as chromeLauncher from "chrome-launcher";

const origin = process.argv[2] ?? "http://127.0.0.1:3500";
const pages = process.argv.slice(3).length ? process.argv.slice(3) : ["login", "code"];
const outDir = path.resolve(path.dirname(new URL(import.meta.url).pathname), "..", "target", "lighthouse");
fs.mkdirSync(outDir, { recursive: true });

function totp(base32, unixSeconds = Date.now() / 1000) {
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
  let bits = "";
  for (const c of base32.replace(/=+$/, "").toUpperCase()) bits += alphabet.indexOf(c).toString(2).padStart(5, "0");
  const key = Buffer.from(bits.match(/.{8}/g).map((b) => parseInt(b, 2)));
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(Math.floor(unixSeconds / 30)));
  const hash = createHmac("sha1", key).update(counter).digest();
  const offset = hash[19] & 0xf;
  return ((hash.readUInt32BE(offset) & 0x7fffffff) % 1e6).toString().padStart(6, "0");
}

/** Calls a server function as the browser does; returns the answer and the cookies it set. */
async function call(name, form, cookie = "") {
  const response = await fetch(`${origin}/api/${name}`, {
    method: "POST",
    headers: { accept: "application/json", "content-type": "application/x-www-form-urlencoded", cookie },
    body: new URLSearchParams(form),
    redirect: "manual",
  });
  const cookies = response.headers.getSetCookie().map((c) => c.split(";")[0]).filter((c) => !c.endsWith("="));
  if (response.status >= 400) throw new Error(`${name}: ${response.status} ${await response.text()}`);
  return { response, cookie: cookies.join("; ") || cookie };
}

/** A sign-in waiting at its code step: the URL and the login cookie that owns it. */
async function codeStep() {
  const email = `lighthouse-${Date.now()}@example.org`;
  const { cookie: session } = await call("register", { email, password: "lighthouse-1", confirm_password: "lighthouse-1" });
  const { response } = await call("begin_app_enrollment", {}, session);
  const { secret } = await response.json();
  await call("confirm_app_enrollment", { code: totp(secret) }, session);
  const signedIn = await call("sign_in", { email, password: "lighthouse-1" });
  const location = signedIn.response.headers.get("serverfnredirect") ?? signedIn.response.headers.get("location");
  return { url: new URL(location, origin).href, cookie: signedIn.cookie };
}

async function target(page) {
  switch (page) {
    case "login":
      return { url: `${origin}/login` };
    case "register":
      return { url: `${origin}/register` };
    case "code":
      return codeStep();
    default:
      throw new Error(`unknown page ${page}`);
  }
}

const chrome = await chromeLauncher.launch({
  chromePath: process.env.CHROMIUM_PATH ?? "/usr/bin/chromium",
  chromeFlags: [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
  ],
});
let failed = false;
try {
  console.log("page      performance  accessibility  best-practices  FCP      LCP      TBT     TTI");
  for (const page of pages) {
    const { url, cookie } = await target(page);
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
  await chrome.kill();
}
process.exit(failed ? 1 : 0);
