// The sign-in surface as an attacker and a slow phone see it: first-factor throttling, honest
// HTTP statuses, the Content-Security-Policy the app really runs under, and no dead clicks.
import { expect, test, type Page } from "@playwright/test";
import { scaledOut } from "../playwright.config";
import * as http from "node:http";
import {
  DEMO,
  SANDBOX,
  enrollThroughProvider,
  nextTotpStep,
  openProviderPopup,
  passwordStep,
  register,
  registerWithAppTotp,
  signOut,
  uniqueEmail,
  waitForHydration,
} from "./helpers";

const JSON_CALL = { accept: "application/json" };

// The test server trusts X-Forwarded-For (STEPGATE_TRUST_PROXY, as behind a proxy), so each test
// signs in from an address of its own and the per-address counters of one test never reach
// another's.
function randomAddress(): string {
  const byte = () => Math.floor(Math.random() * 254) + 1;
  return `10.${byte()}.${byte()}.${byte()}`;
}

test.beforeEach(async ({ page }) => {
  await page.context().setExtraHTTPHeaders({ "x-forwarded-for": randomAddress() });
});

/** Calls a server function the way the browser's WebAssembly does (form-encoded, JSON back). */
async function call(page: Page, name: string, form: Record<string, string>, headers: Record<string, string> = {}) {
  return page.request.post(`/api/${name}`, { form, headers: { ...JSON_CALL, ...headers } });
}

/**
 * The server counts in whole seconds: a burst that straddles a second boundary could see a
 * one-second wait already over. Starting early in a second keeps a quick burst inside one.
 */
async function startOfASecond(): Promise<void> {
  while (Date.now() % 1000 > 150) await new Promise((r) => setTimeout(r, 20));
}

test.describe("first-factor throttling", () => {
  test("a burst of wrong passwords shows the wait, and the right password works after it", async ({ page }) => {
    test.setTimeout(90_000);
    const email = uniqueEmail("burst");
    await register(page, email, "right-horse-1-quiet-harbor");
    await signOut(page);

    // An attacker's burst, each try sent as soon as the last wait allows: 1 s, 2 s, 4 s...
    let wrong = 0;
    while (wrong < 6) {
      const answer = await call(page, "sign_in", { email, password: "wrong-horse-1" });
      if (answer.status() === 429) {
        await page.waitForTimeout(Number(answer.headers()["retry-after"]) * 1000);
      } else {
        expect(answer.status()).toBe(400);
        wrong++;
      }
    }

    // The owner arrives now: the right password is not even checked, and the page says why
    // (a plain form post: the API's 429 is tested below).
    await page.goto("/login");
    await page.getByLabel("Email").fill(email);
    await page.getByLabel("Password").fill("right-horse-1-quiet-harbor");
    await page.getByRole("button", { name: "Sign in" }).click();
    const alert = page.getByRole("alert");
    await expect(alert).toHaveText(/^Too many failed sign-ins\. Try again in \d+ seconds\.$/);
    const retryAfter = Number((await alert.textContent())!.match(/\d+/)![0]);
    expect(retryAfter).toBeGreaterThan(1);
    expect(retryAfter).toBeLessThanOrEqual(8);
    await expect(page.getByLabel("Email")).toHaveValue(email);

    await page.waitForTimeout(retryAfter * 1000 + 300);
    await page.getByLabel("Password").fill("right-horse-1-quiet-harbor");
    await page.getByRole("button", { name: "Sign in" }).click();
    await expect(page.getByText(`Signed in as ${email}`)).toBeVisible();
  });

  test("an unknown email is throttled exactly like a real account", async ({ page }) => {
    const burst = async (email: string) => {
      await startOfASecond();
      const answers = await Promise.all(
        Array.from({ length: 8 }, () => call(page, "sign_in", { email, password: "not-the-password" })),
      );
      return answers.map((a) => a.status()).sort();
    };
    const real = uniqueEmail("real");
    await register(page, real, "right-horse-1-quiet-harbor");
    await signOut(page);
    const expected = [400, 400, 400, 429, 429, 429, 429, 429];
    expect(await burst(real)).toEqual(expected);
    expect(await burst(uniqueEmail("ghost"))).toEqual(expected);
  });
});

