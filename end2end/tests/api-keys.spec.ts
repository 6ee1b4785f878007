// API keys and the app API: a key scoped to a connected FlameConnect account (the double at
// gdhvb2cflameconnect.b2clogin.com) reads that account and its credentials with
// `Authorization: Bearer`; a key without it in scope gets 403, a wrong key 401, a revoked key
// 401; the secret is shown once; the OpenAPI document names the paths.
import { expect, test, type APIRequestContext, type Page } from "@playwright/test";
import { clickConfirmingFirst, register, uniqueEmail } from "./helpers";

const FLAME = { email: "demo@flameconnect.test", password: "flame-demo" };
const KEY_SHAPE = /^sgk_[0-9a-f]{16}_[0-9a-f]{64}$/;
const PASSWORD = "api-pass-1-quiet-harbor";

/** Connects the FlameConnect demo account; returns its id. */
async function connectFlameConnect(page: Page): Promise<number> {
  await page.goto("/accounts/connect");
  await page.getByRole("link", { name: "FlameConnect" }).click();
  await page.getByLabel("Email").fill(FLAME.email);
  await page.getByLabel("Password").fill(FLAME.password);
  await page.getByRole("button", { name: "Connect", exact: true }).click();
  await expect(page).toHaveURL(/\/accounts\?connected=\d+$/);
  return Number(new URL(page.url()).searchParams.get("connected"));
}

/** Creates a key on the page, ticking `accounts` (checkbox labels); returns its secret. */
async function createKey(page: Page, name: string, accounts: string[]): Promise<string> {
  await page.goto("/settings/api-keys");
  await page.getByLabel("Key name").fill(name);
  for (const account of accounts) await page.getByLabel(account).check();
  await clickConfirmingFirst(page, () => page.getByRole("button", { name: "Create key" }), PASSWORD);
  await expect(page).toHaveURL(/\/settings\/api-keys\?created=1$/);
  const secret = await page.getByLabel("New API key").inputValue();
  expect(secret).toMatch(KEY_SHAPE);
  return secret;
}

function get(request: APIRequestContext, path: string, key?: string) {
  return request.get(path, { headers: key === undefined ? {} : { Authorization: `Bearer ${key}` } });
}

