// Sign-in links: the owner of a Lynk & Co account that needs sign-in makes a single-use link on
// the account's page; a second browser with no Stepgate session opens it, finishes Lynk & Co's
// SMS steps there, and the account is working again in the first browser, with
// `account.recovered` at the owner's webhook. The used link is refused the second time, and a
// revoked one too (even in a browser that had opened it). The token never stays in the address
// bar (nor in a Referer: the link answers `no-referrer`), the cookie that replaces it is
// HttpOnly and for the link's pages only, and the log never shows it. With the owner's opt-in,
// the `account.needs_sign_in` webhook carries an apps' link.
// Serial: the tests revoke other@lynkco.test's and other@flameconnect.test's tokens at the
// shared doubles (no other spec uses those accounts).
import { expect, test, type Browser, type Page } from "@playwright/test";
import * as fs from "node:fs";
import * as http from "node:http";
import type { AddressInfo } from "node:net";
import * as path from "node:path";
import { appOrigin, dataDir, doubles, serverLogs } from "../playwright.config";
import { confirmIdentity, register, uniqueEmail } from "./helpers";

test.describe.configure({ mode: "serial" });

const PASSWORD = "links-pass-1-quiet-harbor";
const LYNK = { email: "other@lynkco.test", password: "lynkco-demo", vin: "LYVXFEDC0KL123456" };
const INBOX = `http://${doubles.lynkcoB2c}/inbox.json`;
const HEADING = `Sign in to Lynk & Co account ${LYNK.email}`;

/** A webhook receiver on 127.0.0.1 (allowed on the shared server) that keeps every event. */
async function startReceiver(): Promise<{ url: string; events: any[]; close: () => Promise<void> }> {
  const events: any[] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      events.push(JSON.parse(Buffer.concat(chunks).toString("utf8")));
      res.statusCode = 204;
      res.end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/hooks/stepgate`,
    events,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

/** The newest SMS code the double sent to other@lynkco.test after `after` (ms). */
async function smsCode(page: Page, after: number): Promise<string> {
  let code = "";
  await expect
    .poll(async () => {
      const inbox = await (await page.request.get(INBOX)).json();
      const sent = inbox.filter((m: { account: string; sent_at_ms: number }) => m.account === LYNK.email && m.sent_at_ms >= after);
      code = sent.length > 0 ? sent[sent.length - 1].code : "";
      return code;
    })
    .not.toBe("");
  return code;
}

/** Password accepted: the code step. Returns when the SMS was asked for. */
async function toCodeStep(page: Page): Promise<number> {
  const sent = Date.now() - 1000;
  await page.getByRole("button", { name: "Connect", exact: true }).click();
  await expect(page.getByLabel("Verification code")).toBeVisible();
  return sent;
}

/** Connects other@lynkco.test for the signed-in owner; its id. */
async function connectLynkco(page: Page): Promise<string> {
  await page.goto("/accounts/connect/lynkco");
  await page.getByLabel("Email").fill(LYNK.email);
  await page.getByLabel("Password").fill(LYNK.password);
  await page.getByLabel("VIN").fill(LYNK.vin);
  const sent = await toCodeStep(page);
  await page.getByLabel("Verification code").fill(await smsCode(page, sent));
  await page.getByRole("button", { name: "Verify" }).click();
  await expect(page).toHaveURL(/\/accounts\?connected=\d+$/);
  return new URL(page.url()).searchParams.get("connected")!;
}

/** Lynk & Co stops accepting the account's tokens; the accounts page shows it. */
async function makeItNeedSignIn(page: Page, id: string): Promise<void> {
  const revoked = await page.request.post(`http://${doubles.lynkcoB2c}/testing/revoke`, { data: { account: LYNK.email } });
  expect(revoked.ok()).toBe(true);
  await page.goto("/accounts");
  await expect(page.locator(`tr[data-account="${id}"] td.account-status`)).toContainText("Needs sign-in");
}

