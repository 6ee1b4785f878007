// Lynk & Co (Azure AD B2C custom policy with an SMS code, then the CCC token) against the
// sandbox's login.lynkco.com and iam-service doubles: the code read from the sandbox inbox, a
// wrong code then the right one, a server restart between the password and the code, a bad VIN
// refused before any request, and the pasted-redirect fallback.
// Serial: the "no request sent" test switches faults on the shared Lynk & Co double.
import { expect, test, type Page } from "@playwright/test";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { doubles } from "../playwright.config";
import { register, uniqueEmail } from "./helpers";
import { startOwnServer, stopOwnServer } from "./own-server";

test.describe.configure({ mode: "serial" });

const DEMO = { email: "demo@lynkco.test", password: "lynkco-demo", vin: "LYVXFEDC0KL123456" };
const INBOX = `http://${doubles.lynkcoB2c}/inbox.json`;

async function openLynkco(page: Page): Promise<void> {
  await page.goto("/accounts/connect");
  await page.getByRole("link", { name: "Lynk & Co" }).click();
  await expect(page.getByRole("heading", { name: "Connect Lynk & Co" })).toBeVisible();
}

async function fillFirstForm(page: Page, vin = DEMO.vin): Promise<void> {
  await page.getByLabel("Email").fill(DEMO.email);
  await page.getByLabel("Password").fill(DEMO.password);
  await page.getByLabel("VIN").fill(vin);
}

/** The newest SMS code the double "sent" for `account`, once one newer than `after` is there. */
async function smsCode(page: Page, after: number, account = DEMO.email): Promise<string> {
  let code = "";
  await expect
    .poll(async () => {
      const inbox = await (await page.request.get(INBOX)).json();
      const message = inbox.find((m: { account: string; sent_at_ms: number }) => m.account === account && m.sent_at_ms >= after);
      code = message?.code ?? "";
      return code;
    })
    .not.toBe("");
  return code;
}

/** Password accepted: the code step, with the line saying where the code went. */
async function toCodeStep(page: Page): Promise<number> {
  const sent = Date.now() - 1000;
  await page.getByRole("button", { name: "Connect", exact: true }).click();
  await expect(page.getByLabel("Verification code")).toBeVisible();
  await expect(page.getByText(/sent .*code.* phone/i)).toBeVisible();
  return sent;
}

async function expectConnected(page: Page): Promise<void> {
  await expect(page).toHaveURL(/\/accounts\?connected=\d+$/);
  await expect(page.getByRole("row", { name: /Lynk & Co/ })).toContainText(DEMO.email);
}

test.beforeEach(async ({ page }) => {
  await register(page, uniqueEmail("lynkco"), "lynkco-pass-1-quiet-harbor");
});

test("connect Lynk & Co with the SMS code from the sandbox inbox", async ({ page }) => {
  await openLynkco(page);
  await fillFirstForm(page);
  const sent = await toCodeStep(page);
  await page.getByLabel("Verification code").fill(await smsCode(page, sent));
  await page.getByRole("button", { name: "Verify" }).click();
  await expectConnected(page);
});

test("a wrong code keeps the code step; the right one then connects", async ({ page }) => {
  await openLynkco(page);
  await fillFirstForm(page);
  const sent = await toCodeStep(page);
  const code = await smsCode(page, sent);
  await page.getByLabel("Verification code").fill(code === "000000" ? "111111" : "000000");
  await page.getByRole("button", { name: "Verify" }).click();
  await expect(page.getByRole("alert")).toContainText("That code is not right.");
  await expect(page.getByLabel("Verification code")).toHaveAttribute("aria-invalid", "true");
  await page.getByLabel("Verification code").fill(code);
  await page.getByRole("button", { name: "Verify" }).click();
  await expectConnected(page);
});

test("a wrong Lynk & Co password is refused; email and VIN are kept", async ({ page }) => {
  await openLynkco(page);
  await fillFirstForm(page);
  await page.getByLabel("Password").fill("not-the-password");
  await page.getByRole("button", { name: "Connect", exact: true }).click();
  await expect(page.getByRole("alert")).toContainText("The email or password is not right.");
  await expect(page.getByLabel("Email")).toHaveValue(DEMO.email);
  await expect(page.getByLabel("VIN")).toHaveValue(DEMO.vin);
  await expect(page.getByLabel("Password")).toHaveValue("");
});