test("an app reads the accounts a key was given, until the key is revoked", async ({ page }) => {
  const violations: string[] = [];
  page.on("console", (m) => {
    if (m.type() === "error" && m.text().includes("Content Security Policy")) violations.push(m.text());
  });
  await register(page, uniqueEmail("apikeys"), PASSWORD);
  const accountId = await connectFlameConnect(page);

  await page.goto("/");
  await page.getByRole("link", { name: "API keys" }).click();
  await expect(page.getByRole("heading", { name: "API keys" })).toBeVisible();
  const label = `FlameConnect ${FLAME.email}`;
  const key = await createKey(page, "Home app", [label]);

  // "Copy" puts the key on the clipboard and says so.
  await page.context().grantPermissions(["clipboard-read", "clipboard-write"]);
  await page.getByRole("button", { name: "Copy" }).click();
  await expect(page.getByRole("status").filter({ hasText: "Copied" })).toBeVisible();
  expect(await page.evaluate(() => navigator.clipboard.readText())).toBe(key);

  // Shown once: the page does not show it again, and the list says what the key may read.
  await page.reload();
  await expect(page.getByLabel("New API key")).toHaveCount(0);
  const row = page.getByRole("row", { name: /Home app/ });
  await expect(row).toContainText(label);
  await expect(row.locator("td.key-used")).toHaveText("never");
  expect(await page.content()).not.toContain(key.split("_")[2]);

  const list = await get(page.request, "/api/v1/accounts", key);
  expect(list.status()).toBe(200);
  expect(list.headers()["cache-control"]).toBe("no-store");
  const listed = await list.json();
  expect(listed).toEqual({
    accounts: [
      {
        id: accountId,
        provider: "flameconnect",
        name: FLAME.email,
        status: "active",
        last_renewed_at: null,
        next_renewal_at: expect.any(Number),
        last_error: null,
      },
    ],
  });
  // One account's health by itself, the same as in the list.
  const one = await get(page.request, `/api/v1/accounts/${accountId}`, key);
  expect(one.status()).toBe(200);
  expect(await one.json()).toEqual(listed.accounts[0]);

  const credentials = await get(page.request, `/api/v1/accounts/${accountId}/credentials`, key);
  expect(credentials.status()).toBe(200);
  const body = await credentials.json();
  expect(body).toMatchObject({ account_id: accountId, provider: "flameconnect", name: FLAME.email });
  expect(body.credentials.access_token).toEqual(expect.any(String));

  // The proxy calls FlameConnect's own API with that token; the app never sends one. The
  // account's page tells it in its activity.
  const fires = await page.request.get(`/api/v1/accounts/${accountId}/proxy/api/Fires/GetFires`, {
    headers: { Authorization: `Bearer ${key}`, app_name: "FlameConnect", Cookie: "stepgate_session=app" },
  });
  expect(fires.status()).toBe(200);
  expect(fires.headers()["set-cookie"]).toBeUndefined();
  expect(await fires.json()).toEqual(expect.arrayContaining([expect.objectContaining({ FriendlyName: "Living room" })]));
  const elsewhere = await page.request.get(`/api/v1/accounts/${accountId}/proxy/api/Fires/GetFires`, {
    headers: { Authorization: `Bearer ${key}`, "Stepgate-Origin": "https://example.org" },
  });
  expect(elsewhere.status()).toBe(403);
  expect(elsewhere.headers()["stepgate-error"]).toBe("proxy_not_allowed");
  await page.goto(`/accounts/account?id=${accountId}`);
  await expect(page.getByText("Provider API called through Stepgate with API key “Home app”.")).toBeVisible();

  await page.goto("/settings/api-keys");
  await page.reload();
  await expect(row.locator("td.key-used")).toHaveText(/^\d{4}-\d\d-\d\d \d\d:\d\d UTC$/);

  // A key without the account in scope, a wrong key, no key.
  const unscoped = await createKey(page, "Nothing", []);
  const refused = await get(page.request, `/api/v1/accounts/${accountId}/credentials`, unscoped);
  expect(refused.status()).toBe(403);
  expect((await refused.json()).code).toBe("account_not_in_scope");
  expect(await (await get(page.request, "/api/v1/accounts", unscoped)).json()).toEqual({ accounts: [] });
  const wrong = await get(page.request, "/api/v1/accounts", key.slice(0, -4) + "0000");
  expect(wrong.status()).toBe(401);
  expect(await wrong.json()).toMatchObject({ code: "invalid_api_key" });
  expect((await get(page.request, "/api/v1/accounts")).status()).toBe(401);

  // Revoked on the page: refused from then on.
  await page.goto("/settings/api-keys");
  await page.getByRole("button", { name: "Revoke key Home app" }).click();
  await expect(page.getByRole("status").filter({ hasText: "Key revoked." })).toBeVisible();
  await expect(page.getByRole("row", { name: /Home app/ })).toHaveCount(0);
  const revoked = await get(page.request, `/api/v1/accounts/${accountId}/credentials`, key);
  expect(revoked.status()).toBe(401);
  expect((await revoked.json()).code).toBe("invalid_api_key");
  // The page and its script run under the strict Content-Security-Policy.
  expect(violations).toEqual([]);
});

test("a key without a name is refused on the page", async ({ page }) => {
  await register(page, uniqueEmail("apikeys-name"), PASSWORD);
  await page.goto("/settings/api-keys");
  await page.getByLabel("Key name").fill("   ");
  await clickConfirmingFirst(page, () => page.getByRole("button", { name: "Create key" }), PASSWORD);
  await expect(page.getByRole("alert")).toContainText("Please fill in every field.");
  await expect(page.getByLabel("New API key")).toHaveCount(0);
});

