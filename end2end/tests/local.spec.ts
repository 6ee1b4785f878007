// The `local` provider: Stepgate's own accounts (register, sign in, sign out).
import { expect, test } from "@playwright/test";
import * as fs from "node:fs";
import * as path from "node:path";
import { DEMO, INVALID_AUTH, register, signIn, uniqueEmail, waitForHydration } from "./helpers";

test("register, sign out, sign in: home shows the email", async ({ page }) => {
  const email = uniqueEmail("roundtrip");
  await register(page, email, "correct-horse-1-quiet-harbor");

  await page.getByRole("button", { name: "Sign out" }).click();
  await expect(page).toHaveURL(/\/login$/);

  await signIn(page, email, "correct-horse-1-quiet-harbor");
  await expect(page).toHaveURL(/\/$/);
  await expect(page.getByText(`Signed in as ${email}`)).toBeVisible();
});

test("the demo account from the README signs in", async ({ page }) => {
  await signIn(page, DEMO.email, DEMO.password);
  await expect(page.getByText(`Signed in as ${DEMO.email}`)).toBeVisible();
});

test("a wrong password shows the alert and keeps the email", async ({ page }) => {
  const email = uniqueEmail("wrongpw");
  await register(page, email, "correct-horse-1-quiet-harbor");
  await page.getByRole("button", { name: "Sign out" }).click();
  await expect(page).toHaveURL(/\/login$/);
  await waitForHydration(page);

  await page.getByLabel("Email").fill(email);
  await page.getByLabel("Password").fill("wrong-horse-1");
  await page.getByRole("button", { name: "Sign in" }).click();
  await expect(page.getByRole("alert")).toHaveText(INVALID_AUTH);
  await expect(page).toHaveURL(/\/login(\?.*)?$/);
  await expect(page.getByLabel("Email")).toHaveValue(email);

  // Retrying with the right password works from the same form.
  await page.getByLabel("Password").fill("correct-horse-1-quiet-harbor");
  await page.getByRole("button", { name: "Sign in" }).click();
  await expect(page.getByText(`Signed in as ${email}`)).toBeVisible();
});

test("an unknown user gets exactly the wrong-password message", async ({ page }) => {
  await signIn(page, uniqueEmail("nobody"), "whatever-it-is");
  await expect(page.getByRole("alert")).toHaveText(INVALID_AUTH);
});

test("the button shows a busy state while the server works", async ({ page }) => {
  await page.goto("/login");
  // Hold the form where the server would be working: a listener added after public/forms.js
  // stops the navigation, so the page can be read in that state.
  // On window: it runs after forms.js's listener on document, whatever loaded first.
  await page.evaluate(() => window.addEventListener("submit", (e) => e.preventDefault()));
  await page.getByLabel("Email").fill(DEMO.email);
  await page.getByLabel("Password").fill(DEMO.password);
  await page.getByRole("button", { name: "Sign in" }).click();
  const busy = page.getByRole("button", { name: "Signing in…" });
  await expect(busy).toBeDisabled();
  await expect(page.locator("form")).toHaveAttribute("aria-busy", "true");
  // And the form is a real one: without the hold it signs in.
  await page.reload();
  await page.getByLabel("Email").fill(DEMO.email);
  await page.getByLabel("Password").fill(DEMO.password);
  await page.getByRole("button", { name: "Sign in" }).click();
  await expect(page.getByText(`Signed in as ${DEMO.email}`)).toBeVisible();
});

test("signed-out visitors are sent to /login", async ({ page }) => {
  const response = await page.request.get("/", { headers: { accept: "text/html" }, maxRedirects: 0 });
  expect(response.status()).toBe(302);
  expect(response.headers()["location"]).toBe("/login");
  await page.goto("/");
  await expect(page).toHaveURL(/\/login$/);
});

test("registration refuses a short or guessable password in words, keeping the email", async ({ page }) => {
  const email = uniqueEmail("weak");
  await page.goto("/register");
  await page.getByLabel("Email").fill(email);
  // Eleven characters: the browser's own minlength check stops the form; the server refuses too.
  const short = await page.request.post("/api/register", {
    form: { email, password: "Xq7#pL9!vR2", confirm_password: "Xq7#pL9!vR2" },
    headers: { accept: "application/json" },
  });
  expect(short.status()).toBe(400);
  expect((await short.json()).code).toBe("password_too_short");

  await page.getByLabel("Password", { exact: true }).fill("password1234");
  await page.getByLabel("Confirm password").fill("password1234");
  await page.getByRole("button", { name: "Create account" }).click();
  const alert = page.getByRole("alert");
  await expect(alert).toContainText("This password is too easy to guess.");
  // zxcvbn's advice is shown under our sentence.
  await expect(alert).toContainText(/common|word/i);
  await expect(page.getByLabel("Email")).toHaveValue(email);

  await register(page, email, "password1234-quiet-harbor");
});