/** "Send a sign-in link" on the account's page: the link it shows once. */
async function sendLink(page: Page, id: string): Promise<string> {
  await page.goto(`/accounts/account?id=${id}`);
  await expect(page.getByRole("heading", { name: `Lynk & Co account ${LYNK.email}` })).toBeVisible();
  await page.getByRole("button", { name: "Send a sign-in link" }).click();
  const field = page.getByLabel("Sign-in link", { exact: true });
  await expect(field).toHaveAttribute("readonly", "");
  const link = await field.inputValue();
  expect(link).toMatch(new RegExp(`^${appOrigin}/sign-in-link/[0-9a-f]{32}\\.[A-Za-z0-9_-]{43}$`));
  await expect(page.getByText("Sign-in link made. Open this link on the phone that gets the codes.")).toBeVisible();
  // Shown once: not in the page's address, and gone on reload.
  expect(page.url()).not.toContain(link.split("/").pop()!);
  await page.reload();
  await expect(page.getByLabel("Sign-in link", { exact: true })).toHaveCount(0);
  // The after-all check looks for every link shown in the database and the logs.
  fs.appendFileSync(path.join(dataDir, "sign-in-links-shown.txt"), link + "\n");
  return link;
}

/** A second browser: no cookies, no session. */
async function phoneBrowser(browser: Browser, javaScriptEnabled = true) {
  const context = await browser.newContext({ baseURL: appOrigin, javaScriptEnabled });
  return { context, phone: await context.newPage() };
}

test("a sign-in link lets a browser with no session sign a Lynk & Co account in again, once", async ({
  page,
  browser,
}) => {
  test.setTimeout(120_000);
  const receiver = await startReceiver();
  const { context, phone } = await phoneBrowser(browser);
  try {
    await register(page, uniqueEmail("sign-in-links"), PASSWORD);
    await confirmIdentity(page, PASSWORD);
    await page.goto("/settings/webhooks");
    await page.getByLabel("Webhook URL").fill(receiver.url);
    await page.getByRole("button", { name: "Save", exact: true }).click();
    await expect(page).toHaveURL(/\/settings\/webhooks\?saved=1$/);

    const id = await connectLynkco(page);
    await makeItNeedSignIn(page, id);
    const link = await sendLink(page, id);
    const token = link.split("/").pop()!;
    const activity = page.getByRole("table", { name: /What happened to this account/ });
    await expect(activity).toContainText("Sign-in link made.");
    const live = page.getByRole("table", { name: "Live sign-in links to this account" });
    await expect(live.getByRole("row")).toHaveCount(2);
    await expect(live).toContainText("You");

    // The second browser opens it: the token leaves the address bar at once, for a cookie of
    // the link's pages only.
    const opened = await phone.goto(link);
    await expect(phone).toHaveURL(`${appOrigin}/sign-in-link`);
    expect(opened!.status()).toBe(200);
    const first = await opened!.request().redirectedFrom()!.response();
    expect(first!.status()).toBe(302);
    expect(first!.headers()["referrer-policy"]).toBe("no-referrer");
    const cookies = await context.cookies();
    expect(cookies.map((c) => c.name)).toEqual(["stepgate_sign_in_link"]);
    expect(cookies[0]).toMatchObject({ httpOnly: true, path: "/sign-in-link", sameSite: "Lax" });
    expect(cookies[0].value).not.toContain(token);
    await expect(phone.getByRole("heading", { name: HEADING })).toBeVisible();
    // Nothing there leads into Stepgate, and nothing tells who the owner is.
    await expect(phone.getByRole("navigation")).toHaveCount(0);
    await expect(phone.locator('a[href="/"], a[href^="/accounts"], a[href^="/settings"]')).toHaveCount(0);
    expect(await phone.content()).not.toContain("@example.org");

    // Lynk & Co's steps, as on the connect page: email and VIN filled in, then the SMS code.
    await expect(phone.getByLabel("Email")).toHaveValue(LYNK.email);
    await expect(phone.getByLabel("VIN")).toHaveValue(LYNK.vin);
    await phone.getByLabel("Password").fill(LYNK.password);
    const sent = await toCodeStep(phone);
    await expect(phone).toHaveURL(/\/sign-in-link\?flow=[0-9a-f]{32}$/);
    await expect(phone.getByRole("heading", { name: HEADING })).toBeVisible();
    await phone.getByLabel("Verification code").fill(await smsCode(phone, sent));
    await phone.getByRole("button", { name: "Verify" }).click();
    await expect(phone.getByRole("status")).toHaveText(`Done. ${LYNK.email} is connected again. You can close this page.`);

    // The first browser: the account works again, the link is used and no longer listed.
    await page.goto("/accounts");
    await expect(page.locator(`tr[data-account="${id}"] td.account-status`)).toContainText("Connected");
    await page.goto(`/accounts/account?id=${id}`);
    await expect(page.locator("dl.facts dt:has-text('Status') + dd")).toHaveText("Connected");
    await expect(activity).toContainText("Signed in again with a sign-in link.");
    await expect(activity).toContainText("Working again.");
    await expect(page.getByText("No live sign-in links.")).toBeVisible();

    // Its webhook heard that the account works again.
    await expect
      .poll(() => receiver.events.some((e) => e.type === "account.recovered" && String(e.data.account_id) === id), {
        timeout: 20_000,
      })
      .toBe(true);

    // Used: refused the second time, in any browser.
    for (const browserPage of [phone, page]) {
      const again = await browserPage.goto(link);
      expect(again!.status()).toBe(410);
      await expect(browserPage.getByRole("alert")).toHaveText("This sign-in link was already used. Ask the account's owner for a new one.");
      await expect(browserPage.getByLabel("Password")).toHaveCount(0);
    }

    // The token is in no log line.
    for (const log of serverLogs) expect(fs.readFileSync(log, "utf8")).not.toContain(token);
  } finally {
    await context.close();
    await receiver.close();
  }
});

