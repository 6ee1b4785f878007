// One connected account's page: its status, when its tokens were renewed and are renewed next,
// the last failure in words, and its activity (the audit log) with the app reads by key name,
// counted.
import { expect, test } from "@playwright/test";
import { doubles } from "../playwright.config";
import { clickConfirmingFirst, register, uniqueEmail } from "./helpers";

const FLAME = { email: "demo@flameconnect.test", password: "flame-demo" };

// Serial with the other FlameConnect specs' revocations is not needed: this test revokes
// nothing and its assertions hold whatever the double's other accounts go through.
test("the account page shows renewals and the activity, app reads by key name", async ({ page }) => {
  await register(page, uniqueEmail("account-page"), "account-pass-1-quiet-harbor");
  await page.goto("/accounts/connect/flameconnect");
  await page.getByLabel("Email").fill(FLAME.email);
  await page.getByLabel("Password").fill(FLAME.password);
  await page.getByRole("button", { name: "Connect", exact: true }).click();
  await expect(page).toHaveURL(/\/accounts\?connected=\d+$/);
  const id = new URL(page.url()).searchParams.get("connected")!;

  await page.goto("/settings/api-keys");
  await page.getByLabel("Key name").fill("Kitchen tablet");
  await page.getByLabel(`FlameConnect ${FLAME.email}`).check();
  await clickConfirmingFirst(page, () => page.getByRole("button", { name: "Create key" }), "account-pass-1-quiet-harbor");
  const key = await page.getByLabel("New API key").inputValue();
  for (let i = 0; i < 3; i++) {
    const read = await page.request.get(`/api/v1/accounts/${id}/credentials`, {
      headers: { Authorization: `Bearer ${key}` },
    });
    expect(read.status()).toBe(200);
  }

  await page.goto("/accounts");
  await page.getByRole("link", { name: FLAME.email, exact: true }).click();
  await expect(page.getByRole("heading", { name: `FlameConnect account ${FLAME.email}` })).toBeVisible();
  const facts = page.locator("dl.facts");
  await expect(facts).toContainText("Next renewal");
  await expect(facts.locator("dt:has-text('Next renewal') + dd")).toHaveText(/\d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC/);
  await expect(facts.locator("dt:has-text('Last error') + dd")).toHaveText("none");
  const activity = page.getByRole("table", { name: /What happened to this account/ });
  await expect(activity).toContainText("Connected.");
  // Reads are counted per key and minute and written within a second (by the instance that
  // answered them, when there are two): all three show, in one row unless a minute turned.
  await expect(async () => {
    await page.reload();
    const rows = await activity.getByText(/^Credentials read( \d+ times)? with API key “Kitchen tablet”\.$/).allTextContents();
    const counted = rows.map((r) => Number(/read (\d+) times/.exec(r)?.[1] ?? 1)).reduce((a, b) => a + b, 0);
    expect(counted).toBe(3);
  }).toPass({ timeout: 10_000 });
  // No secret on the page.
  const html = await page.content();
  expect(html).not.toContain(key);
  const issued: string[] = await (await page.request.get(`http://${doubles.flameconnect}/testing/issued`)).json();
  for (const secret of issued.filter((s) => s.length >= 16)) expect(html).not.toContain(secret);
});
