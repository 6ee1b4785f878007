import { expect, type Locator, type Page, type Route } from "@playwright/test";

/** A fresh address per test, so tests never share accounts. */
export function uniqueEmail(tag: string): string {
  return `${tag}-${Date.now()}-${Math.floor(Math.random() * 1e9)}@example.org`;
}

export const DEMO = { email: "demo@stepgate.test", password: "quiet-lantern-ferry" };

/** The one sentence the server shows for a wrong password and for an unknown user. */
export const INVALID_AUTH = "The email or password is not right.";

/**
 * Waits until the page's islands (its interactive parts) have hydrated, so clicks are handled by
 * them (and not by a plain form post) when a test means to test the enhanced path. Pages without
 * islands load no WebAssembly: they are ready once loaded.
 */
export async function waitForHydration(page: Page): Promise<void> {
  await page.waitForLoadState("domcontentloaded");
  await page.waitForFunction(
    () => document.querySelector("leptos-island") === null || (window as any).__stepgateHydrated === true,
  );
}

/**
 * Registers through the form. Registrations are throttled per client address, and the shared
 * test servers trust X-Forwarded-For (STEPGATE_TRUST_PROXY, as behind a proxy): each one is sent
 * from an address of its own (TEST-NET-3), so the suite's many users are not one client's.
 */
export async function register(page: Page, email: string, password: string): Promise<void> {
  await page.goto("/register");
  await page.getByLabel("Email").fill(email);
  await page.getByLabel("Password", { exact: true }).fill(password);
  await page.getByLabel("Confirm password").fill(password);
  const address = `203.0.113.${1 + Math.floor(Math.random() * 254)}`;
  const fromOwnAddress = (route: Route) =>
    route.continue({ headers: { ...route.request().headers(), "x-forwarded-for": address } });
  await page.route("**/api/register", fromOwnAddress);
  try {
    await page.getByRole("button", { name: "Create account" }).click();
    await expect(page).toHaveURL(/\/$/);
  } finally {
    await page.unroute("**/api/register", fromOwnAddress);
  }
  await expect(page.getByText(email)).toBeVisible();
}

export async function signIn(page: Page, email: string, password: string): Promise<void> {
  await page.goto("/login");
  await page.getByLabel("Email").fill(email);
  await page.getByLabel("Password").fill(password);
  await page.getByRole("button", { name: "Sign in" }).click();
}

/** RFC 6238 (SHA-1, 30 s), computed by the test itself from a base32 secret. */
export function totp(base32: string, unixSeconds = Date.now() / 1000, digits = 6): string {
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
  let bits = "";
  for (const c of base32.replace(/=+$/, "").toUpperCase()) {
    bits += alphabet.indexOf(c).toString(2).padStart(5, "0");
  }
  const bytes = Buffer.from(bits.match(/.{8}/g)!.map((b) => parseInt(b, 2)));
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(Math.floor(unixSeconds / 30)));
  const hash = require("node:crypto").createHmac("sha1", bytes).update(counter).digest() as Buffer;
  const offset = hash[19] & 0xf;
  const n = (hash.readUInt32BE(offset) & 0x7fffffff) % 10 ** digits;
  return n.toString().padStart(digits, "0");
}

/**
 * Waits for the next 30-second TOTP step. A code is accepted once, and the one that confirmed
 * enrolment counts as used, so a sign-in right after enrolling needs the next step's code.
 */
export async function nextTotpStep(): Promise<void> {
  const ms = 30_000 - (Date.now() % 30_000) + 600;
  await new Promise((r) => setTimeout(r, ms));
}

export const SANDBOX = `http://127.0.0.1:${process.env.STEPGATE_E2E_SANDBOX_PORT ?? 3400}`;

/** Registers a new account and turns TOTP on through the authenticator-app route. */
export async function registerWithAppTotp(page: Page, tag: string): Promise<{ email: string; secret: string }> {
  const email = uniqueEmail(tag);
  await register(page, email, "totp-pass-1-quiet-harbor");
  await page.goto("/settings/security");
  await waitForHydration(page);
  await page.getByRole("button", { name: "Set up with an authenticator app" }).click();
  const secret = (await page.locator("code.totp-secret").textContent())!.trim();
  await page.getByLabel("Verification code").fill(totp(secret));
  await page.getByRole("button", { name: "Turn on 2FA" }).click();
  await expect(page.getByText("Two-factor authentication is on.")).toBeVisible();
  return { email, secret };
}

