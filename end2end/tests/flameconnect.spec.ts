// FlameConnect (Azure AD B2C with the MSAL auth-code flow and PKCE, done by the server) against
// the sandbox's gdhvb2cflameconnect.b2clogin.com double: connect, a wrong password, a duplicate
// refused, and reauth: an account whose tokens the provider rejects is marked "Needs sign-in",
// is signed in again in place, and a reauth into another account is refused.
import { expect, test, type Page } from "@playwright/test";
import { doubles } from "../playwright.config";
import { register, uniqueEmail } from "./helpers";

// Serial: revoking the demo account's tokens at the double touches every test that uses it.
test.describe.configure({ mode: "serial" });

const DEMO = { email: "demo@flameconnect.test", password: "flame-demo" };
const OTHER = { email: "other@flameconnect.test", password: "flame-demo" };

async function connectFlameConnect(page: Page, email: string, password: string): Promise<void> {
  await page.goto("/accounts/connect");
  await page.getByRole("link", { name: "FlameConnect" }).click();
  await expect(page.getByRole("heading", { name: "Connect FlameConnect" })).toBeVisible();
  await page.getByLabel("Email").fill(email);
  await page.getByLabel("Password").fill(password);
  await page.getByRole("button", { name: "Connect", exact: true }).click();
}

function row(page: Page, email: string) {
  return page.getByRole("row", { name: new RegExp(`FlameConnect.*${email.replace(/[.@]/g, "\\$&")}`) });
}

/** The provider stops accepting every token it gave `email` (as a password change would). */
async function revoke(page: Page, email: string): Promise<void> {
  const answer = await page.request.post(`http://${doubles.flameconnect}/testing/revoke`, { data: { account: email } });
  expect(answer.ok()).toBe(true);
}

test.beforeEach(async ({ page }) => {
  await register(page, uniqueEmail("flameconnect"), "flame-pass-1-quiet-harbor");
});

test("connect FlameConnect", async ({ page }) => {
  await connectFlameConnect(page, DEMO.email, DEMO.password);
  await expect(page).toHaveURL(/\/accounts\?connected=\d+$/);
  await expect(page.getByRole("status").first()).toHaveText("Account connected.");
  await expect(row(page, DEMO.email)).toBeVisible();
  // The health check run by opening the page settles on "Connected".
  await expect(row(page, DEMO.email).locator("td.account-status")).toContainText("Connected");
});

test("a wrong FlameConnect password is refused and the email is kept", async ({ page }) => {
  await connectFlameConnect(page, DEMO.email, "not-the-password");
  await expect(page.getByRole("alert")).toContainText("The email or password is not right.");
  await expect(page.getByLabel("Email")).toHaveValue(DEMO.email);
  await expect(page.getByLabel("Password")).toHaveValue("");
});

test("connecting the same FlameConnect account twice is refused", async ({ page }) => {
  await connectFlameConnect(page, DEMO.email, DEMO.password);
  await expect(page).toHaveURL(/\/accounts\?connected=\d+$/);
  await connectFlameConnect(page, DEMO.email, DEMO.password);
  await expect(page.getByRole("alert")).toContainText("This account is already connected.");
  await page.goto("/accounts");
  await expect(row(page, DEMO.email)).toHaveCount(1);
});

