// `stepgate serve` carries its site: started from an empty folder (no target/site beside it,
// no LEPTOS_SITE_ROOT), it serves /login with its stylesheet and the islands' wasm, brotli'd
// from the copies made at build time.
import { expect, test, type Response } from "@playwright/test";
import { spawn, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { registerWithAppTotp, SANDBOX, waitForHydration } from "./helpers";

test.describe.configure({ timeout: 120_000 });

const root = path.resolve(__dirname, "..", "..");
const port = Number(process.env.STEPGATE_E2E_BINARY_PORT ?? Number(process.env.STEPGATE_E2E_PORT ?? 3300) + 26);
const base = `http://127.0.0.1:${port}`;

let folder: string;
let server: ChildProcess;

test.beforeAll(async () => {
  folder = fs.mkdtempSync(path.join(os.tmpdir(), "stepgate-binary-"));
  const env = Object.fromEntries(
    Object.entries(process.env).filter(([name]) => !name.startsWith("LEPTOS_") && name !== "DATABASE_URL"),
  ) as Record<string, string>;
  server = spawn(path.join(root, "target", "release", "stepgate"), ["serve"], {
    cwd: folder,
    stdio: "ignore",
    env: {
      ...env,
      LEPTOS_SITE_ADDR: `127.0.0.1:${port}`,
      STEPGATE_DATA: path.join(folder, "data"),
      STEPGATE_KEY_FILE: path.join(folder, "secret.key"),
      STEPGATE_REGISTRATION: "open",
      STEPGATE_PUBLIC_URL: base,
      STEPGATE_TOTP_PROVIDER_URL: SANDBOX,
    },
  });
  for (let i = 0; i < 100; i++) {
    try {
      if ((await fetch(`${base}/health/live`)).ok) return;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error("stepgate serve did not start");
});

test.afterAll(async () => {
  if (server.exitCode === null) {
    const exited = once(server, "exit");
    server.kill("SIGTERM");
    await exited;
  }
  fs.rmSync(folder, { recursive: true, force: true });
});

test("started from an empty folder, it serves /login with its CSS and the islands' wasm", async ({ browser }) => {
  expect(fs.readdirSync(folder).sort()).toEqual(["data", "secret.key"]);
  const context = await browser.newContext({ baseURL: base });
  try {
    const page = await context.newPage();
    const responses: Response[] = [];
    page.on("response", (r) => responses.push(r));

    await page.goto("/login");
    const css = responses.find((r) => new URL(r.url()).pathname.endsWith(".css"));
    expect(css, "the page links its stylesheet").toBeTruthy();
    expect(css!.status()).toBe(200);
    expect(css!.headers()["content-type"]).toContain("text/css");
    // Applied, not just fetched: the page's own rules are in effect.
    const rules = await page.evaluate(() =>
      Array.from(document.styleSheets).reduce((n, sheet) => n + sheet.cssRules.length, 0),
    );
    expect(rules).toBeGreaterThan(10);

    // The islands' page: its wasm and JS come from inside the binary, in the encoding asked for.
    await registerWithAppTotp(page, "binary");
    const wasm = responses.find((r) => new URL(r.url()).pathname.endsWith(".wasm"));
    expect(wasm, "the islands' wasm was loaded").toBeTruthy();
    expect(wasm!.status()).toBe(200);
    expect(wasm!.headers()["content-type"]).toBe("application/wasm");
    expect(wasm!.headers()["content-encoding"]).toBe("br");
    expect(wasm!.headers()["cache-control"]).toContain("immutable");
    await page.goto("/settings/security");
    await waitForHydration(page);
    expect(await page.evaluate(() => (window as any).__stepgateHydrated)).toBe(true);

    // A request for a file the site does not have is the app's own 404 page.
    const missing = await page.goto("/pkg/no-such-file.js");
    expect(missing!.status()).toBe(404);
  } finally {
    await context.close();
  }
});