test("a revoked sign-in link is refused, even in a browser that had opened it", async ({ page, browser }) => {
  test.setTimeout(90_000);
  // No WebAssembly and no script at all: the link's pages are plain forms.
  const { context, phone } = await phoneBrowser(browser, false);
  try {
    await register(page, uniqueEmail("sign-in-links-revoked"), PASSWORD);
    const id = await connectLynkco(page);
    // Any account gets links, not only one that needs sign-in.
    const opened = await sendLink(page, id);
    const refused = await sendLink(page, id);
    const live = page.getByRole("table", { name: "Live sign-in links to this account" });
    await expect(live.getByRole("row")).toHaveCount(3);

    await phone.goto(opened);
    await expect(phone.getByRole("heading", { name: HEADING })).toBeVisible();

    // Both revoked at once; each "Revoke" button names its own link.
    const revoke = page.getByRole("button", { name: /^Revoke sign-in link made .* for you/ });
    await expect(revoke).toHaveCount(2);
    await page.getByRole("button", { name: "Revoke all sign-in links" }).click();
    await expect(page.getByRole("status")).toHaveText("Every sign-in link to this account is revoked.");
    await expect(page.getByText("No live sign-in links.")).toBeVisible();
    await expect(page.getByRole("table", { name: /What happened to this account/ })).toContainText("Sign-in link revoked.");

    const never = await phone.goto(refused);
    expect(never!.status()).toBe(404);
    await expect(phone.getByRole("alert")).toHaveText(
      "This sign-in link is not valid (it may have been revoked). Ask the account's owner for a new one.",
    );
    // The browser that opened the other one before it was revoked cannot go on with it.
    const again = await phone.goto("/sign-in-link");
    expect(again!.status()).toBe(404);
    await expect(phone.getByRole("alert")).toContainText("not valid");
    await expect(phone.getByLabel("Password")).toHaveCount(0);

    // One link revoked alone, by its own button.
    const single = await sendLink(page, id);
    await page.getByRole("button", { name: /^Revoke sign-in link made .* for you$/ }).click();
    await expect(page.getByRole("status")).toHaveText("Sign-in link revoked. It no longer opens.");
    expect((await phone.goto(single))!.status()).toBe(404);
  } finally {
    await context.close();
  }
});

