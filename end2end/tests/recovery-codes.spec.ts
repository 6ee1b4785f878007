// Recovery codes: ten single-use codes shown once when the first second factor is turned on,
// the way in at sign-in when the authenticator is not at hand, and a new set that kills the old.
import { expect, test, type Page } from "@playwright/test";
import * as fs from "node:fs";
import * as path from "node:path";
import { dataDir } from "../playwright.config";
import {
  clickConfirmingFirst,
  enrollThroughProvider,
  passwordStep,
  registerWithAppTotp,
  signOut,
} from "./helpers";

test.describe.configure({ timeout: 120_000 });

const PASSWORD = "totp-pass-1-quiet-harbor";

/** The set the page shows this once; written down for the secrets-at-rest check (after-all). */
async function shownCodes(page: Page): Promise<string[]> {
  const field = page.getByLabel("Recovery codes");
  await expect(field).toBeVisible();
  const codes = (await field.inputValue()).split("\n").filter((line) => line.trim() !== "");
  expect(codes).toHaveLength(10);
  for (const code of codes) expect(code).toMatch(/^[a-z2-9]{4}(-[a-z2-9]{4}){3}$/);
  expect(new Set(codes).size).toBe(10);
  fs.appendFileSync(path.join(dataDir, "recovery-codes-shown.txt"), codes.join("\n") + "\n");
  return codes;
}

async function useRecoveryCode(page: Page, email: string, code: string): Promise<void> {
  await passwordStep(page, email);
  await page.getByRole("link", { name: "Use a recovery code" }).click();
  await expect(page.getByRole("heading", { name: "Use a recovery code" })).toBeVisible();
  await page.getByLabel("Recovery code", { exact: true }).fill(code);
  await page.getByRole("button", { name: "Sign in" }).click();
}

test("codes shown once when 2FA is turned on; one signs in once, and a new set kills the old", async ({ page }) => {
  const { email, secret } = await registerWithAppTotp(page, "recovery");
  const codes = await shownCodes(page);
  const download = page.getByRole("link", { name: "Download" });
  await expect(download).toHaveAttribute("download", "stepgate-recovery-codes.txt");
  expect(decodeURIComponent((await download.getAttribute("href"))!)).toContain(codes.join("\n"));
  await expect(page.getByText("10 recovery codes left.")).toBeVisible();

  // Shown once: the next rendering of the page has only the count.
  await page.reload();
  await expect(page.getByText("10 recovery codes left.")).toBeVisible();
  await expect(page.getByLabel("Recovery codes")).toHaveCount(0);

  // Typed in capitals, with spaces for dashes, it still counts.
  await signOut(page);
  await useRecoveryCode(page, email, codes[0].toUpperCase().replaceAll("-", " "));
  await expect(page).toHaveURL(/\/settings\/security\?recovered=1$/);
  await expect(page.getByText("You signed in with a recovery code", { exact: false })).toBeVisible();
  await expect(page.getByText("9 recovery codes left.")).toBeVisible();

  // The same code again is refused; the step stays for another (the next code works).
  await signOut(page);
  await useRecoveryCode(page, email, codes[0]);
  await expect(page).toHaveURL(/\/login\/recovery\?/);
  await expect(page.getByRole("alert")).toHaveText("That code is not right. Check it and try again.");
  await page.getByLabel("Recovery code", { exact: true }).fill(codes[1]);
  await page.getByRole("button", { name: "Sign in" }).click();
  await expect(page.getByText("8 recovery codes left.")).toBeVisible();

  // A new set, after "Confirm it's you": shown once, and the old codes die.
  await clickConfirmingFirst(page, () => page.getByRole("button", { name: "Make new recovery codes" }), PASSWORD, secret);
  const fresh = await shownCodes(page);
  expect(fresh).not.toContain(codes[2]);
  await expect(page.getByText("10 recovery codes left.")).toBeVisible();
  await signOut(page);
  await useRecoveryCode(page, email, codes[2]);
  await expect(page.getByRole("alert")).toHaveText("That code is not right. Check it and try again.");
  await page.getByLabel("Recovery code", { exact: true }).fill(fresh[0]);
  await page.getByRole("button", { name: "Sign in" }).click();
  await expect(page.getByText("9 recovery codes left.")).toBeVisible();
});

test("turning 2FA on through the TOTP provider's popup shows the codes too", async ({ page }) => {
  await enrollThroughProvider(page);
  await shownCodes(page);
  await expect(page.getByText("10 recovery codes left.")).toBeVisible();
});

test("the recovery-code step works without JavaScript", async ({ page, browser }) => {
  const { email } = await registerWithAppTotp(page, "recovery-plain");
  const codes = await shownCodes(page);

  const plain = await browser.newContext({ javaScriptEnabled: false });
  const noJs = await plain.newPage();
  await noJs.goto("/login");
  await noJs.getByLabel("Email").fill(email);
  await noJs.getByLabel("Password").fill(PASSWORD);
  await noJs.getByRole("button", { name: "Sign in" }).click();
  await expect(noJs).toHaveURL(/\/login\/code\?flow=/);
  await noJs.getByRole("link", { name: "Use a recovery code" }).click();
  await noJs.getByLabel("Recovery code", { exact: true }).fill("aaaa-bbbb-cccc-dddd");
  await noJs.getByRole("button", { name: "Sign in" }).click();
  await expect(noJs.getByRole("alert")).toHaveText("That code is not right. Check it and try again.");
  await noJs.getByLabel("Recovery code", { exact: true }).fill(codes[5]);
  await noJs.getByRole("button", { name: "Sign in" }).click();
  await expect(noJs).toHaveURL(/\/settings\/security\?recovered=1$/);
  await expect(noJs.getByText("9 recovery codes left.")).toBeVisible();
  await plain.close();
});
