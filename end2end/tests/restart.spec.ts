// A sign-in flow lives in the database, not in the server process: it survives a restart
// between the password step and the code step. This test runs its own server instance (the
// shared one from playwright.config.ts must not be stopped under other tests).
import { expect, test } from "@playwright/test";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { startOwnServer, stopOwnServer } from "./own-server";
import { nextTotpStep, passwordStep, registerWithAppTotp, signOut, totp } from "./helpers";

test.describe.configure({ timeout: 120_000 });

const port = Number(process.env.STEPGATE_E2E_RESTART_PORT ?? 3310);
const base = `http://127.0.0.1:${port}`;

test("a sign-in flow survives a server restart between the password and the code", async ({ browser }) => {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "stepgate-restart-"));
  let server = await startOwnServer(port, dataDir);
  const context = await browser.newContext({ baseURL: base });
  try {
    const page = await context.newPage();
    const { email, secret } = await registerWithAppTotp(page, "restart");
    await signOut(page);
    await passwordStep(page, email);

    await stopOwnServer(server);
    server = await startOwnServer(port, dataDir);

    await nextTotpStep();
    await page.getByLabel("Verification code").fill(totp(secret));
    await page.getByRole("button", { name: "Verify" }).click();
    await expect(page.getByText(`Signed in as ${email}`)).toBeVisible();
  } finally {
    await context.close();
    await stopOwnServer(server);
    fs.rmSync(dataDir, { recursive: true, force: true });
  }
});
