import { expect, type Page } from "@playwright/test";

/** A fresh address per test, so tests never share accounts. */
export function uniqueEmail(tag: string): string {
  return `${tag}-${Date.now()}-${Math.floor(Math.random() * 1e9)}@example.org`;
}

export const DEMO = { email: "demo@stepgate.test", password: "stepgate-demo" };

/** The one sentence the server shows for a wrong password and for an unknown user. */
export const INVALID_AUTH = "The email or password is not right.";

/**
 * Waits until the WebAssembly app has hydrated, so clicks are handled by it (and not by a
 * plain form post) when a test means to test the enhanced path.
 */
export async function waitForHydration(page: Page): Promise<void> {
  await page.waitForFunction(() => (window as any).__stepgateHydrated === true);
}

export async function register(page: Page, email: string, password: string): Promise<void> {
  await page.goto("/register");
  await page.getByLabel("Email").fill(email);
  await page.getByLabel("Password", { exact: true }).fill(password);
  await page.getByLabel("Confirm password").fill(password);
  await page.getByRole("button", { name: "Create account" }).click();
  await expect(page).toHaveURL(/\/$/);
  await expect(page.getByText(email)).toBeVisible();
}

export async function signIn(page: Page, email: string, password: string): Promise<void> {
  await page.goto("/login");
  await page.getByLabel("Email").fill(email);
  await page.getByLabel("Password").fill(password);
  await page.getByRole("button", { name: "Sign in" }).click();
}