test("an address that fails against many accounts is slowed; other addresses are not", async ({ page }) => {
  const address = randomAddress();
  const from = (a: string) => ({ "x-forwarded-for": a });
  for (let i = 0; i < 20; i++) {
    const answer = await call(page, "sign_in", { email: uniqueEmail(`spray${i}`), password: "Summer2026!" }, from(address));
    expect(answer.status()).toBe(400);
  }
  // The 20th failure starts a 1 s wait, doubling after each further one. The server counts in
  // whole seconds, so a try right at a second's edge may still be checked: by the third extra
  // try at the latest the address must be refused.
  const next = uniqueEmail("spray-next");
  const extra: number[] = [];
  for (let i = 0; i < 3 && !extra.includes(429); i++) {
    extra.push((await call(page, "sign_in", { email: next, password: "Summer2026!" }, from(address))).status());
  }
  expect(extra).toContain(429);
  expect(extra.filter((s) => s === 400).length).toBeLessThanOrEqual(1);
  expect((await call(page, "sign_in", { email: uniqueEmail("elsewhere"), password: "Summer2026!" }, from(randomAddress()))).status()).toBe(400);
});

test.describe("HTTP statuses", () => {
  test("400: refused input", async ({ page }) => {
    const bad = await call(page, "sign_in", { email: "not-an-email", password: "x" });
    expect(bad.status()).toBe(400);
    expect(await bad.json()).toEqual({ code: "invalid_email" });
    const long = await call(page, "register", {
      email: uniqueEmail("long"),
      password: "p".repeat(2000),
      confirm_password: "p".repeat(2000),
    });
    expect(long.status()).toBe(400);
    expect(await long.json()).toEqual({ code: "field_too_long" });
  });

  test("401: not signed in", async ({ page }) => {
    const answer = await call(page, "security_status", {});
    expect(answer.status()).toBe(401);
    expect(await answer.json()).toEqual({ code: "not_signed_in" });
  });

  test("403: a POST from another site", async ({ page }) => {
    const answer = await call(page, "sign_in", { email: DEMO.email, password: DEMO.password }, {
      origin: "https://evil.example",
    });
    expect(answer.status()).toBe(403);
    expect(await answer.json()).toEqual({ code: "cross_site_request" });
  });

  test("410: a sign-in flow that is gone, as an API answer and as a page", async ({ page }) => {
    const answer = await call(page, "verify_code", { flow_id: "0".repeat(32), code: "123456" });
    expect(answer.status()).toBe(410);
    expect(await answer.json()).toEqual({ code: "flow_expired" });
    const shown = await page.goto(`/login/code?flow=${"0".repeat(32)}`);
    expect(shown!.status()).toBe(410);
    await expect(page.getByRole("alert")).toHaveText(
      "This sign-in took too long and has expired. Please start again.",
    );
  });

  test("413: a body over the limit is refused", async ({ page }) => {
    const answer = await page.request.post("/api/sign_in", {
      headers: { ...JSON_CALL, "content-type": "application/x-www-form-urlencoded" },
      data: "email=" + "a".repeat(64 * 1024),
    });
    expect(answer.status()).toBe(413);
    expect(await answer.json()).toEqual({ code: "request_too_large" });
  });

  test("413: a 20 MB body is refused before it is sent (Expect: 100-continue)", async ({ baseURL }) => {
    const size = 20 * 1024 * 1024;
    const { status, body, sent } = await new Promise<{ status: number; body: string; sent: boolean }>((resolve, reject) => {
      let sent = false;
      const request = http.request(`${baseURL}/api/sign_in`, {
        method: "POST",
        headers: {
          ...JSON_CALL,
          "content-type": "application/x-www-form-urlencoded",
          "content-length": size,
          expect: "100-continue",
        },
      });
      request.on("continue", () => {
        sent = true;
        request.end(Buffer.alloc(size, "a"));
      });
      request.on("response", (response) => {
        let body = "";
        response.on("data", (chunk) => (body += chunk));
        response.on("end", () => resolve({ status: response.statusCode!, body, sent }));
      });
      request.on("error", reject);
    });
    expect(status).toBe(413);
    expect(JSON.parse(body)).toEqual({ code: "request_too_large" });
    expect(sent).toBe(false);
  });

  test("429: throttled, with Retry-After", async ({ page }) => {
    const email = uniqueEmail("api-throttle");
    await startOfASecond();
    for (let i = 0; i < 3; i++) {
      expect((await call(page, "sign_in", { email, password: "wrong-horse" })).status()).toBe(400);
    }
    // The fourth try falls in the 1 s wait the third started, unless a loaded machine took
    // longer than that for it; then the next falls in the 2 s wait, and so on, doubling.
    let answer = await call(page, "sign_in", { email, password: "wrong-horse" });
    for (let extra = 0; answer.status() === 400 && extra < 3; extra++) {
      answer = await call(page, "sign_in", { email, password: "wrong-horse" });
    }
    expect(answer.status()).toBe(429);
    const body = await answer.json();
    expect(body.code).toBe("sign_in_throttled");
    expect(answer.headers()["retry-after"]).toBe(String(body.retry_after));
  });
});