test("a bad VIN is refused before any request leaves the server", async ({ page }) => {
  await openLynkco(page);
  // Every request to the Lynk & Co double would now fail: the refusal must come first.
  const faults = `http://${doubles.lynkcoB2c}/testing/faults`;
  expect((await page.request.post(faults, { data: { step: "all", fault: "reset" } })).ok()).toBe(true);
  try {
    for (const vin of ["LYVXFEDC0KL12345", "LYVXFEDC0KL12345O", "not a vin"]) {
      await fillFirstForm(page, vin);
      await page.getByRole("button", { name: "Connect", exact: true }).click();
      await expect(page.getByRole("alert")).toContainText("That vehicle identification number is not valid.");
      await expect(page.getByLabel("VIN")).toHaveAttribute("aria-invalid", "true");
      // What was typed is kept (the password is typed again).
      await expect(page.getByLabel("Email")).toHaveValue(DEMO.email);
    }
  } finally {
    await page.request.post(faults, { data: { step: "all", fault: "none" } });
  }
  // Trimmed and upper-cased, the same VIN is fine.
  await fillFirstForm(page, `  ${DEMO.vin.toLowerCase()} `);
  const sent = await toCodeStep(page);
  await page.getByLabel("Verification code").fill(await smsCode(page, sent));
  await page.getByRole("button", { name: "Verify" }).click();
  await expectConnected(page);
});

test("the pasted-redirect fallback: sign in on Lynk & Co's page and paste the Redirect URL", async ({ page }) => {
  await openLynkco(page);
  await page.getByLabel("Email").fill(DEMO.email);
  await page.getByLabel("VIN").fill(DEMO.vin);
  await page.getByRole("button", { name: "Sign in on Lynk & Co's page instead" }).click();
  const link = page.getByRole("link", { name: "Sign in on Lynk & Co's page instead" });
  await expect(link).toBeVisible();
  await expect(page.getByLabel("Redirect URL")).toBeVisible();

  const opened = page.waitForEvent("popup");
  await link.click();
  const lynk = await opened;
  const sent = Date.now() - 1000;
  await lynk.getByLabel("Email").fill(DEMO.email);
  await lynk.getByLabel("Password").fill(DEMO.password);
  await lynk.getByRole("button", { name: "Sign in" }).click();
  await lynk.getByLabel("Verification code").fill(await smsCode(page, sent));
  await lynk.getByRole("button", { name: "Verify" }).click();
  const redirect = await lynk.getByLabel("Redirect URL").inputValue();
  expect(redirect).toMatch(/^msauth:\/\/prod\.lynkco\.app\.crisp\.prod\/.*[?&]code=/);
  await lynk.close();

  // A cut-off paste is named as such and keeps the step.
  await page.getByLabel("Redirect URL").fill(redirect.slice(0, 40) + "…");
  await page.getByRole("button", { name: "Connect", exact: true }).click();
  await expect(page.getByRole("alert")).toContainText("That URL is not the one the provider gave you.");
  await expect(page.getByRole("alert")).toContainText(/cut off/i);

  await page.getByLabel("Redirect URL").fill(redirect);
  await page.getByRole("button", { name: "Connect", exact: true }).click();
  await expectConnected(page);
});

test("sign in again to a rejected Lynk & Co account: email and VIN filled in, a new SMS code", async ({ page }) => {
  await openLynkco(page);
  await fillFirstForm(page);
  let sent = await toCodeStep(page);
  await page.getByLabel("Verification code").fill(await smsCode(page, sent));
  await page.getByRole("button", { name: "Verify" }).click();
  await expectConnected(page);
  const id = new URL(page.url()).searchParams.get("connected")!;
  const row = page.locator(`tr[data-account="${id}"]`);
  await expect(row.locator("td.account-status")).toContainText("Connected");

  // Lynk & Co stops accepting the account's refresh token.
  const revoked = await page.request.post(`http://${doubles.lynkcoB2c}/testing/revoke`, { data: { account: DEMO.email } });
  expect(revoked.ok()).toBe(true);
  await page.goto("/accounts");
  await expect(row.locator("td.account-status")).toContainText("Needs sign-in");
  await row.getByRole("button", { name: "Sign in again" }).click();

  await expect(page.getByRole("heading", { name: "Sign in to Lynk & Co again" })).toBeVisible();
  await expect(page.getByLabel("Email")).toHaveValue(DEMO.email);
  await expect(page.getByLabel("VIN")).toHaveValue(DEMO.vin);
  await page.getByLabel("Password").fill(DEMO.password);
  sent = await toCodeStep(page);
  await page.getByLabel("Verification code").fill(await smsCode(page, sent));
  await page.getByRole("button", { name: "Verify" }).click();
  await expect(page).toHaveURL(new RegExp(`/accounts\\?reauthed=${id}$`));
  await expect(row.locator("td.account-status")).toContainText("Connected");
  await expect(page.getByRole("row", { name: /Lynk & Co/ })).toHaveCount(1);
});

