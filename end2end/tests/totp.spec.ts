// Stepgate's own second factor: TOTP through the web TOTP provider's popup (the sandbox plays
// the provider on its own origin), or an authenticator app.
import { expect, test, type Page } from "@playwright/test";
import * as fs from "node:fs";
import * as path from "node:path";
import { dataDir, scaledOut } from "../playwright.config";
import { postgresDump } from "./stored-data";
import {
  SANDBOX,
  clickConfirmingFirst,
  enrollThroughProvider,
  openProviderPopup,
  nextTotpStep,
  passwordStep,
  register,
  registerWithAppTotp,
  signOut,
  totp,
  uniqueEmail,
  waitForHydration,
} from "./helpers";

// Some tests wait for the next 30-second TOTP step.
test.describe.configure({ timeout: 120_000 });

test("enroll through the provider popup, then sign in with its Send code button", async ({ page }) => {
  const email = await enrollThroughProvider(page);
  await signOut(page);

  await passwordStep(page, email);
  await nextTotpStep();
  const popup = await openProviderPopup(page);
  await expect(popup).toHaveURL(new RegExp(`^${SANDBOX}/dashboard/simple-totp\\?seedId=seed_[0-9a-f]+$`));
  await popup.getByRole("button", { name: "Send code to Stepgate" }).click();
  await expect(page).toHaveURL(/\/$/);
  await expect(page.getByText(`Signed in as ${email}`)).toBeVisible();
});

test("sign in by typing the code read from the popup; the same code is refused a second time", async ({ page }) => {
  const email = await enrollThroughProvider(page);
  await signOut(page);

  await passwordStep(page, email);
  await nextTotpStep();
  const popup = await openProviderPopup(page);
  const code = (await popup.getByLabel("Current code").textContent())!.trim();
  await popup.close();
  await expect(page.getByText("The TOTP provider window was closed.", { exact: false })).toBeVisible();
  // Pasting with a space works too.
  await page.getByLabel("Verification code").fill(`${code.slice(0, 3)} ${code.slice(3)}`);
  await expect(page.getByLabel("Verification code")).toHaveValue(code);
  await page.getByRole("button", { name: "Verify" }).click();
  await expect(page.getByText(`Signed in as ${email}`)).toBeVisible();

  await signOut(page);
  await passwordStep(page, email);
  await page.getByLabel("Verification code").fill(code);
  await page.getByRole("button", { name: "Verify" }).click();
  await expect(page.getByRole("alert")).toHaveText("That code was already used. Wait for the next one and try again.");
  await expect(page).toHaveURL(/\/login\/code/);
});

test("a whole pasted code is sent at once, and only once while the server checks it", async ({ page }) => {
  const { email, secret } = await registerWithAppTotp(page, "paste");
  await signOut(page);
  await passwordStep(page, email);
  await nextTotpStep();
  // Hold the form's post, so a second paste arrives while the first is being checked.
  let posts = 0;
  let release!: () => void;
  const held = new Promise<void>((r) => (release = r));
  await page.route("**/api/verify_code", async (route) => {
    posts += 1;
    await held;
    await route.continue();
  });
  // The second paste is timed in the page: once its post is held, Playwright waits for the
  // navigation before it runs anything more there.
  const code = totp(secret);
  const busy = await page.evaluate(
    ([first, second]) => {
      const input = document.getElementById("field-code")!;
      const paste = (text: string) => {
        const data = new DataTransfer();
        data.setData("text", text);
        input.dispatchEvent(new ClipboardEvent("paste", { clipboardData: data, bubbles: true, cancelable: true }));
      };
      paste(first);
      setTimeout(() => paste(second), 300);
      return document.querySelector("form[data-code-form] button[type=submit]")!.textContent;
    },
    [`${code.slice(0, 3)} ${code.slice(3)}`, code],
  );
  expect(busy).toBe("Verifying…");
  await expect.poll(() => posts).toBe(1);
  await new Promise((r) => setTimeout(r, 800));
  expect(posts).toBe(1);
  release();
  await expect(page.getByText(`Signed in as ${email}`)).toBeVisible();
});

test("a wrong code shows the alert, keeps the step, and a retry works; 2FA can be turned off", async ({ page }) => {
  const { email, secret } = await registerWithAppTotp(page, "wrong");
  await signOut(page);

  await passwordStep(page, email);
  await page.getByLabel("Verification code").fill("000000");
  await page.getByRole("button", { name: "Verify" }).click();
  await expect(page.getByRole("alert")).toHaveText("That code is not right. Check it and try again.");
  await expect(page).toHaveURL(/\/login\/code/);

  await nextTotpStep();
  await page.getByLabel("Verification code").fill(totp(secret));
  await page.getByRole("button", { name: "Verify" }).click();
  await expect(page.getByText(`Signed in as ${email}`)).toBeVisible();

  await page.getByRole("link", { name: /Security settings/ }).click();
  await expect(page.getByText("Two-factor authentication is on.")).toBeVisible();
  await waitForHydration(page);
  // A sensitive act: the password and a current code first ("Confirm it's you"), then off.
  await clickConfirmingFirst(page, () => page.getByRole("button", { name: "Turn off 2FA" }), "totp-pass-1-quiet-harbor", secret);
  await expect(page.getByText("Two-factor authentication is off.", { exact: false })).toBeVisible();

  // Without 2FA the password alone signs in again.
  await signOut(page);
  await page.getByLabel("Email").fill(email);
  await page.getByLabel("Password").fill("totp-pass-1-quiet-harbor");
  await page.getByRole("button", { name: "Sign in" }).click();
  await expect(page.getByText(`Signed in as ${email}`)).toBeVisible();
});