test("registration refuses mismatched passwords and an existing email", async ({ page }) => {
  const email = uniqueEmail("dupe");
  await page.goto("/register");
  await waitForHydration(page);
  await page.getByLabel("Email").fill(email);
  await page.getByLabel("Password", { exact: true }).fill("password-one-quiet-harbor");
  await page.getByLabel("Confirm password").fill("password-two-quiet-harbor");
  await page.getByRole("button", { name: "Create account" }).click();
  await expect(page.getByRole("alert")).toHaveText("The two passwords are not the same.");
  await expect(page.getByLabel("Email")).toHaveValue(email);

  // Nothing was written: the same email registers fine afterwards.
  await register(page, email, "password-one-quiet-harbor");
  await page.getByRole("button", { name: "Sign out" }).click();
  await expect(page).toHaveURL(/\/login$/);

  await page.goto("/register");
  await waitForHydration(page);
  await page.getByLabel("Email").fill(email.toUpperCase());
  await page.getByLabel("Password", { exact: true }).fill("password-two-quiet-harbor");
  await page.getByLabel("Confirm password").fill("password-two-quiet-harbor");
  await page.getByRole("button", { name: "Create account" }).click();
  await expect(page.getByRole("alert")).toHaveText("An account with this email already exists. Sign in instead.");
});

test("the session cookie is HttpOnly, SameSite=Lax, renewed at sign-in and ended at sign-out", async ({
  page,
  context,
  playwright,
  baseURL,
}) => {
  // Replays go through a separate client with an empty cookie jar, so only the header we set counts.
  const api = await playwright.request.newContext({ baseURL });
  const homeWith = (value: string) =>
    api.get("/", { headers: { accept: "text/html", cookie: `stepgate_session=${value}` }, maxRedirects: 0 });
  const email = uniqueEmail("cookie");
  await register(page, email, "cookie-pass-1-quiet-harbor");
  const first = (await context.cookies()).find((c) => c.name === "stepgate_session");
  expect(first).toBeDefined();
  expect(first!.httpOnly).toBe(true);
  expect(first!.sameSite).toBe("Lax");
  expect(first!.value).toMatch(/^[0-9a-f]{64}$/);

  // Signing in again while signed in issues a new id and ends the old one.
  await signIn(page, email, "cookie-pass-1-quiet-harbor");
  await expect(page.getByText(`Signed in as ${email}`)).toBeVisible();
  // The live cookie opens the home page (so the 302s below mean something).
  const live = (await context.cookies()).find((c) => c.name === "stepgate_session")!;
  expect((await homeWith(live.value)).status()).toBe(200);
  const second = (await context.cookies()).find((c) => c.name === "stepgate_session");
  expect(second!.value).not.toBe(first!.value);

  await page.getByRole("button", { name: "Sign out" }).click();
  await expect(page).toHaveURL(/\/login$/);
  expect((await context.cookies()).find((c) => c.name === "stepgate_session")).toBeUndefined();

  // The old cookie, replayed, no longer opens the home page: sign-out deleted it server-side.
  for (const old of [first!, second!]) {
    expect((await homeWith(old.value)).status()).toBe(302);
  }
  await api.dispose();
});

test("behind an https proxy the cookie is Secure with the __Host- prefix", async ({ playwright, baseURL }) => {
  const api = await playwright.request.newContext({ baseURL });
  const res = await api.post("/api/sign_in", {
    headers: { accept: "text/html", "x-forwarded-proto": "https", referer: `${baseURL}/login` },
    form: { email: DEMO.email, password: DEMO.password },
    maxRedirects: 0,
  });
  expect(res.status()).toBe(302);
  const cookie = res.headers()["set-cookie"];
  expect(cookie).toMatch(/^__Host-stepgate_session=[0-9a-f]{64}; Path=\/; HttpOnly; SameSite=Lax; Secure; /);
  await api.dispose();
});

test("a sign-in posted from another site is refused before it reaches the server function", async ({
  playwright,
  baseURL,
}) => {
  const api = await playwright.request.newContext({ baseURL });
  const post = (origin: string) =>
    api.post("/api/sign_in", {
      headers: { accept: "text/html", origin, referer: `${baseURL}/login` },
      form: { email: DEMO.email, password: DEMO.password },
      maxRedirects: 0,
    });
  const foreign = await post("https://evil.test");
  expect(foreign.status()).toBe(403);
  expect(foreign.headers()["set-cookie"]).toBeUndefined();
  expect((await post(new URL(baseURL!).origin)).status()).toBe(302);
  await api.dispose();
});

test("the WebAssembly bundle is sent compressed", async ({ page }) => {
  // Its name carries a content hash (hash-files): take it from the built site.
  const pkg = path.join(__dirname, "..", "..", "target", "site", "pkg");
  const wasm = fs.readdirSync(pkg).find((f) => /^stepgate\..+\.wasm$/.test(f))!;
  const res = await page.request.get(`/pkg/${wasm}`, { headers: { "accept-encoding": "br, gzip" } });
  expect(res.ok()).toBe(true);
  expect(["br", "gzip"]).toContain(res.headers()["content-encoding"]);
});

test.describe("without JavaScript", () => {
  test.use({ javaScriptEnabled: false });

  test("registration, sign-out and sign-in work as plain form posts", async ({ page }) => {
    const email = uniqueEmail("nojs");
    await register(page, email, "no-script-pass-quiet-harbor");
    await page.getByRole("button", { name: "Sign out" }).click();
    await expect(page).toHaveURL(/\/login$/);
    await signIn(page, email, "no-script-pass-quiet-harbor");
    await expect(page).toHaveURL(/\/$/);
    await expect(page.getByText(`Signed in as ${email}`)).toBeVisible();
  });

  test("a wrong password still shows the alert", async ({ page }) => {
    await signIn(page, DEMO.email, "not-the-password");
    await expect(page.getByRole("alert")).toHaveText(INVALID_AUTH);
  });
});
