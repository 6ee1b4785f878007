// Front-end weight budgets (BENCHMARKS.md): what a page makes the browser download before it is
// interactive. /login and /register are plain server-rendered forms and load no WebAssembly;
// the islands bundle, loaded only by pages with interactive parts, has a ceiling of its own so
// that adding a provider page cannot quietly grow it.
import { expect, test, type Page } from "@playwright/test";
import * as fs from "node:fs";
import * as path from "node:path";
import * as zlib from "node:zlib";
import { passwordStep, registerWithAppTotp, signOut } from "./helpers";

const LOGIN_WASM_BUDGET = 120_000; // bytes, gzip -9 (the budget for /login)
const ISLANDS_WASM_BUDGET = 200_000; // bytes, gzip -9 (measured 191,503 when set)
const site = path.join(__dirname, "..", "..", "target", "site");

/** gzip -9 bytes of the wasm files the page loaded. */
async function wasmGzipBytes(page: Page): Promise<number> {
  const loaded = await page.evaluate(() =>
    performance.getEntriesByType("resource").map((e) => new URL(e.name).pathname).filter((p) => p.endsWith(".wasm")),
  );
  return loaded.reduce((sum, p) => sum + zlib.gzipSync(fs.readFileSync(path.join(site, p)), { level: 9 }).length, 0);
}

for (const route of ["/login", "/register"]) {
  test(`${route} loads no more than ${LOGIN_WASM_BUDGET} B of wasm (gzip)`, async ({ page }) => {
    await page.goto(route, { waitUntil: "load" });
    expect(await wasmGzipBytes(page)).toBeLessThanOrEqual(LOGIN_WASM_BUDGET);
  });
}

test(`the islands bundle stays under ${ISLANDS_WASM_BUDGET} B (gzip)`, async ({ page }) => {
  const { email } = await registerWithAppTotp(page, "weight");
  await signOut(page);
  await passwordStep(page, email);
  const bytes = await wasmGzipBytes(page);
  expect(bytes).toBeGreaterThan(0);
  expect(bytes).toBeLessThanOrEqual(ISLANDS_WASM_BUDGET);
});