export async function signOut(page: Page): Promise<void> {
  await page.goto("/");
  await page.getByRole("button", { name: "Sign out" }).click();
  await expect(page).toHaveURL(/\/login$/);
}

/** Email and password accepted: the code page is shown. */
export async function passwordStep(page: Page, email: string): Promise<void> {
  await signIn(page, email, "totp-pass-1-quiet-harbor");
  await expect(page).toHaveURL(/\/login\/code\?flow=[0-9a-f]{32}$/);
  await expect(page.getByLabel("Verification code")).toBeVisible();
  await waitForHydration(page);
}

/** Registers a new account and turns TOTP on through the provider popup; returns its email. */
export async function enrollThroughProvider(page: Page): Promise<string> {
  const email = uniqueEmail("provider");
  await register(page, email, "totp-pass-1-quiet-harbor");
  await page.goto("/settings/security");
  await waitForHydration(page);
  await expect(page.getByText("Two-factor authentication is off.", { exact: false })).toBeVisible();
  const popupOpened = page.waitForEvent("popup");
  await page.getByRole("button", { name: "Set up with TOTP provider" }).click();
  const popup = await popupOpened;
  await expect(popup).toHaveURL(new RegExp(`^${SANDBOX}/dashboard/simple-totp\\?action=add&service=Stepgate&account=`));
  // The callback page tells the opener and closes itself; the settings page updates by itself.
  const closed = popup.waitForEvent("close");
  await popup.getByRole("button", { name: "Add to Simple TOTP" }).click();
  await closed;
  await expect(page.getByText("Two-factor authentication is on.")).toBeVisible();
  await expect(page.getByText("Codes come from your TOTP provider.")).toBeVisible();
  return email;
}

/** Clicks "Get code from TOTP provider" and returns the popup. */
export async function openProviderPopup(page: Page): Promise<Page> {
  const popupOpened = page.waitForEvent("popup");
  await page.getByRole("button", { name: "Get code from TOTP provider" }).click();
  return popupOpened;
}

/**
 * "Confirm it's you" (sudo mode): types the password, and a current code from `secret` when 2FA
 * is on, on the confirm page, and waits to be back where the page sends. Not on the confirm page
 * yet: goes there first, to come back to `next` (default: the page it was on), so the sensitive
 * acts that follow need no confirmation for ten minutes.
 */
export async function confirmIdentity(
  page: Page,
  password: string,
  options: { secret?: string; next?: string } = {},
): Promise<void> {
  if (!new URL(page.url()).pathname.startsWith("/settings/confirm")) {
    const here = new URL(page.url());
    const next = options.next ?? (here.protocol.startsWith("http") ? here.pathname + here.search : "/");
    await page.goto(`/settings/confirm?next=${encodeURIComponent(next)}`);
  }
  await expect(page.getByRole("heading", { name: "Confirm it's you" })).toBeVisible();
  for (let tries = 0; ; tries++) {
    await page.getByLabel("Password", { exact: true }).fill(password);
    if (options.secret !== undefined) await page.getByLabel("Verification code").fill(totp(options.secret));
    // Confirmed: back on the page it came from; refused: the confirm page again, with the error.
    await clickAndWaitForPage(page, page.getByRole("button", { name: "Confirm" }));
    const used = page.getByRole("alert").filter({ hasText: "already used" });
    // A code is accepted once: when this step's code signed in or confirmed already, the next.
    if (options.secret !== undefined && tries === 0 && (await used.count()) > 0) {
      await nextTotpStep();
      continue;
    }
    break;
  }
  await expect(page).toHaveURL(/[?&]confirmed=1/);
}

/**
 * Clicks `button` (a sensitive act's submit button); when the server asks to confirm it's you
 * first, confirms with `password` (and a code from `secret`) and clicks the button again on the
 * page it comes back to, whose form the server filled in again.
 */
export async function clickConfirmingFirst(
  page: Page,
  button: () => Locator,
  password: string,
  secret?: string,
): Promise<void> {
  await clickAndWaitForPage(page, button());
  if (new URL(page.url()).pathname === "/settings/confirm") {
    await confirmIdentity(page, password, { secret });
    await button().click();
  }
}

/** Clicks a form's submit button and waits for the page the post ends on. */
async function clickAndWaitForPage(page: Page, button: Locator): Promise<void> {
  const navigated = page.waitForEvent("framenavigated", (frame) => frame === page.mainFrame());
  await button.click();
  await navigated;
  await page.waitForLoadState("domcontentloaded");
}
