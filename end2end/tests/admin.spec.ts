// Who may sign up, and the admin page: on a server of its own that starts on an empty database
// with the default registration mode (invite only), the first account is the admin; it makes an
// invite link, a second browser registers with it, a third without it is refused in words; the
// admin disables the invited account and its session ends at once. Also the header every
// signed-in page shows.
import { expect, test, type Browser, type Page } from "@playwright/test";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { startOwnServer, stopOwnServer } from "./own-server";
import { clickConfirmingFirst, uniqueEmail } from "./helpers";

test.describe.configure({ mode: "serial", timeout: 120_000 });

const port = Number(process.env.STEPGATE_E2E_ADMIN_PORT ?? Number(process.env.STEPGATE_E2E_PORT ?? 3300) + 12);
const base = `http://127.0.0.1:${port}`;
const PASSWORD = "correct-horse-battery-staple-17";

const INVITE_REQUIRED = "This Stepgate takes new accounts by invite only. Ask its admin for an invite link.";
const INVITE_USED = "This invite link was used already: each works once. Ask the admin for a new one.";
const ACCOUNT_DISABLED = "This account is disabled by an admin of this Stepgate. Ask them to enable it again.";
const ADMIN_ONLY = "Only an admin of this Stepgate may do that.";

async function newPage(browser: Browser): Promise<Page> {
  const context = await browser.newContext({ baseURL: base });
  return context.newPage();
}

async function fillRegistration(page: Page, email: string): Promise<void> {
  await page.getByLabel("Email").fill(email);
  await page.getByLabel("Password", { exact: true }).fill(PASSWORD);
  await page.getByLabel("Confirm password").fill(PASSWORD);
  await page.getByRole("button", { name: "Create account" }).click();
}

test("the first account is the admin; invites let one browser in and keep another out; disabling ends a session", async ({
  browser,
}) => {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "stepgate-admin-"));
  // STEPGATE_REGISTRATION unset: the server's default (invite) applies.
  const server = await startOwnServer(port, dataDir, { STEPGATE_REGISTRATION: null });
  const pages: Page[] = [];
  try {
    // 1. The first account registers freely and is the admin.
    const admin = await newPage(browser);
    pages.push(admin);
    const adminEmail = uniqueEmail("admin");
    await admin.goto("/register");
    await expect(admin.getByText("the account you create now is its admin")).toBeVisible();
    await expect(admin.getByLabel("Invite link or code")).toHaveCount(0);
    await fillRegistration(admin, adminEmail);
    await expect(admin).toHaveURL(`${base}/`);
    await expect(admin.getByText(`Signed in as ${adminEmail}`)).toBeVisible();
    const nav = admin.getByRole("navigation", { name: "Main" });
    await nav.getByRole("link", { name: "Admin" }).click();
    await expect(admin).toHaveURL(`${base}/admin/users`);
    await expect(nav.getByRole("link", { name: "Admin" })).toHaveAttribute("aria-current", "page");
    await expect(admin.getByRole("heading", { name: "Admin: accounts" })).toBeVisible();
    await expect(admin.getByRole("row", { name: new RegExp(adminEmail) })).toContainText("Admin");

    // 2. An invite link, shown once. Every admin act asks to confirm it's you first.
    await clickConfirmingFirst(admin, () => admin.getByRole("button", { name: "Make an invite link" }), PASSWORD);
    const linkField = admin.getByLabel("New invite link");
    await expect(linkField).toHaveValue(new RegExp(`^${base}/register\\?invite=[0-9a-f]{64}$`));
    const link = await linkField.inputValue();
    expect(admin.url()).not.toContain(link.split("invite=")[1]);
    await expect(admin.locator("td.invite-state").first()).toHaveText("Not used yet");
    await admin.reload();
    await expect(admin.getByLabel("New invite link")).toHaveCount(0);

    // 3. A second browser registers with it.
    const invited = await newPage(browser);
    pages.push(invited);
    const invitedEmail = uniqueEmail("invited");
    await invited.goto(link);
    await expect(invited.getByLabel("Invite link or code")).toHaveValue(link.split("invite=")[1]);
    await fillRegistration(invited, invitedEmail);
    await expect(invited).toHaveURL(`${base}/`);
    await expect(invited.getByText(`Signed in as ${invitedEmail}`)).toBeVisible();
    // Not an admin: no Admin link, and the page itself refuses in words with a 403.
    const invitedNav = invited.getByRole("navigation", { name: "Main" });
    await expect(invitedNav.getByRole("link", { name: "Accounts" })).toBeVisible();
    await expect(invitedNav.getByRole("link", { name: "Admin" })).toHaveCount(0);
    const refused = await invited.goto("/admin/users");
    expect(refused?.status()).toBe(403);
    await expect(invited.getByRole("alert")).toHaveText(ADMIN_ONLY);
    await expect(invited.getByRole("cell", { name: adminEmail })).toHaveCount(0);

    // 4. A third browser without an invite is refused in words, its email kept; the used link
    //    is refused too.
    const stranger = await newPage(browser);
    pages.push(stranger);
    const strangerEmail = uniqueEmail("stranger");
    await stranger.goto("/register");
    await expect(stranger.getByText(INVITE_REQUIRED)).toBeVisible();
    await fillRegistration(stranger, strangerEmail);
    await expect(stranger.getByRole("alert")).toHaveText(INVITE_REQUIRED);
    await expect(stranger).toHaveURL(/\/register\?/);
    await expect(stranger.getByLabel("Email")).toHaveValue(strangerEmail);
    await stranger.goto(link);
    await fillRegistration(stranger, strangerEmail);
    await expect(stranger.getByRole("alert")).toHaveText(INVITE_USED);
    await expect(stranger.getByLabel("Invite link or code")).toHaveValue(link.split("invite=")[1]);
    const api = await stranger.request.post("/api/register", {
      form: { email: strangerEmail, password: PASSWORD, confirm_password: PASSWORD },
    });
    expect(api.status()).toBe(403);
    expect((await api.json()).code).toBe("invite_required");

    // 5. The admin sees the invited account and disables it: its session ends at once.
    await admin.goto("/admin/users");
    const row = admin.getByRole("row", { name: new RegExp(invitedEmail) });
    await expect(row.locator("td.live-sessions")).toHaveText("1");
    await expect(row.locator("td.two-factor")).toHaveText("off");
    await expect(admin.locator("td.invite-state").first()).toHaveText(new RegExp(`^Used by ${invitedEmail}`));
    await row.getByRole("button", { name: `Disable ${invitedEmail}` }).click();
    await expect(admin.getByRole("status")).toContainText("Account disabled");
    await expect(row.locator("td.account-state")).toHaveText("Disabled");
    await expect(row.locator("td.live-sessions")).toHaveText("0");
    await expect(admin.locator("td.audit-what").first()).toHaveText(`disabled the account ${invitedEmail}`);
    await expect(admin.getByRole("cell", { name: "made an invite link" })).toBeVisible();
    // The admin's own row has no Disable button.
    await expect(admin.getByRole("button", { name: `Disable ${adminEmail}` })).toHaveCount(0);

    await invited.goto("/accounts");
    await expect(invited).toHaveURL(`${base}/login`);
    await invited.getByLabel("Email").fill(invitedEmail);
    await invited.getByLabel("Password").fill(PASSWORD);
    await invited.getByRole("button", { name: "Sign in" }).click();
    await expect(invited.getByRole("alert")).toHaveText(ACCOUNT_DISABLED);

    // 6. Enabled again, it signs in.
    await row.getByRole("button", { name: `Enable ${invitedEmail}` }).click();
    await expect(row.locator("td.account-state")).toHaveText("Active");
    await invited.getByLabel("Password").fill(PASSWORD);
    await invited.getByRole("button", { name: "Sign in" }).click();
    await expect(invited.getByText(`Signed in as ${invitedEmail}`)).toBeVisible();
  } finally {
    for (const page of pages) await page.context().close();
    await stopOwnServer(server);
    fs.rmSync(dataDir, { recursive: true, force: true });
  }
});