test("with “Give apps sign-in links” on, the account.needs_sign_in webhook carries a link that works", async ({
  page,
  browser,
}) => {
  test.setTimeout(90_000);
  const FLAME = { email: "other@flameconnect.test", password: "flame-demo" };
  const receiver = await startReceiver();
  const { context, phone } = await phoneBrowser(browser);
  try {
    await register(page, uniqueEmail("sign-in-links-apps"), PASSWORD);
    await page.goto("/settings/webhooks");
    const optIn = page.getByLabel("Give apps sign-in links");
    await expect(optIn).not.toBeChecked();
    await expect(optIn).toHaveAccessibleDescription(/its webhook and the API include a single-use sign-in link/);
    // Turning it on is a sensitive act: confirm it's you first, and the box comes back ticked.
    await optIn.check();
    await page.getByRole("button", { name: "Apply sign-in link choice" }).click();
    await expect(page).toHaveURL(/\/settings\/confirm\?next=/);
    await confirmIdentity(page, PASSWORD);
    await expect(page).toHaveURL(/\/settings\/webhooks\?.*sign_in_links=on/);
    await expect(page.getByLabel("Give apps sign-in links")).toBeChecked();
    await page.getByRole("button", { name: "Apply sign-in link choice" }).click();
    await expect(page.getByRole("status")).toHaveText("Saved. Apps now get sign-in links.");
    await expect(page.getByLabel("Give apps sign-in links")).toBeChecked();
    await page.getByLabel("Webhook URL").fill(receiver.url);
    await page.getByRole("button", { name: "Save", exact: true }).click();
    await expect(page).toHaveURL(/\/settings\/webhooks\?saved=1$/);
    await expect(page.getByLabel("Give apps sign-in links")).toBeChecked();

    await page.goto("/accounts/connect/flameconnect");
    await page.getByLabel("Email").fill(FLAME.email);
    await page.getByLabel("Password").fill(FLAME.password);
    await page.getByRole("button", { name: "Connect", exact: true }).click();
    await expect(page).toHaveURL(/\/accounts\?connected=\d+$/);
    const id = new URL(page.url()).searchParams.get("connected")!;
    const revoked = await page.request.post(`http://${doubles.flameconnect}/testing/revoke`, { data: { account: FLAME.email } });
    expect(revoked.ok()).toBe(true);
    await page.goto("/accounts");
    const row = page.locator(`tr[data-account="${id}"]`);
    await expect(row.locator("td.account-status")).toContainText("Needs sign-in");

    const needsSignIn = () => receiver.events.find((e) => e.type === "account.needs_sign_in" && String(e.data.account_id) === id);
    await expect.poll(() => needsSignIn() !== undefined, { timeout: 20_000 }).toBe(true);
    const link: string = needsSignIn().data.sign_in_link;
    expect(link).toMatch(new RegExp(`^${appOrigin}/sign-in-link/[0-9a-f]{32}\\.[A-Za-z0-9_-]{43}$`));
    fs.appendFileSync(path.join(dataDir, "sign-in-links-shown.txt"), link + "\n");

    // The owner sees it, made for the apps.
    await page.goto(`/accounts/account?id=${id}`);
    await expect(page.getByRole("table", { name: "Live sign-in links to this account" })).toContainText("Your apps");
    await expect(page.getByRole("table", { name: /What happened to this account/ })).toContainText(
      "Sign-in link made for your apps.",
    );

    // Whoever the app sends it to sees the account's sign-in form.
    await phone.goto(link);
    await expect(phone.getByRole("heading", { name: `Sign in to FlameConnect account ${FLAME.email}` })).toBeVisible();

    // The row's own button makes the owner a link of their own, shown on the account's page.
    await page.goto("/accounts");
    await row.getByRole("button", { name: `Send a sign-in link for FlameConnect account ${FLAME.email}` }).click();
    await expect(page).toHaveURL(new RegExp(`/accounts/account\\?id=${id}&link=made$`));
    const own = await page.getByLabel("Sign-in link", { exact: true }).inputValue();
    fs.appendFileSync(path.join(dataDir, "sign-in-links-shown.txt"), own + "\n");
    await expect(page.getByRole("table", { name: "Live sign-in links to this account" }).getByRole("row")).toHaveCount(3);

    // Off: the apps' link is revoked at once; the owner's own stays.
    await page.goto("/settings/webhooks");
    await page.getByLabel("Give apps sign-in links").uncheck();
    await page.getByRole("button", { name: "Apply sign-in link choice" }).click();
    await expect(page.getByRole("status")).toHaveText("Saved. Apps get no sign-in links, and those they had are revoked.");
    await expect(page.getByLabel("Give apps sign-in links")).not.toBeChecked();
    expect((await phone.goto(link))!.status()).toBe(404);
    await phone.goto(own);
    await expect(phone.getByRole("heading", { name: `Sign in to FlameConnect account ${FLAME.email}` })).toBeVisible();
  } finally {
    await context.close();
    await receiver.close();
  }
});