test.describe("browser security headers", () => {
  test("pages carry a strict CSP, keep popups and are not stored; fingerprinted assets are immutable", async ({ page }) => {
    const response = (await page.goto("/login"))!;
    const headers = response.headers();
    const csp = headers["content-security-policy"];
    expect(csp).toContain("default-src 'none'");
    expect(csp).toMatch(/script-src 'self' 'nonce-[0-9a-f]{32}' 'wasm-unsafe-eval'/);
    expect(csp).toContain("frame-ancestors 'none'");
    expect(csp).toContain("form-action 'self'");
    expect(csp).not.toContain("unsafe-inline");
    expect(headers["cross-origin-opener-policy"]).toBe("same-origin-allow-popups");
    expect(headers["cache-control"]).toBe("no-store");
    expect(headers["strict-transport-security"]).toBeUndefined();

    // Each page gets its own nonce.
    const again = (await page.request.get("/login")).headers()["content-security-policy"];
    expect(again).not.toBe(csp);

    const assets = await page.evaluate(() =>
      performance.getEntriesByType("resource").map((e) => e.name).filter((n) => n.includes("/pkg/")),
    );
    expect(assets.length).toBeGreaterThan(0);
    for (const asset of assets) {
      expect(new URL(asset).pathname).toMatch(/\/pkg\/stepgate\.[^.]+\.(js|wasm|css)$/);
      const cached = await page.request.get(asset);
      expect(cached.headers()["cache-control"]).toBe("public, max-age=31536000, immutable");
    }
    const icon = await page.request.get("/favicon.ico");
    expect(icon.status()).toBe(200);
  });

  test("over https (behind a proxy) pages add Strict-Transport-Security", async ({ page }) => {
    const answer = await page.request.get("/login", { headers: { "x-forwarded-proto": "https" } });
    expect(answer.headers()["strict-transport-security"]).toBe("max-age=63072000");
  });
});

/** Records CSP violations (and console errors) on every page of this browser context. */
async function watchForViolations(page: Page, appOrigin: string): Promise<string[]> {
  const seen: string[] = [];
  await page.context().exposeBinding("__reportCspViolation", (_source, text: string) => {
    seen.push(text);
  });
  await page.context().addInitScript(() => {
    document.addEventListener("securitypolicyviolation", (e) => {
      (window as any).__reportCspViolation(`${e.violatedDirective} ${e.blockedURI} at ${location.href}`);
    });
  });
  // Only our own pages count: the TOTP provider (here the sandbox) is someone else's site.
  page.context().on("console", (message) => {
    const where = message.location().url;
    if (message.type() === "error" && where.startsWith(appOrigin)) seen.push(`console: ${message.text()} (${where})`);
  });
  return seen;
}