test("every signed-in page has the header, with the current page marked and reachable by keyboard", async ({
  browser,
}) => {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "stepgate-nav-"));
  const server = await startOwnServer(port, dataDir);
  const page = await newPage(browser);
  try {
    // Nothing on the sign-in pages.
    await page.goto("/login");
    await expect(page.getByRole("navigation", { name: "Main" })).toHaveCount(0);
    await page.goto("/register");
    await fillRegistration(page, uniqueEmail("nav"));
    await expect(page).toHaveURL(`${base}/`);
    const nav = page.getByRole("navigation", { name: "Main" });
    const sections: [string, string][] = [
      ["Accounts", "/accounts"],
      ["API keys", "/settings/api-keys"],
      ["Webhooks", "/settings/webhooks"],
      ["Security", "/settings/security"],
      ["Sessions", "/settings/sessions"],
      // The first account of this server is its admin.
      ["Admin", "/admin/users"],
    ];
    await expect(nav.getByRole("link")).toHaveText(sections.map(([name]) => name));
    for (const [name, href] of sections) {
      await expect(nav.getByRole("link", { name, exact: true })).toHaveAttribute("href", href);
    }
    await expect(nav.locator("[aria-current]")).toHaveCount(0);
    for (const [name, href] of sections) {
      await page.goto(href);
      await expect(nav.getByRole("link", { name, exact: true })).toHaveAttribute("aria-current", "page");
      await expect(nav.locator("[aria-current]")).toHaveCount(1);
    }
    // A page inside a section marks its section.
    await page.goto("/accounts/connect");
    await expect(nav.getByRole("link", { name: "Accounts", exact: true })).toHaveAttribute("aria-current", "page");

    // Keyboard: from the top of the page, Tab reaches every link and Sign out, in order.
    await page.goto("/settings/api-keys");
    await page.keyboard.press("Tab");
    await expect(page.getByRole("link", { name: "Stepgate" })).toBeFocused();
    for (const [name] of sections) {
      await page.keyboard.press("Tab");
      await expect(nav.getByRole("link", { name, exact: true })).toBeFocused();
    }
    await page.keyboard.press("Tab");
    const signOut = nav.getByRole("button", { name: "Sign out" });
    await expect(signOut).toBeFocused();
    await page.keyboard.press("Enter");
    await expect(page).toHaveURL(`${base}/login`);
    await expect(page.getByRole("navigation", { name: "Main" })).toHaveCount(0);
  } finally {
    await page.context().close();
    await stopOwnServer(server);
    fs.rmSync(dataDir, { recursive: true, force: true });
  }
});
