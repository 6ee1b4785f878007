// Sessions you can see and end (/settings/sessions), the password change (/settings/password),
// and which cookie names count over https.
import { expect, test, type Browser, type Page } from "@playwright/test";
import { confirmIdentity, register, signIn, uniqueEmail } from "./helpers";

const PASSWORD = "correct-horse-battery-staple-17";
const NEW_PASSWORD = "mauve-lantern-orbit-pickle-42";
const FIREFOX_WINDOWS = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0";
const SAFARI_IPHONE =
  "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1";

/** Another browser (its own cookies, and the `User-Agent` given) signed in to `email`. */
async function otherBrowser(browser: Browser, email: string, password: string, userAgent: string): Promise<Page> {
  const context = await browser.newContext({ userAgent });
  const page = await context.newPage();
  await signIn(page, email, password);
  await expect(page.getByText(`Signed in as ${email}`)).toBeVisible();
  return page;
}

/** Whether `page`'s browser is still signed in: its sessions page, or the sign-in page. */
async function expectSignedOut(page: Page): Promise<void> {
  await page.goto("/settings/sessions");
  await expect(page).toHaveURL(/\/login$/);
}

test("the sessions page lists this account's browsers and ends another one's session", async ({ page, browser }) => {
  const email = uniqueEmail("sessions");
  await register(page, email, PASSWORD);
  const firefox = await otherBrowser(browser, email, PASSWORD, FIREFOX_WINDOWS);
  // Somebody else's session is never listed.
  const stranger = await browser.newPage();
  await register(stranger, uniqueEmail("stranger"), PASSWORD);

  await page.goto("/settings/sessions");
  await expect(page.getByRole("heading", { name: "Sessions" })).toBeVisible();
  await expect(page.getByText("after 2 hours without use")).toBeVisible();
  const rows = page.locator("table.sessions tbody tr");
  await expect(rows).toHaveCount(2);
  const mine = page.locator("tr[data-current=true]");
  await expect(mine).toHaveCount(1);
  // Playwright's Chromium says it runs on Windows or Linux, depending on its device profile.
  const ownSystem = (await page.evaluate(() => navigator.userAgent)).includes("Windows") ? "Windows" : "Linux";
  await expect(mine.locator(".session-device")).toContainText(`Chrome on ${ownSystem}`);
  await expect(mine.locator(".session-device")).toContainText("This browser");
  const theirs = page.getByRole("row", { name: /Firefox on Windows/ });
  await expect(theirs).not.toContainText("This browser");
  await expect(theirs.locator(".session-address")).toHaveText(/^[0-9a-f.:]+$/);
  await expect(theirs.locator(".session-created")).toHaveText(/^\d{4}-\d\d-\d\d \d\d:\d\d UTC$/);
  await expect(theirs.locator(".session-used")).toHaveText(/^\d{4}-\d\d-\d\d \d\d:\d\d UTC$/);

  // Keyboard: the row's button says whose session it ends.
  const signOutFirefox = page.getByRole("button", { name: /^Sign out Firefox on Windows, last used / });
  await signOutFirefox.focus();
  await page.keyboard.press("Enter");
  await expect(page.getByRole("status").filter({ hasText: "Session signed out." })).toBeVisible();
  await expect(rows).toHaveCount(1);
  await expectSignedOut(firefox);

  // This browser and the stranger are still signed in.
  await page.goto("/settings/sessions");
  await expect(page).toHaveURL(/\/settings\/sessions$/);
  await stranger.goto("/settings/sessions");
  await expect(stranger).toHaveURL(/\/settings\/sessions$/);
  await firefox.context().close();
  await stranger.close();
});

