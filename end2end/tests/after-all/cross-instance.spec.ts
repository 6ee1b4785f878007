// Scaled out only (playwright.config.ts leaves this file out on SQLite): flows whose steps are
// served by different instances, pinned through the round-robin proxy's X-Stepgate-Test-Instance
// header, so the crossing does not depend on how other requests happened to interleave. The
// instances share nothing but Postgres and Redis. Runs after the suite, so the doubles' inboxes
// are its own.
import { expect, test, type BrowserContext, type Page } from "@playwright/test";
import { doubles } from "../../playwright.config";
import { nextTotpStep, passwordStep, register, registerWithAppTotp, signOut, totp, uniqueEmail } from "../helpers";

// A TOTP sign-in waits for the next 30-second step.
test.describe.configure({ timeout: 90_000 });

/** From now on every request of `context` goes to `instance` (1 or 2). */
async function pin(context: BrowserContext, instance: 1 | 2): Promise<void> {
  await context.setExtraHTTPHeaders({ "x-stepgate-test-instance": String(instance) });
}

/** Which instance answered each POST of `page` (form posts and server functions), in order. */
function postsServed(page: Page): string[] {
  const served: string[] = [];
  page.on("response", (response) => {
    if (response.request().method() === "POST") served.push(response.headers()["x-stepgate-instance"]);
  });
  return served;
}

/** The POSTs answered since the last call, then forgets them. */
function take(served: string[]): string[] {
  return served.splice(0, served.length);
}

test("a TOTP sign-in started on instance 1 finishes on instance 2", async ({ page, context }) => {
  const { email, secret } = await registerWithAppTotp(page, "cross-totp");
  await signOut(page);
  const served = postsServed(page);

  await pin(context, 1);
  await passwordStep(page, email);
  const passwordPosts = take(served);
  expect(passwordPosts.length).toBeGreaterThan(0);
  expect(new Set(passwordPosts)).toEqual(new Set(["1"]));

  await pin(context, 2);
  await nextTotpStep();
  await page.getByLabel("Verification code").fill(totp(secret));
  await page.getByRole("button", { name: "Verify" }).click();
  await expect(page.getByText(`Signed in as ${email}`)).toBeVisible();
  const codePosts = take(served);
  expect(codePosts.length).toBeGreaterThan(0);
  expect(new Set(codePosts)).toEqual(new Set(["2"]));

  // The session made on instance 2 is good on instance 1.
  await pin(context, 1);
  await page.goto("/");
  await expect(page.getByText(`Signed in as ${email}`)).toBeVisible();
});

test("a Xiaomi connect flow with 2FA takes its steps on alternate instances", async ({ page, context }) => {
  const account = "demo-2fa@xiaomi.test";
  await register(page, uniqueEmail("cross-xiaomi"), "xiaomi-pass-1-quiet-harbor");
  const served = postsServed(page);

  await pin(context, 1);
  await page.goto("/accounts/connect/xiaomi");
  await page.getByLabel("Xiaomi account").fill(account);
  await page.getByLabel("Password").fill("xiaomi-demo");
  await page.getByRole("button", { name: "Connect" }).click();
  await expect(page.getByRole("link", { name: "Open Xiaomi verification page" })).toBeVisible();
  expect(new Set(take(served))).toEqual(new Set(["1"]));

  await pin(context, 2);
  await page.getByRole("button", { name: "Send code" }).click();
  await expect(page.getByText("We sent a code to your phone", { exact: false })).toBeVisible();
  expect(new Set(take(served))).toEqual(new Set(["2"]));

  await pin(context, 1);
  const inbox = await (await page.request.get(`http://${doubles.xiaomiAccount}/inbox.json`)).json();
  const message = inbox.find((m: { account: string }) => m.account === account);
  expect(message, `a code for ${account}`).toBeDefined();
  await page.getByLabel("Verification code").fill(message.code);
  await page.getByRole("button", { name: "Verify" }).click();
  await expect(page).toHaveURL(/\/accounts\?connected=\d+$/);
  expect(new Set(take(served))).toEqual(new Set(["1"]));

  // Listed by the other instance too.
  await pin(context, 2);
  await page.reload();
  await expect(page.getByRole("row", { name: /Xiaomi/ })).toContainText(account);
});