test("every page runs under the CSP without a violation, and the popup sign-in still works", async ({ page, baseURL }) => {
  test.setTimeout(120_000);
  const violations = await watchForViolations(page, baseURL!);
  for (const path of ["/login", "/register"]) {
    await page.goto(path);
    await waitForHydration(page);
  }
  const email = await enrollThroughProvider(page);
  await page.getByRole("link", { name: "Back home" }).click();
  await expect(page.getByText(`Signed in as ${email}`)).toBeVisible();
  await signOut(page);

  await passwordStep(page, email);
  await nextTotpStep();
  const popup = await openProviderPopup(page);
  await expect(popup).toHaveURL(new RegExp(`^${SANDBOX}/`));
  await popup.getByRole("button", { name: "Send code to Stepgate" }).click();
  await expect(page.getByText(`Signed in as ${email}`)).toBeVisible();

  await page.goto("/settings/security");
  await waitForHydration(page);
  await expect(page.getByText("Two-factor authentication is on.")).toBeVisible();
  for (const path of [
    "/accounts",
    "/accounts/connect",
    "/accounts/connect/librus",
    "/accounts/connect/xiaomi",
    "/accounts/connect/lynkco",
    "/accounts/connect/flameconnect",
    "/settings/api-keys",
    "/settings/webhooks",
  ]) {
    await page.goto(path);
    await expect(page.getByRole("heading", { level: 1 })).toBeVisible();
  }
  expect(violations).toEqual([]);
});

test.describe("no dead clicks before the page's script or WebAssembly runs", () => {
  const NOT_READY = "Available once the page has finished loading (needs JavaScript).";

  test("the TOTP popup button is disabled and says why until the page's script runs", async ({ page }) => {
    const { email } = await registerWithAppTotp(page, "deadclick");
    await signOut(page);
    // Hold the code page's script back, as a slow phone would.
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    await page.route("**/code-form.js", async (route) => {
      await held;
      await route.continue();
    });
    await page.goto("/login");
    await page.getByLabel("Email").fill(email);
    await page.getByLabel("Password").fill("totp-pass-1-quiet-harbor");
    await page.getByRole("button", { name: "Sign in" }).click();
    await expect(page).toHaveURL(/\/login\/code\?flow=/);
    const button = page.getByRole("button", { name: "Get code from TOTP provider" });
    await expect(button).toBeDisabled();
    await expect(button).toHaveAccessibleDescription(NOT_READY);
    // Typing the code works meanwhile: it is a plain form.
    await expect(page.getByLabel("Verification code")).toBeEditable();
    release();
    await expect(button).toBeEnabled();
    await expect(page.getByText(NOT_READY)).toHaveCount(0);
  });

  test("the security setup buttons are disabled and say why until the app runs", async ({ page }) => {
    await register(page, uniqueEmail("deadsetup"), "setup-pass-1-quiet-harbor");
    await page.route("**/pkg/*.wasm", (route) => route.abort());
    await page.goto("/settings/security");
    for (const name of ["Set up with TOTP provider", "Set up with an authenticator app"]) {
      const button = page.getByRole("button", { name });
      await expect(button).toBeDisabled();
      await expect(button).toHaveAccessibleDescription(NOT_READY);
    }
    await page.unroute("**/pkg/*.wasm");
    await page.reload();
    await waitForHydration(page);
    for (const name of ["Set up with TOTP provider", "Set up with an authenticator app"]) {
      await expect(page.getByRole("button", { name })).toBeEnabled();
    }
  });
});

test("a load balancer's health checks: live, and ready with each part named", async ({ request }) => {
  const live = await request.get("/health/live");
  expect(live.status()).toBe(200);
  expect(await live.json()).toEqual({ status: "live" });
  const ready = await request.get("/health/ready");
  expect(ready.status()).toBe(200);
  expect(ready.headers()["cache-control"]).toBe("no-store");
  expect(await ready.json()).toEqual({
    status: "ready",
    database: "ok",
    migrations: "ok",
    // Scaled out, the instances share Redis; on one SQLite instance there is none.
    redis: scaledOut ? "ok" : "not_used",
    shutting_down: false,
  });
});
