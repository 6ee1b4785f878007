// Webhooks: a user saves a URL on /settings/webhooks, copies the signing secret shown once, and
// connecting FlameConnect posts `account.connected` there, signed the Standard Webhooks way
// (HMAC-SHA256 over "id.timestamp.body" keyed with the base64 part of `whsec_…`), with no token
// in it; the page's delivery log shows it delivered.
import { expect, test, type Page } from "@playwright/test";
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as http from "node:http";
import type { AddressInfo } from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import { doubles } from "../playwright.config";
import { confirmIdentity, register, uniqueEmail } from "./helpers";
import { startOwnServer, stopOwnServer } from "./own-server";

type Seen = { headers: http.IncomingHttpHeaders; body: string };

/** A test receiver on 127.0.0.1 (a free port) that records every request and answers 204. */
async function startReceiver(): Promise<{ url: string; seen: Seen[]; close: () => Promise<void> }> {
  const seen: Seen[] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      seen.push({ headers: req.headers, body: Buffer.concat(chunks).toString("utf8") });
      res.statusCode = 204;
      res.end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/hooks/stepgate`,
    seen,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

/** Standard Webhooks verification, done by the test itself. */
function signatureFor(secret: string, id: string, timestamp: string, body: string): string {
  const key = Buffer.from(secret.replace(/^whsec_/, ""), "base64");
  return "v1," + crypto.createHmac("sha256", key).update(`${id}.${timestamp}.${body}`).digest("base64");
}

async function saveUrl(page: Page, url: string): Promise<string> {
  await page.goto("/settings/webhooks");
  await expect(page.getByRole("heading", { name: "Webhooks" })).toBeVisible();
  await page.getByLabel("Webhook URL").fill(url);
  await page.getByRole("button", { name: "Save" }).click();
  await expect(page).toHaveURL(/\/settings\/webhooks\?saved=1$/);
  const field = page.getByLabel("Signing secret");
  await expect(field).toHaveAttribute("readonly", "");
  const secret = await field.inputValue();
  expect(secret).toMatch(/^whsec_[A-Za-z0-9+/]{43}=$/);
  return secret;
}

test("an account.connected delivery reaches the receiver with a valid signature and no token", async ({ page }) => {
  test.setTimeout(60_000);
  const violations: string[] = [];
  page.on("console", (m) => {
    if (m.type() === "error" && m.text().includes("Content Security Policy")) violations.push(m.text());
  });
  const receiver = await startReceiver();
  try {
    await register(page, uniqueEmail("webhooks"), "hook-pass-1-quiet-harbor");
    // Setting the webhook is a sensitive act: confirm it's you once, for the next ten minutes.
    await confirmIdentity(page, "hook-pass-1-quiet-harbor");
    await page.getByRole("link", { name: "Webhooks" }).click();
    await expect(page).toHaveURL(/\/settings\/webhooks$/);
    const secret = await saveUrl(page, receiver.url);
    // Shown once: the secret is not in the URL, and reloading does not show it again.
    expect(page.url()).not.toContain(secret.slice(6, 20));
    await page.reload();
    await expect(page.getByLabel("Signing secret")).toHaveCount(0);
    await expect(page.getByLabel("Webhook URL")).toHaveValue(receiver.url);
    await expect(page.getByText("No deliveries yet.")).toBeVisible();

    await page.goto("/accounts/connect");
    await page.getByRole("link", { name: "FlameConnect" }).click();
    await page.getByLabel("Email").fill("demo@flameconnect.test");
    await page.getByLabel("Password").fill("flame-demo");
    await page.getByRole("button", { name: "Connect", exact: true }).click();
    await expect(page).toHaveURL(/\/accounts\?connected=\d+$/);
    const accountId = Number(new URL(page.url()).searchParams.get("connected"));

    // The server sends due webhooks every second.
    const connected = () =>
      receiver.seen.find((s) => {
        try {
          return JSON.parse(s.body).type === "account.connected";
        } catch {
          return false;
        }
      });
    await expect.poll(() => connected() !== undefined, { timeout: 20_000 }).toBe(true);
    const { headers, body } = connected()!;
    expect(headers["content-type"]).toBe("application/json");
    const id = headers["webhook-id"] as string;
    const timestamp = headers["webhook-timestamp"] as string;
    expect(id).toMatch(/^msg_/);
    expect(Math.abs(Number(timestamp) - Date.now() / 1000)).toBeLessThan(300);
    expect(headers["webhook-signature"]).toBe(signatureFor(secret, id, timestamp, body));
    // A receiver holding another secret would refuse it.
    const otherSecret = "whsec_" + crypto.randomBytes(32).toString("base64");
    expect(headers["webhook-signature"]).not.toBe(signatureFor(otherSecret, id, timestamp, body));

    const event = JSON.parse(body);
    expect(event.type).toBe("account.connected");
    expect(new Date(event.timestamp).getTime()).not.toBeNaN();
    expect(event.data.account_id).toBe(accountId);
    expect(event.data.provider).toBe("flameconnect");
    expect(body).toContain("demo@flameconnect.test");
    // No token, nor the password: none of the values the doubles handed out is in the body.
    expect(body).not.toMatch(/token|flame-demo/i);
    const issued: string[] = await (await page.request.get(`http://${doubles.librusApi}/testing/issued`)).json();
    expect(issued.filter((s) => s.length >= 8 && body.includes(s))).toEqual([]);

    await page.goto("/settings/webhooks");
    const row = page.locator(`tr[data-delivery="${id}"]`);
    await expect(row).toHaveAttribute("data-status", "delivered");
    await expect(row.locator("td.delivery-event")).toHaveText("account.connected");
    await expect(row.locator("td.delivery-attempts")).toHaveText("1");
    await expect(row.locator("td.delivery-result")).toHaveText("Delivered (HTTP 204)");
    expect(violations).toEqual([]);
  } finally {
    await receiver.close();
  }
});