test("a server restart between the password and the code step does not lose the login", async ({ browser }) => {
  test.setTimeout(90_000);
  const port = Number(process.env.STEPGATE_E2E_LYNKCO_RESTART_PORT ?? 3311);
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "stepgate-lynkco-restart-"));
  let server = await startOwnServer(port, dataDir);
  const context = await browser.newContext({ baseURL: `http://127.0.0.1:${port}` });
  try {
    const page = await context.newPage();
    await register(page, uniqueEmail("lynkco-restart"), "lynkco-pass-1-quiet-harbor");
    await openLynkco(page);
    await fillFirstForm(page);
    const sent = await toCodeStep(page);

    await stopOwnServer(server);
    server = await startOwnServer(port, dataDir);

    await page.getByLabel("Verification code").fill(await smsCode(page, sent));
    await page.getByRole("button", { name: "Verify" }).click();
    await expectConnected(page);
  } finally {
    await context.close();
    await stopOwnServer(server);
    fs.rmSync(dataDir, { recursive: true, force: true });
  }
});

/** The routing hops B2C answered so far, by step. */
async function hops(page: Page): Promise<Record<string, number>> {
  const all: Record<string, number> = await (await page.request.get(`http://${doubles.lynkcoB2c}/testing/hops`)).json();
  const count = (end: string) =>
    Object.entries(all)
      .filter(([path]) => path.endsWith(end))
      .reduce((sum, [, n]) => sum + n, 0);
  return {
    authorize: count("oauth2/v2.0/authorize"),
    combined: count("api/CombinedSigninAndSignup/confirmed"),
    selfAsserted: count("api/SelfAsserted/confirmed"),
  };
}

test("B2C's routing hops on authorize and both confirmed steps are followed to a connected account", async ({ page }) => {
  const before = await hops(page);
  await openLynkco(page);
  await fillFirstForm(page);
  const sent = await toCodeStep(page);
  await page.getByLabel("Verification code").fill(await smsCode(page, sent));
  await page.getByRole("button", { name: "Verify" }).click();
  await expectConnected(page);
  const after = await hops(page);
  expect(after.authorize).toBeGreaterThan(before.authorize);
  expect(after.combined).toBeGreaterThan(before.combined);
  expect(after.selfAsserted).toBeGreaterThan(before.selfAsserted);
});

test("B2C's pages out of shape: the fallback is offered and its reason announced", async ({ page }) => {
  const faults = `http://${doubles.lynkcoB2c}/testing/faults`;
  expect((await page.request.post(faults, { data: { step: "self_asserted", fault: "shape", count: 1 } })).ok()).toBe(true);
  try {
    await openLynkco(page);
    await fillFirstForm(page);
    await page.getByRole("button", { name: "Connect", exact: true }).click();
    await expect(page.getByRole("alert")).toContainText("Automatic sign-in did not work");
    await expect(page.getByRole("link", { name: "Sign in on Lynk & Co's page instead" })).toBeVisible();
    await expect(page.getByLabel("Redirect URL")).toBeVisible();
  } finally {
    await page.request.post(faults, { data: { step: "all", fault: "none" } });
  }
});

test("a garbage answer from the token endpoint is the provider's fault, with no fallback", async ({ page }) => {
  const faults = `http://${doubles.lynkcoB2c}/testing/faults`;
  await openLynkco(page);
  await fillFirstForm(page);
  const sent = await toCodeStep(page);
  await page.getByLabel("Verification code").fill(await smsCode(page, sent));
  expect((await page.request.post(faults, { data: { step: "token", fault: "garbage" } })).ok()).toBe(true);
  try {
    await page.getByRole("button", { name: "Verify" }).click();
    await expect(page.getByRole("alert")).toContainText("The provider answered in a way Stepgate does not understand");
    await expect(page.getByRole("alert")).not.toContainText("on our side");
    await expect(page.getByLabel("Redirect URL")).toHaveCount(0);
  } finally {
    await page.request.post(faults, { data: { step: "all", fault: "none" } });
  }
});