test("sign out all other sessions ends every other browser's session, not this one", async ({ page, browser }) => {
  const email = uniqueEmail("sessions-all");
  await register(page, email, PASSWORD);
  const firefox = await otherBrowser(browser, email, PASSWORD, FIREFOX_WINDOWS);
  const phone = await otherBrowser(browser, email, PASSWORD, SAFARI_IPHONE);
  await page.goto("/settings/sessions");
  await expect(page.getByRole("row", { name: /Safari on iOS/ })).toBeVisible();
  await page.getByRole("button", { name: "Sign out all other sessions" }).click();
  await expect(page.getByRole("status")).toHaveText("Signed out 2 other sessions.");
  await expect(page.locator("table.sessions tbody tr")).toHaveCount(1);
  await expect(page.getByRole("button", { name: "Sign out all other sessions" })).toHaveCount(0);
  await expectSignedOut(firefox);
  await expectSignedOut(phone);

  // "Sign out" on this browser's own row signs this browser out.
  await page.getByRole("button", { name: "Sign out this browser" }).click();
  await expect(page).toHaveURL(/\/login$/);
  await expectSignedOut(page);
  await firefox.context().close();
  await phone.context().close();
});

test("the password change form: confirm first, wrong current password refused in words, other sessions end", async ({
  page,
  browser,
}) => {
  const email = uniqueEmail("password");
  await register(page, email, PASSWORD);
  const firefox = await otherBrowser(browser, email, PASSWORD, FIREFOX_WINDOWS);

  // A sensitive act: "Confirm it's you" comes first, before anything is typed.
  await page.goto("/settings/sessions");
  await page.getByRole("link", { name: "Change password" }).click();
  await expect(page).toHaveURL(/\/settings\/confirm\?next=%2Fsettings%2Fpassword$/);
  await confirmIdentity(page, PASSWORD);
  await expect(page).toHaveURL(/\/settings\/password\?confirmed=1$/);

  await page.getByLabel("Current password").fill("not-my-password-at-all");
  await page.getByLabel("New password", { exact: true }).fill(NEW_PASSWORD);
  await page.getByLabel("Confirm new password").fill(NEW_PASSWORD);
  await page.getByRole("button", { name: "Change password" }).click();
  await expect(page.getByRole("alert")).toHaveText("That is not your current password.");

  await page.getByLabel("Current password").fill(PASSWORD);
  await page.getByLabel("New password", { exact: true }).fill(NEW_PASSWORD);
  await page.getByLabel("Confirm new password").fill(NEW_PASSWORD + "x");
  await page.getByRole("button", { name: "Change password" }).click();
  await expect(page.getByRole("alert")).toHaveText("The two passwords are not the same.");

  await page.getByLabel("Current password").fill(PASSWORD);
  await page.getByLabel("New password", { exact: true }).fill(NEW_PASSWORD);
  await page.getByLabel("Confirm new password").fill(NEW_PASSWORD);
  await page.getByRole("button", { name: "Change password" }).click();
  await expect(page.getByRole("status")).toContainText("Password changed. The 1 other session was signed out.");

  // The other browser is signed out; this one is not.
  await expectSignedOut(firefox);
  await page.goto("/settings/sessions");
  await expect(page.locator("table.sessions tbody tr")).toHaveCount(1);

  // The old password no longer signs in; the new one does.
  await signIn(firefox, email, PASSWORD);
  await expect(firefox.getByRole("alert")).toHaveText("The email or password is not right.");
  await signIn(firefox, email, NEW_PASSWORD);
  await expect(firefox.getByText(`Signed in as ${email}`)).toBeVisible();
  await firefox.context().close();
});

test("over https only the __Host- cookie names are read", async ({ page, request }) => {
  await register(page, uniqueEmail("host-cookie"), PASSWORD);
  const session = (await page.context().cookies()).find((c) => c.name === "stepgate_session")!;
  expect(session.value).toMatch(/^[0-9a-f]{64}$/);
  const visit = (headers: Record<string, string>) =>
    // As a browser asks for a page (a signed-out page answers 302 to /login then).
    request.get("/settings/sessions", { headers: { accept: "text/html", ...headers }, maxRedirects: 0 });

  // Over http the plain name is the session.
  expect((await visit({ cookie: `stepgate_session=${session.value}` })).status()).toBe(200);
  // Over https (a TLS-terminating proxy says so) a plain-named cookie, as a sibling subdomain
  // could plant, is ignored; the __Host- one counts.
  const https = { "x-forwarded-proto": "https" };
  const planted = await visit({ ...https, cookie: `stepgate_session=${session.value}` });
  expect(planted.status()).toBe(302);
  expect(planted.headers()["location"]).toBe("/login");
  expect((await visit({ ...https, cookie: `__Host-stepgate_session=${session.value}` })).status()).toBe(200);
});
