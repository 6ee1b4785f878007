// Xiaomi (Mi account against the sandbox's account.xiaomi.com and sts.api.io.mi.com doubles):
// without 2FA, 2FA by a code the server has sent, and 2FA by pasting the authenticated URL from
// Xiaomi's verification page; bad pastes keep the step with their own error.
import { expect, test, type Page } from "@playwright/test";
import { doubles } from "../playwright.config";
import { register, signOut, uniqueEmail } from "./helpers";

const PASSWORD = "xiaomi-demo";

async function startXiaomi(page: Page, account: string): Promise<void> {
  await page.goto("/accounts/connect");
  await page.getByRole("link", { name: "Xiaomi" }).click();
  await expect(page.getByRole("heading", { name: "Connect Xiaomi" })).toBeVisible();
  await page.getByLabel("Xiaomi account").fill(account);
  await page.getByLabel("Password").fill(PASSWORD);
  await page.getByRole("button", { name: "Connect" }).click();
}

/** The newest code the Xiaomi double "sent" to `account`. */
async function latestCode(page: Page, account: string): Promise<string> {
  const inbox = await (await page.request.get(`http://${doubles.xiaomiAccount}/inbox.json`)).json();
  const message = inbox.find((m: { account: string }) => m.account === account);
  expect(message, `a code for ${account}`).toBeDefined();
  return message.code;
}

test.beforeEach(async ({ page }) => {
  await register(page, uniqueEmail("xiaomi"), "xiaomi-pass-1-quiet-harbor");
});

test("connect Xiaomi without 2FA", async ({ page }) => {
  await startXiaomi(page, "demo@xiaomi.test");
  await expect(page).toHaveURL(/\/accounts\?connected=\d+$/);
  await expect(page.getByRole("row", { name: /Xiaomi/ })).toContainText("demo@xiaomi.test");
});

test("a wrong Xiaomi password is refused", async ({ page }) => {
  await page.goto("/accounts/connect/xiaomi");
  await page.getByLabel("Xiaomi account").fill("demo@xiaomi.test");
  await page.getByLabel("Password").fill("not-the-password");
  await page.getByRole("button", { name: "Connect" }).click();
  await expect(page.getByRole("alert")).toContainText("The email or password is not right.");
  await expect(page.getByLabel("Xiaomi account")).toHaveValue("demo@xiaomi.test");
});

test("2FA by a code Stepgate asks Xiaomi to send", async ({ page }) => {
  const account = "demo-2fa@xiaomi.test";
  await startXiaomi(page, account);
  await expect(page.getByRole("link", { name: "Open Xiaomi verification page" })).toBeVisible();
  await page.getByRole("button", { name: "Send code" }).click();
  await expect(page.getByText("We sent a code to your phone", { exact: false })).toBeVisible();

  await page.getByLabel("Verification code").fill("000000");
  await page.getByRole("button", { name: "Verify" }).click();
  await expect(page.getByRole("alert")).toContainText("That code is not right.");
  await expect(page.getByLabel("Verification code")).toBeVisible();

  await page.getByLabel("Verification code").fill(await latestCode(page, account));
  await page.getByRole("button", { name: "Verify" }).click();
  await expect(page).toHaveURL(/\/accounts\?connected=\d+$/);
  await expect(page.getByRole("row", { name: /Xiaomi/ })).toContainText(account);
});

test("2FA by pasting the URL from Xiaomi's verification page; bad pastes keep the step", async ({ page }) => {
  const account = "demo-2fa@xiaomi.test";
  await startXiaomi(page, account);
  const opened = page.waitForEvent("popup");
  await page.getByRole("link", { name: "Open Xiaomi verification page" }).click();
  const xiaomi = await opened;
  await xiaomi.getByRole("button", { name: "Send code" }).click();
  await xiaomi.getByLabel("Verification code").fill(await latestCode(page, account));
  await xiaomi.getByRole("button", { name: "Verify" }).click();
  const good = await xiaomi.getByLabel("Authenticated URL").inputValue();
  expect(good).toMatch(/^https:\/\/sts\.api\.io\.mi\.com\/sts\?/);
  await xiaomi.close();

  const field = page.getByLabel("Authenticated URL");
  const bad: [string, RegExp][] = [
    ["not a url at all", /not a web address/i],
    [good.replace("sts.api.io.mi.com", "evil.example"), /evil\.example/],
    [good.replace(/&auth=[^&]*/, ""), /auth/],
    [good.slice(0, 60) + "…", /cut off/i],
  ];
  for (const [paste, detail] of bad) {
    await field.fill(paste);
    await page.getByRole("button", { name: "Connect with URL" }).click();
    const alert = page.getByRole("alert");
    await expect(alert).toContainText("That URL is not the one the provider gave you.");
    await expect(alert).toContainText(detail);
    await expect(page.getByRole("button", { name: "Connect with URL" })).toBeVisible();
  }

  await field.fill(good);
  await page.getByRole("button", { name: "Connect with URL" }).click();
  await expect(page).toHaveURL(/\/accounts\?connected=\d+$/);
  await expect(page.getByRole("row", { name: /Xiaomi/ })).toContainText(account);
});

test("2FA by code through Xiaomi's confirm-phone page: Stepgate goes on by its skipUrl", async ({ page }) => {
  const account = "demo-confirm@xiaomi.test";
  await startXiaomi(page, account);
  await page.getByRole("button", { name: "Send code" }).click();
  await page.getByLabel("Verification code").fill(await latestCode(page, account));
  await page.getByRole("button", { name: "Verify" }).click();
  await expect(page).toHaveURL(/\/accounts\?connected=\d+$/);
  await expect(page.getByRole("row", { name: /Xiaomi/ })).toContainText(account);
});

test("2FA by paste through the confirm-phone page: skipped, or its own address pasted", async ({ page }) => {
  const account = "demo-confirm@xiaomi.test";
  for (const way of ["skip", "page address"]) {
    if (way !== "skip") {
      // One Xiaomi account per user: a second user for the second way.
      await signOut(page);
      await register(page, uniqueEmail("xiaomi-confirm"), "xiaomi-pass-1-quiet-harbor");
    }
    await startXiaomi(page, account);
    const opened = page.waitForEvent("popup");
    await page.getByRole("link", { name: "Open Xiaomi verification page" }).click();
    const xiaomi = await opened;
    await xiaomi.getByRole("button", { name: "Send code" }).click();
    await xiaomi.getByLabel("Verification code").fill(await latestCode(page, account));
    await xiaomi.getByRole("button", { name: "Verify" }).click();
    await expect(xiaomi.getByRole("heading", { name: "Confirm your phone number" })).toBeVisible();
    let pasted: string;
    if (way === "skip") {
      await xiaomi.getByRole("link", { name: "Skip for now" }).click();
      pasted = await xiaomi.getByLabel("Authenticated URL").inputValue();
      expect(pasted).toMatch(/^https:\/\/sts\.api\.io\.mi\.com\/sts\?/);
    } else {
      pasted = xiaomi.url();
      expect(pasted).toContain("/fe/service/identity/confirmPhone?");
      expect(pasted).toContain("skipUrl=");
    }
    await xiaomi.close();
    await page.getByLabel("Authenticated URL").fill(pasted);
    await page.getByRole("button", { name: "Connect with URL" }).click();
    await expect(page, way).toHaveURL(/\/accounts\?connected=\d+$/);
    await expect(page.getByRole("row", { name: /Xiaomi/ })).toContainText(account);
  }
});