test("reauth of a rejected account updates it in place", async ({ page }) => {
  await connectFlameConnect(page, DEMO.email, DEMO.password);
  await expect(page).toHaveURL(/\/accounts\?connected=\d+$/);
  const id = new URL(page.url()).searchParams.get("connected")!;
  const status = row(page, DEMO.email).locator("td.account-status");
  await expect(status).toContainText("Connected");
  const connectedAt = await row(page, DEMO.email).locator("td").nth(3).textContent();

  await revoke(page, DEMO.email);
  await page.goto("/accounts");
  // The page does not wait for the provider: the row says so while the check runs.
  await expect(status).toContainText(/Checking…|Needs sign-in/);
  await expect(status).toContainText("Needs sign-in");
  const again = row(page, DEMO.email).getByRole("button", { name: "Sign in again" });
  await expect(again).toBeVisible();
  await again.click();

  await expect(page.getByRole("heading", { name: "Sign in to FlameConnect again" })).toBeVisible();
  await expect(page.getByLabel("Email")).toHaveValue(DEMO.email);
  await page.getByLabel("Password").fill(DEMO.password);
  await page.getByRole("button", { name: "Connect", exact: true }).click();

  await expect(page).toHaveURL(new RegExp(`/accounts\\?reauthed=${id}$`));
  await expect(page.getByRole("status").first()).toContainText("Signed in again.");
  await expect(row(page, DEMO.email)).toHaveCount(1);
  await expect(row(page, DEMO.email).locator(`xpath=self::tr[@data-account="${id}"]`)).toHaveCount(1);
  await expect(row(page, DEMO.email).locator("td").nth(3)).toHaveText(connectedAt!);
  await expect(status).toContainText("Connected");
  await expect(row(page, DEMO.email).getByRole("button", { name: "Sign in again" })).toBeHidden();
});

test("a reauth into another account is refused and changes nothing", async ({ page }) => {
  await connectFlameConnect(page, DEMO.email, DEMO.password);
  await expect(page).toHaveURL(/\/accounts\?connected=\d+$/);
  await expect(row(page, DEMO.email).locator("td.account-status")).toContainText("Connected");
  await revoke(page, DEMO.email);
  await page.goto("/accounts");
  await expect(row(page, DEMO.email).locator("td.account-status")).toContainText("Needs sign-in");
  await row(page, DEMO.email).getByRole("button", { name: "Sign in again" }).click();

  await page.getByLabel("Email").fill(OTHER.email);
  await page.getByLabel("Password").fill(OTHER.password);
  await page.getByRole("button", { name: "Connect", exact: true }).click();
  await expect(page.getByRole("alert")).toContainText("You signed in to a different account");
  await expect(page.getByRole("heading", { name: "Sign in to FlameConnect again" })).toBeVisible();

  await page.goto("/accounts");
  await expect(page.getByRole("row", { name: /FlameConnect/ })).toHaveCount(1);
  await expect(row(page, DEMO.email).locator("td.account-status")).toContainText("Needs sign-in");
});

test("an unreachable provider marks the account degraded, not needing sign-in", async ({ page }) => {
  await connectFlameConnect(page, DEMO.email, DEMO.password);
  await expect(page).toHaveURL(/\/accounts\?connected=\d+$/);
  const status = row(page, DEMO.email).locator("td.account-status");
  await expect(status).toContainText("Connected");
  const faults = `http://${doubles.flameconnect}/testing/faults`;
  expect((await page.request.post(faults, { data: { step: "refresh", fault: "503" } })).ok()).toBe(true);
  try {
    await page.goto("/accounts");
    await expect(status).toContainText("Provider unreachable");
    await expect(status).toContainText("The provider is down for maintenance.");
    await expect(row(page, DEMO.email).getByRole("button", { name: "Sign in again" })).toBeHidden();
  } finally {
    await page.request.post(faults, { data: { step: "all", fault: "none" } });
  }
  await page.goto("/accounts");
  await expect(status).toContainText("Connected");
});

test("B2C's routing hops on authorize and confirmed are followed to a connected account", async ({ page }) => {
  const hops = async () => {
    const all: Record<string, number> = await (await page.request.get(`http://${doubles.flameconnect}/testing/hops`)).json();
    const count = (end: string) =>
      Object.entries(all)
        .filter(([path]) => path.endsWith(end))
        .reduce((sum, [, n]) => sum + n, 0);
    return { authorize: count("oauth2/v2.0/authorize"), confirmed: count("api/CombinedSigninAndSignup/confirmed") };
  };
  // The account may be connected by an earlier test of another user: a fresh user each time.
  const before = await hops();
  await connectFlameConnect(page, OTHER.email, OTHER.password);
  await expect(page).toHaveURL(/\/accounts\?connected=\d+$/);
  await expect(row(page, OTHER.email)).toBeVisible();
  const after = await hops();
  expect(after.authorize).toBeGreaterThan(before.authorize);
  expect(after.confirmed).toBeGreaterThan(before.confirmed);
});
