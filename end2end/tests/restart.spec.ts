// A sign-in flow lives in the database, not in the server process: it survives a restart
// between the password step and the code step. This test runs its own server instance (the
// shared one from playwright.config.ts must not be stopped under other tests).
import { expect, test } from "@playwright/test";
import { spawn, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { SANDBOX, nextTotpStep, passwordStep, registerWithAppTotp, signOut, totp } from "./helpers";

test.describe.configure({ timeout: 120_000 });

const root = path.resolve(__dirname, "..", "..");
const port = Number(process.env.STEPGATE_E2E_RESTART_PORT ?? 3310);
const base = `http://127.0.0.1:${port}`;

async function startServer(dataDir: string): Promise<ChildProcess> {
  const server = spawn(path.join(root, "target", "release", "server"), [], {
    cwd: root,
    stdio: "ignore",
    env: {
      ...process.env,
      LEPTOS_SITE_ADDR: `127.0.0.1:${port}`,
      LEPTOS_SITE_ROOT: path.join(root, "target", "site"),
      STEPGATE_DATA: dataDir,
      STEPGATE_DEMO: "0",
      STEPGATE_TOTP_PROVIDER_URL: SANDBOX,
      STEPGATE_PUBLIC_URL: base,
    },
  });
  for (let i = 0; i < 100; i++) {
    try {
      if ((await fetch(`${base}/login`)).ok) return server;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  server.kill();
  throw new Error("the server did not start");
}

async function stopServer(server: ChildProcess): Promise<void> {
  if (server.exitCode !== null) return;
  const exited = once(server, "exit");
  server.kill("SIGTERM");
  await exited;
}

test("a sign-in flow survives a server restart between the password and the code", async ({ browser }) => {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "stepgate-restart-"));
  let server = await startServer(dataDir);
  const context = await browser.newContext({ baseURL: base });
  try {
    const page = await context.newPage();
    const { email, secret } = await registerWithAppTotp(page, "restart");
    await signOut(page);
    await passwordStep(page, email);

    await stopServer(server);
    server = await startServer(dataDir);

    await nextTotpStep();
    await page.getByLabel("Verification code").fill(totp(secret));
    await page.getByRole("button", { name: "Verify" }).click();
    await expect(page.getByText(`Signed in as ${email}`)).toBeVisible();
  } finally {
    await context.close();
    await stopServer(server);
    fs.rmSync(dataDir, { recursive: true, force: true });
  }
});
