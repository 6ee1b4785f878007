// Front-end weight budgets (BENCHMARKS.md): what a page makes the browser download before it is
// interactive. /login, /register and the sign-in code step are plain server-rendered forms and
// load no WebAssembly (the code step's popup and paste handling are a small script); the islands
// bundle, loaded only by the security settings, has a ceiling of its own so that adding a
// provider page cannot quietly grow it.
import { expect, test, type Page } from "@playwright/test";
import * as fs from "node:fs";
import * as path from "node:path";
import * as zlib from "node:zlib";
import { passwordStep, registerWithAppTotp, signOut, waitForHydration } from "./helpers";

const LOGIN_WASM_BUDGET = 120_000; // bytes, gzip -9 (the budget for /login)
const CODE_WASM_BUDGET = 100_000; // bytes, gzip -9 (issue 21's budget for /login/code)
const CODE_SCRIPT_BUDGET = 10_000; // bytes, gzip -9, of the code page's own scripts
const ISLANDS_WASM_BUDGET = 200_000; // bytes, gzip -9 (measured 191,503 when set)
const site = path.join(__dirname, "..", "..", "target", "site");

/** gzip -9 bytes of the files the page loaded whose names end in `suffix`. */
async function gzipBytes(page: Page, suffix: string): Promise<number> {
  const loaded = await page.evaluate(
    (suffix) =>
      performance.getEntriesByType("resource").map((e) => new URL(e.name).pathname).filter((p) => p.endsWith(suffix)),
    suffix,
  );
  return loaded.reduce((sum, p) => sum + zlib.gzipSync(fs.readFileSync(path.join(site, p)), { level: 9 }).length, 0);
}
const wasmGzipBytes = (page: Page) => gzipBytes(page, ".wasm");

for (const route of ["/login", "/register"]) {
  test(`${route} loads no more than ${LOGIN_WASM_BUDGET} B of wasm (gzip)`, async ({ page }) => {
    await page.goto(route, { waitUntil: "load" });
    expect(await wasmGzipBytes(page)).toBeLessThanOrEqual(LOGIN_WASM_BUDGET);
  });
}

test(`/login/code loads no more than ${CODE_WASM_BUDGET} B of wasm and ${CODE_SCRIPT_BUDGET} B of script (gzip)`, async ({
  page,
}) => {
  const { email } = await registerWithAppTotp(page, "weight-code");
  await signOut(page);
  await passwordStep(page, email);
  await page.waitForLoadState("load");
  // The step is interactive: its script has run (the popup button is on).
  await expect(page.getByRole("button", { name: "Get code from TOTP provider" })).toBeEnabled();
  expect(await wasmGzipBytes(page)).toBeLessThanOrEqual(CODE_WASM_BUDGET);
  const scripts = await gzipBytes(page, ".js");
  expect(scripts).toBeGreaterThan(0);
  expect(scripts).toBeLessThanOrEqual(CODE_SCRIPT_BUDGET);
});

test(`the islands bundle stays under ${ISLANDS_WASM_BUDGET} B (gzip)`, async ({ page }) => {
  await registerWithAppTotp(page, "weight");
  await page.goto("/settings/security");
  await waitForHydration(page);
  const bytes = await wasmGzipBytes(page);
  expect(bytes).toBeGreaterThan(0);
  expect(bytes).toBeLessThanOrEqual(ISLANDS_WASM_BUDGET);
});