test("a URL that is not http(s) is refused and a new save makes a new secret", async ({ page }) => {
  await register(page, uniqueEmail("webhooks-url"), "hook-pass-1-quiet-harbor");
  await page.goto("/settings/webhooks");
  // Saving a URL asks to confirm it's you first.
  await page.getByLabel("Webhook URL").fill("https://example.org/before");
  await page.getByRole("button", { name: "Save" }).click();
  await expect(page).toHaveURL(/\/settings\/confirm\?next=%2Fsettings%2Fwebhooks/);
  await confirmIdentity(page, "hook-pass-1-quiet-harbor");
  await expect(page).toHaveURL(/\/settings\/webhooks\?confirmed=1$/);
  await expect(page.getByLabel("Signing secret")).toHaveCount(0);
  const field = page.getByLabel("Webhook URL");
  // type=url lets the browser stop most bad URLs first; the server refuses them too.
  await field.evaluate((input: HTMLInputElement) => (input.type = "text"));
  await field.fill("ftp://example.org/hook");
  await page.getByRole("button", { name: "Save" }).click();
  await expect(page.getByRole("alert")).toContainText("http:// or https://");
  await expect(page.getByLabel("Signing secret")).toHaveCount(0);

  // 127.0.0.1 is allowed on the shared server (STEPGATE_WEBHOOK_ALLOW); nothing is sent here.
  const first = await saveUrl(page, "http://127.0.0.1:9/one");
  const second = await saveUrl(page, "http://127.0.0.1:9/two");
  expect(second).not.toBe(first);
  await expect(page.getByLabel("Webhook URL")).toHaveValue("http://127.0.0.1:9/two");

  await page.getByRole("button", { name: "Remove webhook" }).click();
  await expect(page.getByText("Webhook removed.")).toBeVisible();
  await expect(page.getByLabel("Webhook URL")).toHaveValue("");
});