test("creating a key asks for the password first, and the form comes back as it was", async ({ page }) => {
  await register(page, uniqueEmail("apikeys-sudo"), PASSWORD);
  const accountId = await connectFlameConnect(page);
  const label = `FlameConnect ${FLAME.email}`;
  await page.goto("/settings/api-keys");
  await page.getByLabel("Key name").fill("Garage display");
  await page.getByLabel(label).check();
  await expect(page.getByLabel("Expires after")).toHaveValue("90");
  await page.getByLabel("Expires after").selectOption("30");
  await page.getByRole("button", { name: "Create key" }).click();

  // Signing in is not a confirmation: the password first, and nothing is created yet.
  await expect(page).toHaveURL(/\/settings\/confirm\?next=/);
  await expect(page.getByRole("heading", { name: "Confirm it's you" })).toBeVisible();
  await page.getByLabel("Password", { exact: true }).fill("not-my-password-at-all");
  await page.getByRole("button", { name: "Confirm" }).click();
  await expect(page.getByRole("alert")).toHaveText("That is not your current password.");
  await page.getByLabel("Password", { exact: true }).fill(PASSWORD);
  await page.getByRole("button", { name: "Confirm" }).click();

  // Back on the form, filled in as it was; one more click creates the key.
  await expect(page).toHaveURL(/\/settings\/api-keys\?.*confirmed=1/);
  await expect(page.getByRole("status").filter({ hasText: "Confirmed." })).toBeVisible();
  await expect(page.getByLabel("Key name")).toHaveValue("Garage display");
  await expect(page.getByLabel(label)).toBeChecked();
  await expect(page.getByLabel("Expires after")).toHaveValue("30");
  await expect(page.getByRole("row", { name: /Garage display/ })).toHaveCount(0);
  await page.getByRole("button", { name: "Create key" }).click();
  await expect(page).toHaveURL(/\/settings\/api-keys\?created=1$/);
  const key = await page.getByLabel("New API key").inputValue();
  expect((await get(page.request, `/api/v1/accounts/${accountId}/credentials`, key)).status()).toBe(200);
  // The list says when it expires: 30 days from now.
  const expires = await page.getByRole("row", { name: /Garage display/ }).locator("td.key-expires").innerText();
  const days = (Date.parse(expires.replace(" UTC", "Z").replace(" ", "T")) - Date.now()) / 86_400_000;
  expect(days).toBeGreaterThan(29.9);
  expect(days).toBeLessThan(30.1);

  // Within the ten minutes a second key needs no new confirmation.
  await page.getByLabel("Key name").fill("Second");
  await page.getByRole("button", { name: "Create key" }).click();
  await expect(page).toHaveURL(/\/settings\/api-keys\?created=1$/);
  await expect(page.getByRole("row", { name: /Second/ })).toHaveCount(1);
});

test("each key is rate limited", async ({ page }) => {
  await register(page, uniqueEmail("apikeys-rate"), PASSWORD);
  const key = await createKey(page, "Busy", []);
  const answers = await Promise.all(Array.from({ length: 40 }, () => get(page.request, "/api/v1/accounts", key)));
  const limited = answers.filter((a) => a.status() === 429);
  expect(limited.length).toBeGreaterThan(0);
  expect(Number(limited[0].headers()["retry-after"])).toBeGreaterThanOrEqual(1);
  expect((await limited[0].json()).code).toBe("rate_limited");
});

test("the OpenAPI document is served and names every path, with the accounts' health", async ({ request }) => {
  const answer = await request.get("/api/v1/openapi.json");
  expect(answer.status()).toBe(200);
  const doc = await answer.json();
  expect(doc.openapi).toMatch(/^3\./);
  expect(Object.keys(doc.paths)).toEqual(
    expect.arrayContaining([
      "/api/v1/accounts",
      "/api/v1/accounts/{id}",
      "/api/v1/accounts/{id}/credentials",
      "/api/v1/accounts/{id}/proxy/{path}",
      "/api/v1/accounts/{id}/sign-in-link",
    ]),
  );
  expect(Object.keys(doc.components.schemas.Account.properties)).toEqual(
    expect.arrayContaining(["status", "last_renewed_at", "next_renewal_at", "last_error"]),
  );
});
