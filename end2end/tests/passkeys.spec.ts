// Passkeys, with Chromium's virtual authenticator (CDP WebAuthn: ctap2, internal, resident keys,
// user verification): added on the security page, used as the second factor after the password
// (alone, or beside the TOTP code), used on their own from /login, removed; a recovery code
// stands in for them. WebAuthn refuses IP addresses, so this spec runs its own server on
// `localhost` with STEPGATE_PUBLIC_URL naming it. At the end, none of the authenticators'
// private keys is in that server's database or log.
import { expect, test, type CDPSession, type Page } from "@playwright/test";
import { execFileSync, type ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { dataDir as suiteDataDir, scaledOut } from "../playwright.config";
import { clickConfirmingFirst, register, registerWithAppTotp, uniqueEmail } from "./helpers";
import { ownDatabaseUrl, startOwnServer, stopOwnServer } from "./own-server";

const port = Number(process.env.STEPGATE_E2E_PASSKEY_PORT ?? Number(process.env.STEPGATE_E2E_PORT ?? 3300) + 21);
const origin = `http://localhost:${port}`;
const PASSWORD = "totp-pass-1-quiet-harbor";
const dataDir = path.join(suiteDataDir, "passkeys-server");
const log = path.join(suiteDataDir, "passkeys-server.log");
/** Every private key a virtual authenticator held (PKCS#8, base64), for the check at the end. */
const privateKeys: string[] = [];
/** The recovery codes this server showed, for the same check. */
const shownCodes: string[] = [];

test.describe.configure({ mode: "serial", timeout: 180_000 });
test.use({ baseURL: origin });

let server: ChildProcess;
test.beforeAll(async () => {
  fs.rmSync(dataDir, { recursive: true, force: true });
  fs.mkdirSync(dataDir, { recursive: true });
  server = await startOwnServer(port, dataDir, { STEPGATE_PUBLIC_URL: origin }, log);
});
test.afterAll(async () => {
  if (server) await stopOwnServer(server);
});

/** A virtual platform authenticator on `page` (it stays across the page's navigations). */
async function addAuthenticator(page: Page): Promise<{ cdp: CDPSession; id: string }> {
  const cdp = await page.context().newCDPSession(page);
  await cdp.send("WebAuthn.enable");
  const { authenticatorId } = await cdp.send("WebAuthn.addVirtualAuthenticator", {
    options: {
      protocol: "ctap2",
      transport: "internal",
      hasResidentKey: true,
      hasUserVerification: true,
      isUserVerified: true,
      automaticPresenceSimulation: true,
    },
  });
  return { cdp, id: authenticatorId };
}

type Credential = { credentialId: string; isResidentCredential: boolean; privateKey: string; signCount: number };
async function credentials(authenticator: { cdp: CDPSession; id: string }): Promise<Credential[]> {
  const { credentials } = await authenticator.cdp.send("WebAuthn.getCredentials", {
    authenticatorId: authenticator.id,
  });
  for (const c of credentials) if (!privateKeys.includes(c.privateKey)) privateKeys.push(c.privateKey);
  return credentials as Credential[];
}

/**
 * Chromium's virtual authenticator answers the autofill (conditional) request of /login at once,
 * as if the user had picked the passkey from the email field's suggestions. To test the other
 * ways in, the autofill's ceremony is refused (its options request answered 503, which the page
 * ignores) until `allow()`; "Sign in with a passkey" asks for options of its own.
 */
async function holdAutofill(page: Page): Promise<{ allow: () => void }> {
  let allowed = false;
  await page.route("**/api/passkey_sign_in_options", (route) =>
    allowed
      ? route.continue()
      : route.fulfill({ status: 503, contentType: "application/json", body: '{"code":"server_busy"}' }),
  );
  return { allow: () => (allowed = true) };
}

/** /login with its autofill request refused (see `holdAutofill`), then "Sign in with a passkey". */
async function signInWithPasskeyButton(page: Page): Promise<void> {
  const autofill = await holdAutofill(page);
  // Allowed only once the autofill's request has had its refusal.
  const refused = page.waitForResponse("**/api/passkey_sign_in_options");
  await page.goto("/login");
  expect((await refused).status()).toBe(503);
  autofill.allow();
  await page.getByRole("button", { name: "Sign in with a passkey" }).click();
  await page.unrouteAll();
}

async function addPasskey(page: Page, name: string): Promise<void> {
  await page.goto("/settings/security");
  await page.getByLabel("Passkey name").fill(name);
  await page.getByRole("button", { name: "Add a passkey" }).click();
  await expect(page).toHaveURL(/\/settings\/security\?passkey=added$/);
  await expect(page.getByText("Passkey added.", { exact: false })).toBeVisible();
  await expect(page.getByRole("cell", { name, exact: true })).toBeVisible();
}

/** Signs out, landing on /login; its autofill is held unless `autofill` (see `holdAutofill`). */
async function signOut(page: Page, options: { autofill?: boolean } = {}): Promise<void> {
  if (!options.autofill) await holdAutofill(page);
  await page.goto("/");
  const refused = options.autofill ? undefined : page.waitForResponse("**/api/passkey_sign_in_options");
  await page.getByRole("button", { name: "Sign out" }).click();
  if (refused) {
    await expect(page).toHaveURL(/\/login$/);
    await expect(page.getByLabel("Email")).toHaveAttribute("autocomplete", "username webauthn");
    // Unrouted only after the autofill's request has had its refusal.
    expect((await refused).status()).toBe(503);
    await page.unrouteAll();
  }
}

async function password(page: Page, email: string): Promise<void> {
  await holdAutofill(page);
  await page.goto("/login");
  await page.getByLabel("Email").fill(email);
  await page.getByLabel("Password").fill(PASSWORD);
  await page.getByRole("button", { name: "Sign in", exact: true }).click();
  await expect(page).toHaveURL(/\/login\/code\?flow=[0-9a-f]{32}$/);
  await page.unrouteAll();
}

async function expectSignedIn(page: Page, email: string): Promise<void> {
  await expect(page).toHaveURL(`${origin}/`);
  await expect(page.getByText(email)).toBeVisible();
}

test("add a passkey, then sign in with the password and the passkey, with the passkey alone, and remove it", async ({
  page,
}) => {
  const authenticator = await addAuthenticator(page);
  const email = uniqueEmail("passkey");
  await register(page, email, PASSWORD);

  await addPasskey(page, "Test laptop");
  // The first second factor: the recovery codes are shown once, and other sessions end.
  const firstCodes = (await page.getByLabel("Recovery codes").inputValue()).split("\n").filter((c) => c.trim() !== "");
  expect(firstCodes).toHaveLength(10);
  shownCodes.push(...firstCodes);
  await expect(page.getByText("10 recovery codes left.")).toBeVisible();
  const [made] = await credentials(authenticator);
  expect(made.isResidentCredential).toBe(true);
  const row = page.getByRole("row").filter({ hasText: "Test laptop" });
  await expect(row.getByRole("cell").nth(2)).toHaveText("Never");

  // Password, then the passkey: the account has no TOTP, so the step offers the passkey alone.
  await signOut(page);
  await password(page, email);
  await expect(page.getByText("Use your passkey to finish signing in.")).toBeVisible();
  await expect(page.getByLabel("Verification code")).toHaveCount(0);
  await page.getByRole("button", { name: "Use a passkey" }).click();
  await expectSignedIn(page, email);
  const [afterSecondFactor] = await credentials(authenticator);
  expect(afterSecondFactor.signCount).toBeGreaterThan(made.signCount);
  await page.goto("/settings/security");
  await expect(row.getByRole("cell").nth(2)).not.toHaveText("Never");

  // The passkey alone, from /login: no email typed.
  await signOut(page);
  await signInWithPasskeyButton(page);
  await expectSignedIn(page, email);

  // The browser's autofill: the email field offers the passkey (conditional mediation), and
  // picking it signs in (the virtual authenticator picks at once).
  const viaAutofill = page.waitForRequest("**/api/sign_in_with_passkey");
  await signOut(page, { autofill: true });
  expect((await viaAutofill).method()).toBe("POST");
  await expectSignedIn(page, email);

  // Removed after "Confirm it's you" (password only: the account has no TOTP).
  await page.goto("/settings/security");
  await clickConfirmingFirst(page, () => page.getByRole("button", { name: "Remove passkey Test laptop" }), PASSWORD);
  await expect(page).toHaveURL(/\/settings\/security\?passkey=removed$/);
  await expect(page.getByText("No passkeys yet.")).toBeVisible();

  // The authenticator still holds it, but Stepgate does not any more. (The refusal page does
  // not start the autofill again, so a refused passkey is not offered in a loop.)
  await signOut(page);
  await signInWithPasskeyButton(page);
  await expect(page).toHaveURL(/\/login/);
  await expect(page.getByRole("alert")).toHaveText(
    "That passkey was not accepted. Try again, or use another way to sign in.",
  );
  // With no second factor left, the password alone signs in again.
  await page.getByLabel("Email").fill(email);
  await page.getByLabel("Password").fill(PASSWORD);
  await page.getByRole("button", { name: "Sign in", exact: true }).click();
  await expectSignedIn(page, email);
});

test("a passkey is offered beside the TOTP code, and a recovery code stands in for it once", async ({ page }) => {
  const authenticator = await addAuthenticator(page);
  const { email } = await registerWithAppTotp(page, "passkey-totp");
  const codes = (await page.getByLabel("Recovery codes").inputValue()).split("\n").filter((c) => c.trim() !== "");
  expect(codes).toHaveLength(10);
  shownCodes.push(...codes);

  await addPasskey(page, "Phone");
  await credentials(authenticator);
  await signOut(page);
  await password(page, email);
  // Both ways in on one step.
  await expect(page.getByLabel("Verification code")).toBeVisible();
  // /login viewed in another tab meanwhile (its autofill asks for a ceremony of its own) does
  // not cut this sign-in off: the login cookie it belongs to is kept.
  const otherTab = await page.context().newPage();
  const autofillAsked = otherTab.waitForResponse("**/api/passkey_sign_in_options");
  await otherTab.goto("/login");
  expect((await autofillAsked).status()).toBe(200);
  await otherTab.close();
  await page.getByRole("button", { name: "Use a passkey" }).click();
  await expectSignedIn(page, email);

  // A recovery code once; the second time it is refused.
  for (const attempt of [0, 1]) {
    await signOut(page);
    await password(page, email);
    await page.getByRole("link", { name: "Use a recovery code" }).click();
    await page.getByLabel("Recovery code", { exact: true }).fill(codes[0]);
    await page.getByRole("button", { name: "Sign in" }).click();
    if (attempt === 0) {
      await expect(page).toHaveURL(/\/settings\/security\?recovered=1$/);
      await expect(page.getByText("9 recovery codes left.")).toBeVisible();
    } else {
      await expect(page.getByRole("alert")).toHaveText("That code is not right. Check it and try again.");
    }
  }
});

test("a passkey the user cancels leaves the code step as it was, with a sentence", async ({ page }) => {
  const authenticator = await addAuthenticator(page);
  const email = uniqueEmail("passkey-cancel");
  await register(page, email, PASSWORD);
  await addPasskey(page, "Tablet");
  await credentials(authenticator);
  await signOut(page);
  await password(page, email);
  // The user does not verify: the browser's request fails, nothing is posted.
  await authenticator.cdp.send("WebAuthn.setUserVerified", { authenticatorId: authenticator.id, isUserVerified: false });
  await page.getByRole("button", { name: "Use a passkey" }).click();
  await expect(page.locator("[data-passkey-status]")).toContainText("cancelled or timed out");
  await expect(page).toHaveURL(/\/login\/code\?flow=/);
  await expect(page.getByRole("button", { name: "Use a passkey" })).toBeEnabled();
  // Verified this time: signed in on the same step.
  await authenticator.cdp.send("WebAuthn.setUserVerified", { authenticatorId: authenticator.id, isUserVerified: true });
  await page.getByRole("button", { name: "Use a passkey" }).click();
  await expectSignedIn(page, email);
});

test("no authenticator's private key and no recovery code is in the server's database or log", async () => {
  expect(privateKeys.length).toBeGreaterThanOrEqual(3);
  expect(shownCodes.length).toBeGreaterThanOrEqual(20);
  const forms = privateKeys.flatMap((key) => {
    const der = Buffer.from(key, "base64");
    // The P-256 private scalar inside the PKCS#8 document (the OCTET STRING after 04 20).
    const at = der.indexOf(Buffer.from([0x04, 0x20]));
    const scalar = at >= 0 ? der.subarray(at + 2, at + 34) : Buffer.alloc(0);
    return [key, der.toString("base64url"), der.toString("hex"), scalar.toString("hex"), scalar.toString("base64url")];
  });
  forms.push(...shownCodes.flatMap((code) => [code, code.replaceAll("-", "")]));
  let files: string[];
  if (scaledOut) {
    const dump = path.join(suiteDataDir, "passkeys-postgres.sql");
    execFileSync(path.join(process.env.STEPGATE_PG_BIN ?? "/usr/lib/postgresql/15/bin", "pg_dump"), [
      "--data-only",
      "--no-owner",
      "--file",
      dump,
      ownDatabaseUrl(dataDir)!,
    ]);
    expect(fs.readFileSync(dump, "utf8")).toContain("COPY public.passkeys");
    files = [dump, log];
  } else {
    files = [...fs.readdirSync(dataDir).filter((f) => f.startsWith("stepgate.db")).map((f) => path.join(dataDir, f)), log];
  }
  for (const file of files) {
    const bytes = fs.readFileSync(file);
    const found = forms.filter((form) => form.length >= 16 && bytes.includes(Buffer.from(form)));
    expect(found, `${path.basename(file)} holds private key material or recovery codes`).toEqual([]);
  }
  // What is kept is the public part: the passkeys' public keys are there.
  expect(files.some((file) => fs.readFileSync(file).includes(Buffer.from("EC_EC2")))).toBe(true);
});