// A server of its own without STEPGATE_WEBHOOK_ALLOW: webhooks may not reach 127.0.0.1 there (nor
// the owner's network, nor the cloud metadata service); once the admin names 127.0.0.1, they may.
const ownPort = Number(process.env.STEPGATE_E2E_PORT ?? 3300) + 17;
const ownBase = `http://127.0.0.1:${ownPort}`;
const REFUSED = "Webhooks may not go to that address";

test("a webhook to 127.0.0.1 is refused in words, and accepted once STEPGATE_WEBHOOK_ALLOW names it", async ({
  browser,
}) => {
  test.setTimeout(90_000);
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "stepgate-webhook-allow-"));
  const receiver = await startReceiver();
  let server = await startOwnServer(ownPort, dataDir, { STEPGATE_REGISTRATION: "open", STEPGATE_WEBHOOK_ALLOW: "" });
  const context = await browser.newContext({ baseURL: ownBase });
  try {
    const page = await context.newPage();
    await register(page, uniqueEmail("webhooks-refused"), "correct-horse-battery-staple-17");
    await page.goto("/settings/webhooks");
    // Saving a webhook is a sensitive act: confirm it's you once, for the next ten minutes.
    await confirmIdentity(page, "correct-horse-battery-staple-17");
    const field = page.getByLabel("Webhook URL");
    for (const url of [receiver.url, "http://169.254.169.254/latest/meta-data/", "http://[::ffff:127.0.0.1]:9/x"]) {
      await field.fill(url);
      await page.getByRole("button", { name: "Save" }).click();
      const alert = page.getByRole("alert");
      await expect(alert).toContainText(REFUSED);
      await expect(alert).toContainText("STEPGATE_WEBHOOK_ALLOW");
      await expect(field).toHaveValue(url);
      await expect(page.getByLabel("Signing secret")).toHaveCount(0);
    }

    // The same without WebAssembly: a plain form post comes back with the words and the URL.
    const plain = await browser.newContext({
      baseURL: ownBase,
      javaScriptEnabled: false,
      storageState: await context.storageState(),
    });
    try {
      const noJs = await plain.newPage();
      await noJs.goto("/settings/webhooks");
      await noJs.getByLabel("Webhook URL").fill(receiver.url);
      await noJs.getByRole("button", { name: "Save" }).click();
      await expect(noJs.getByRole("alert")).toContainText(REFUSED);
      await expect(noJs.getByLabel("Webhook URL")).toHaveValue(receiver.url);
      await expect(noJs.getByLabel("Signing secret")).toHaveCount(0);
    } finally {
      await plain.close();
    }
    await page.goto("/settings/webhooks");
    await expect(page.getByText("No deliveries yet.")).toBeVisible();
    await expect(page.getByRole("button", { name: "Remove webhook" })).toHaveCount(0);

    // The admin allows 127.0.0.1: the same URL is taken (the session outlives the restart).
    await stopOwnServer(server);
    server = await startOwnServer(ownPort, dataDir, {
      STEPGATE_REGISTRATION: "open",
      STEPGATE_WEBHOOK_ALLOW: "127.0.0.1",
    });
    const secret = await saveUrl(page, receiver.url);
    expect(secret).toMatch(/^whsec_/);
    await expect(page.getByLabel("Webhook URL")).toHaveValue(receiver.url);
    await expect(page.getByRole("alert")).toHaveCount(0);
    // Still only what it names: the metadata service stays out of reach.
    await page.getByLabel("Webhook URL").fill("http://169.254.169.254/latest/meta-data/");
    await page.getByRole("button", { name: "Save" }).click();
    await expect(page.getByRole("alert")).toContainText(REFUSED);
  } finally {
    await context.close();
    await stopOwnServer(server);
    await receiver.close();
    fs.rmSync(dataDir, { recursive: true, force: true });
  }
});
