// Prometheus metrics (STEPGATE_METRICS_ADDR) on a server of the test's own, so the counters move
// only by what this test does: a sign-in, wrong passwords up to the throttle, a FlameConnect
// connect and a renewal (the proxy's 401 renews the account), scraped from the metrics port
// and parsed here. The app's own port serves no /metrics.
import { expect, test, type APIRequestContext, type Page } from "@playwright/test";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { doubles } from "../playwright.config";
import { clickConfirmingFirst, register, signOut, uniqueEmail } from "./helpers";
import { startOwnServer, stopOwnServer } from "./own-server";

const base = Number(process.env.STEPGATE_E2E_PORT ?? 3300);
const port = Number(process.env.STEPGATE_E2E_METRICS_APP_PORT ?? base + 23);
const metricsPort = Number(process.env.STEPGATE_E2E_METRICS_PORT ?? base + 24);
const PASSWORD = "metrics-pass-1-quiet-harbor";
const FLAME = { email: "demo@flameconnect.test", password: "flame-demo" };

type Sample = { name: string; labels: Record<string, string>; value: number };

/** The Prometheus text format's sample lines (comments and blank lines skipped). */
function parse(text: string): Sample[] {
  const samples: Sample[] = [];
  for (const line of text.split("\n")) {
    if (line.trim() === "" || line.startsWith("#")) continue;
    const m = line.match(/^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+-?\d+)?$/);
    if (!m) throw new Error(`not a Prometheus sample line: ${line}`);
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? "").matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) {
      labels[l[1]] = l[2].replace(/\\(.)/g, (_, c: string) => (c === "n" ? "\n" : c));
    }
    samples.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return samples;
}

class Scrape {
  constructor(readonly samples: Sample[]) {}

  /** The sum of the series named `name` that carry every label in `labels` (0 when none). */
  value(name: string, labels: Record<string, string> = {}): number {
    return this.samples
      .filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))
      .reduce((sum, s) => sum + s.value, 0);
  }
}

async function scrape(request: APIRequestContext): Promise<Scrape> {
  const answer = await request.get(`http://127.0.0.1:${metricsPort}/metrics`);
  expect(answer.status()).toBe(200);
  expect(answer.headers()["content-type"]).toContain("text/plain");
  return new Scrape(parse(await answer.text()));
}

/** Calls the sign-in server function as the browser's WebAssembly does (JSON back). */
function signInCall(page: Page, email: string, password: string) {
  return page.request.post("/api/sign_in", { form: { email, password }, headers: { accept: "application/json" } });
}

