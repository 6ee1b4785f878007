// Librus (five-step OAuth against the sandbox's api.librus.pl and synergia.librus.pl doubles):
// connect, the provider's own message on a wrong password, a duplicate refused, maintenance,
// and removing the account.
import { expect, test, type Page } from "@playwright/test";
import { doubles } from "../playwright.config";
import { register, uniqueEmail } from "./helpers";

const DEMO = { login: "demo.parent", password: "librus-demo" };

async function openLibrus(page: Page): Promise<void> {
  await page.goto("/accounts");
  await page.getByRole("link", { name: "Connect an account" }).click();
  await page.getByRole("link", { name: "Librus" }).click();
  await expect(page.getByRole("heading", { name: "Connect Librus" })).toBeVisible();
}

async function connectLibrus(page: Page, login: string, password: string): Promise<void> {
  await openLibrus(page);
  await page.getByLabel("Login").fill(login);
  await page.getByLabel("Password").fill(password);
  await page.getByRole("button", { name: "Connect" }).click();
}

/** Switches a fault of the Librus double (`none` clears it). */
async function fault(page: Page, step: string, kind: string): Promise<void> {
  const answer = await page.request.post(`http://${doubles.librusApi}/testing/faults`, {
    data: { step, fault: kind },
  });
  expect(answer.ok()).toBe(true);
}

test.beforeEach(async ({ page }) => {
  await register(page, uniqueEmail("librus"), "librus-pass-1-quiet-harbor");
});

test("connect Librus: the account is listed, and can be removed", async ({ page }) => {
  await connectLibrus(page, DEMO.login, DEMO.password);
  await expect(page).toHaveURL(/\/accounts\?connected=\d+$/);
  await expect(page.getByRole("status")).toHaveText("Account connected.");
  const row = page.getByRole("row", { name: /Librus/ });
  await expect(row).toContainText(DEMO.login);
  await expect(row.locator("td.account-status")).toContainText("Connected");

  await row.getByRole("link", { name: `Remove Librus account ${DEMO.login}` }).click();
  await expect(page.getByText(`Remove the Librus account ${DEMO.login}?`, { exact: false })).toBeVisible();
  await page.getByRole("button", { name: "Remove" }).click();
  await expect(page).toHaveURL(/\/accounts\?removed=1$/);
  await expect(page.getByText("No accounts connected yet.")).toBeVisible();
});

test("a wrong password shows Librus' own message and keeps the login", async ({ page }) => {
  await connectLibrus(page, DEMO.login, "not-the-password");
  const alert = page.getByRole("alert");
  await expect(alert).toContainText("The email or password is not right.");
  await expect(alert).toContainText("Nieprawidłowy login i/lub hasło.");
  await expect(page.getByLabel("Login")).toHaveValue(DEMO.login);
  await expect(page.getByLabel("Password")).toHaveValue("");
});

test("the same Librus account is not connected twice", async ({ page }) => {
  await connectLibrus(page, DEMO.login, DEMO.password);
  await expect(page).toHaveURL(/\/accounts\?connected=/);
  await connectLibrus(page, DEMO.login, DEMO.password);
  await expect(page.getByRole("alert")).toHaveText("This account is already connected.");
  await page.goto("/accounts");
  await expect(page.getByRole("row", { name: /Librus/ })).toHaveCount(1);
});

test("Librus under maintenance says so", async ({ page }) => {
  await fault(page, "root", "503");
  try {
    await connectLibrus(page, DEMO.login, DEMO.password);
    await expect(page.getByRole("alert")).toContainText("The provider is down for maintenance.");
  } finally {
    await fault(page, "root", "none");
  }
});

test("the provider picker names every service", async ({ page }) => {
  await page.goto("/accounts/connect");
  const links = page.getByRole("list").getByRole("link");
  await expect(links).toHaveText(["Librus", "Xiaomi", "Lynk & Co", "FlameConnect"]);
  await expect(page.getByRole("link", { name: "FlameConnect" })).toHaveAttribute("href", "/accounts/connect/flameconnect");
});

test("the connect button shows that the server is working", async ({ page }) => {
  await openLibrus(page);
  // On window: it runs after forms.js's listener on document, whatever loaded first.
  await page.evaluate(() => window.addEventListener("submit", (e) => e.preventDefault()));
  await page.getByLabel("Login").fill(DEMO.login);
  await page.getByLabel("Password").fill(DEMO.password);
  await page.getByRole("button", { name: "Connect" }).click();
  await expect(page.getByRole("button", { name: "Connecting…" })).toBeDisabled();
});