test("messages from a foreign origin, another window or of the wrong shape are ignored", async ({ page, request }) => {
  const { email, secret } = await registerWithAppTotp(page, "foreign");
  await request.post(`${SANDBOX}/testing/seeds`, { data: { service: "Stepgate", account: email, secret } });
  await signOut(page);
  await passwordStep(page, email);
  await nextTotpStep();
  const popup = await openProviderPopup(page);
  const good = totp(secret);

  // The app's own origin is not the provider's.
  await page.evaluate((code) => window.postMessage({ type: "stepgate.totp", code }, "*"), good);
  // Right window, wrong shapes.
  await popup.evaluate(() => window.opener.postMessage({ type: "stepgate.totp", code: "12345" }, "*"));
  await popup.evaluate(() => window.opener.postMessage({ type: "other", code: "123456" }, "*"));
  await popup.evaluate(
    (code) => window.opener.postMessage({ type: "stepgate.totp", code, extra: true }, "*"),
    good,
  );
  await page.waitForTimeout(800);
  await expect(page.getByLabel("Verification code")).toHaveValue("");
  await expect(page).toHaveURL(/\/login\/code/);

  // The exact shape from the provider's popup is accepted: the listener was live all along.
  await popup.evaluate((code) => window.opener.postMessage({ type: "stepgate.totp", code }, "*"), good);
  await expect(page.getByText(`Signed in as ${email}`)).toBeVisible();
});

test("a user enrolled without a seed id gets the service + account deep link", async ({ page, request }) => {
  const { email, secret } = await registerWithAppTotp(page, "fallback");
  // The same seed, held by the provider under Stepgate's service name and the account email.
  const imported = await request.post(`${SANDBOX}/testing/seeds`, {
    data: { service: "Stepgate", account: email, secret },
  });
  expect(imported.ok()).toBe(true);
  await signOut(page);

  await passwordStep(page, email);
  await nextTotpStep();
  const popup = await openProviderPopup(page);
  expect(popup.url()).toBe(
    `${SANDBOX}/dashboard/simple-totp?serviceName=Stepgate&accountIdentifier=${encodeURIComponent(email)}`,
  );
  await popup.getByRole("button", { name: "Send code to Stepgate" }).click();
  await expect(page.getByText(`Signed in as ${email}`)).toBeVisible();
});

test("authenticator-app enrolment with a computed code; the secret is gone from the page and not in the database in clear", async ({
  page,
}) => {
  const { secret } = await registerWithAppTotp(page, "app");
  expect(secret).toMatch(/^[A-Z2-7]{32}$/);
  await page.reload();
  await expect(page.getByText("Two-factor authentication is on.")).toBeVisible();
  expect(await page.content()).not.toContain(secret);

  // Scaled out the rows are in Postgres: a text dump of them (bytes as hex) is searched instead.
  const files = scaledOut
    ? [postgresDump()]
    : fs
        .readdirSync(dataDir)
        .filter((f) => f.startsWith("stepgate.db"))
        .map((f) => path.join(dataDir, f));
  expect(files.length).toBeGreaterThan(0);
  for (const file of files) {
    const bytes = fs.readFileSync(file);
    expect(bytes.includes(Buffer.from(secret)), `${file} holds the seed in clear`).toBe(false);
    expect(bytes.includes(Buffer.from(Buffer.from(secret).toString("hex"))), `${file} holds the seed as hex`).toBe(false);
  }
});

test("an unknown or expired sign-in flow says so and offers to start again", async ({ page }) => {
  await page.goto(`/login/code?flow=${"0".repeat(32)}`);
  await expect(page.getByRole("alert")).toHaveText("This sign-in took too long and has expired. Please start again.");
  await page.getByRole("link", { name: "Start again" }).click();
  await expect(page).toHaveURL(/\/login$/);
});

test("each factor swaps the cookie for a new id", async ({ page, context }) => {
  const { email, secret } = await registerWithAppTotp(page, "rotate");
  const cookie = async (name: string) => (await context.cookies()).find((c) => c.name === name);
  const before = (await cookie("stepgate_session"))!.value;

  // Password accepted while still signed in: the session ends, a login cookie carries the flow.
  await passwordStep(page, email);
  expect(await cookie("stepgate_session")).toBeUndefined();
  const login = await cookie("stepgate_login");
  expect(login?.httpOnly).toBe(true);
  expect(login?.value).not.toBe(before);

  await nextTotpStep();
  await page.getByLabel("Verification code").fill(totp(secret));
  await page.getByRole("button", { name: "Verify" }).click();
  await expect(page.getByText(`Signed in as ${email}`)).toBeVisible();
  const after = (await cookie("stepgate_session"))!.value;
  expect(after).not.toBe(before);
  expect(after).not.toBe(login!.value);
  expect(await cookie("stepgate_login")).toBeUndefined();
});

test("the code step works without JavaScript", async ({ page, browser }) => {
  const { email, secret } = await registerWithAppTotp(page, "nojs-code");
  const plain = await browser.newContext({ javaScriptEnabled: false });
  const noJs = await plain.newPage();
  await noJs.goto("/login");
  await noJs.getByLabel("Email").fill(email);
  await noJs.getByLabel("Password").fill("totp-pass-1-quiet-harbor");
  await noJs.getByRole("button", { name: "Sign in" }).click();
  await expect(noJs).toHaveURL(/\/login\/code\?flow=/);

  await noJs.getByLabel("Verification code").fill("000000");
  await noJs.getByRole("button", { name: "Verify" }).click();
  await expect(noJs.getByRole("alert")).toHaveText("That code is not right. Check it and try again.");

  await nextTotpStep();
  await noJs.getByLabel("Verification code").fill(totp(secret));
  await noJs.getByRole("button", { name: "Verify" }).click();
  await expect(noJs.getByText(`Signed in as ${email}`)).toBeVisible();
  await plain.close();
});