test("the metrics port counts a sign-in, a throttled try, a connect and a renewal", async ({ browser }) => {
  test.setTimeout(120_000);
  expect(metricsPort).not.toBe(port);
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "stepgate-metrics-"));
  const server = await startOwnServer(port, dataDir, { STEPGATE_METRICS_ADDR: `127.0.0.1:${metricsPort}` });
  const context = await browser.newContext({ baseURL: `http://127.0.0.1:${port}` });
  try {
    const page = await context.newPage();
    const request = page.request;
    // Not on the app's port.
    expect((await request.get("/metrics")).status()).toBe(404);

    const email = uniqueEmail("metrics");
    await register(page, email, PASSWORD);
    await signOut(page);

    // A sign-in with the right password.
    let before = await scrape(request);
    expect((await signInCall(page, email, PASSWORD)).ok()).toBe(true);
    let after = await scrape(request);
    const signIns = (s: Scrape, outcome: string) => s.value("stepgate_sign_ins_total", { outcome });
    expect(signIns(after, "ok") - signIns(before, "ok")).toBe(1);
    expect(after.value("stepgate_password_hash_queue_wait_seconds_count")).toBeGreaterThan(
      before.value("stepgate_password_hash_queue_wait_seconds_count"),
    );
    await signOut(page);

    // Wrong passwords until the account is throttled (the third failure starts a wait).
    before = await scrape(request);
    let wrong = 0;
    let throttled = 0;
    for (let i = 0; i < 10 && throttled === 0; i++) {
      const status = (await signInCall(page, email, "not-the-password")).status();
      if (status === 429) throttled++;
      else {
        expect(status).toBe(400);
        wrong++;
      }
    }
    expect(throttled).toBe(1);
    after = await scrape(request);
    expect(signIns(after, "wrong_password") - signIns(before, "wrong_password")).toBe(wrong);
    expect(signIns(after, "throttled") - signIns(before, "throttled")).toBe(1);
    expect(signIns(after, "ok") - signIns(before, "ok")).toBe(0);
    // Wait out the throttle, then sign in for the rest of the test.
    await expect
      .poll(async () => (await signInCall(page, email, PASSWORD)).status(), { timeout: 15_000, intervals: [1000] })
      .toBe(200);

    // Connect FlameConnect: a flow started and completed, its upstream requests counted and timed.
    before = await scrape(request);
    await page.goto("/accounts/connect/flameconnect");
    await page.getByLabel("Email").fill(FLAME.email);
    await page.getByLabel("Password").fill(FLAME.password);
    await page.getByRole("button", { name: "Connect", exact: true }).click();
    await expect(page).toHaveURL(/\/accounts\?connected=\d+$/);
    const accountId = new URL(page.url()).searchParams.get("connected")!;
    after = await scrape(request);
    const flame = { provider: "flameconnect", purpose: "connect" };
    expect(after.value("stepgate_flows_started_total", flame) - before.value("stepgate_flows_started_total", flame)).toBe(1);
    expect(after.value("stepgate_flows_completed_total", flame) - before.value("stepgate_flows_completed_total", flame)).toBe(1);
    expect(after.value("stepgate_flows_failed_total", flame) - before.value("stepgate_flows_failed_total", flame)).toBe(0);
    const upstream = { provider: "flameconnect", step: "start" };
    const requests = after.value("stepgate_upstream_requests_total", upstream) - before.value("stepgate_upstream_requests_total", upstream);
    expect(requests).toBeGreaterThan(0);
    const timed =
      after.value("stepgate_upstream_request_duration_seconds_count", upstream) -
      before.value("stepgate_upstream_request_duration_seconds_count", upstream);
    expect(timed).toBe(requests);
    expect(after.value("stepgate_upstream_request_duration_seconds_bucket", { ...upstream, le: "+Inf" })).toBe(
      after.value("stepgate_upstream_request_duration_seconds_count", upstream),
    );
    expect(after.value("stepgate_upstream_request_duration_seconds_sum", upstream)).toBeGreaterThan(0);

    // A renewal: FlameConnect's API stops taking the token it gave, so the proxy's 401 renews
    // the account (by its refresh token) and asks again.
    await page.goto("/settings/api-keys");
    await page.getByLabel("Key name").fill("Metrics");
    await page.getByLabel(`FlameConnect ${FLAME.email}`).check();
    await clickConfirmingFirst(page, () => page.getByRole("button", { name: "Create key" }), PASSWORD);
    const key = await page.getByLabel("New API key").inputValue();
    before = await scrape(request);
    const invalidated = await request.post(`http://${doubles.flameconnectApi}/testing/invalidate-api-tokens`);
    expect(invalidated.ok()).toBe(true);
    const fires = await request.get(`/api/v1/accounts/${accountId}/proxy/api/Fires/GetFires`, {
      headers: { Authorization: `Bearer ${key}` },
    });
    expect(fires.status()).toBe(200);
    after = await scrape(request);
    const renewed = { provider: "flameconnect", outcome: "renewed" };
    expect(after.value("stepgate_renewals_total", renewed) - before.value("stepgate_renewals_total", renewed)).toBe(1);
    // The API request by its route template, never its path with the account's id.
    const proxyRoute = { route: "/api/v1/accounts/{id}/proxy/{*path}", status: "200" };
    expect(after.value("stepgate_api_requests_total", proxyRoute) - before.value("stepgate_api_requests_total", proxyRoute)).toBe(1);
    expect(after.samples.filter((s) => (s.labels.route ?? "").includes(`/accounts/${accountId}`))).toEqual([]);

    // The accounts gauge is counted again every 30 s.
    await expect
      .poll(async () => (await scrape(request)).value("stepgate_accounts", { status: "active" }), {
        timeout: 45_000,
        intervals: [2000],
      })
      .toBe(1);
  } finally {
    await context.close();
    await stopOwnServer(server);
    fs.rmSync(dataDir, { recursive: true, force: true });
  }
});
