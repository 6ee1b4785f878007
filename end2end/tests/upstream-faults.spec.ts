// Nothing an upstream sends can hurt the server: against a sandbox and a Stepgate server of this
// spec's own (so its fault switches touch no other spec), each hostile answer (an endless body,
// a redirect to a loopback address, a redirect loop, a redirect over plain http://) at a sign-in
// step fails in words within the step deadline, the server's memory stays under 256 MiB, and the
// server still answers (the next sign-in connects).
import { expect, test, type Page } from "@playwright/test";
import { spawn, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { register, uniqueEmail } from "./helpers";

test.describe.configure({ mode: "serial" });

const root = path.resolve(__dirname, "..", "..");
const base = Number(process.env.STEPGATE_E2E_PORT ?? 3300) + 40;
const APP = `http://127.0.0.1:${base}`;
const SANDBOX_PORT = base + 10;
const host = (offset: number) => `127.0.0.1:${SANDBOX_PORT + offset}`;
const doubles = {
  librusApi: host(1),
  librusSynergia: host(2),
  xiaomiAccount: host(3),
  xiaomiSts: host(4),
  lynkcoB2c: host(5),
  lynkcoIam: host(6),
  flameconnect: host(7),
};
const upstreams = [
  `https://api.librus.pl=http://${doubles.librusApi}`,
  `https://synergia.librus.pl=http://${doubles.librusSynergia}`,
  `https://account.xiaomi.com=http://${doubles.xiaomiAccount}`,
  `https://sts.api.io.mi.com=http://${doubles.xiaomiSts}`,
  `https://login.lynkco.com=http://${doubles.lynkcoB2c}`,
  `https://iam-service-prod.westeurope.cloudapp.azure.com=http://${doubles.lynkcoIam}`,
  `https://gdhvb2cflameconnect.b2clogin.com=http://${doubles.flameconnect}`,
].join(" ");
/** STEPGATE_STEP_TIMEOUT of the server: one request; a whole step may take three times that. */
const STEP_TIMEOUT_S = 3;
const STEP_DEADLINE_MS = 3 * STEP_TIMEOUT_S * 1000;
const HOSTILE: [string, string][] = [
  ["endless", "The provider sent far more data than a sign-in needs"],
  ["loopback", "The provider redirected the sign-in somewhere Stepgate does not follow"],
  ["loop", "The provider redirected the sign-in somewhere Stepgate does not follow"],
  ["http", "The provider redirected the sign-in somewhere Stepgate does not follow"],
];

let sandbox: ChildProcess;
let server: ChildProcess;

async function waitFor(url: string): Promise<void> {
  for (let i = 0; i < 150; i++) {
    try {
      if ((await fetch(url)).status < 500) return;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`${url} did not come up`);
}

async function stop(child: ChildProcess | undefined): Promise<void> {
  if (!child || child.exitCode !== null) return;
  const exited = once(child, "exit");
  child.kill("SIGTERM");
  await exited;
}

/** The server process's resident memory, from /proc/PID/status, in MiB. */
function serverRssMib(): number {
  const status = fs.readFileSync(`/proc/${server.pid}/status`, "utf8");
  const kib = Number(/VmRSS:\s+(\d+)\s+kB/.exec(status)![1]);
  return kib / 1024;
}

test.beforeAll(async () => {
  test.setTimeout(90_000);
  sandbox = spawn(path.join(root, "target", "release", "sandbox"), [], {
    cwd: root,
    stdio: "ignore",
    env: {
      ...process.env,
      STEPGATE_SANDBOX_ADDR: host(0),
      STEPGATE_APP_ORIGIN: APP,
      STEPGATE_SANDBOX_LIBRUS_API_ADDR: doubles.librusApi,
      STEPGATE_SANDBOX_LIBRUS_SYNERGIA_ADDR: doubles.librusSynergia,
      STEPGATE_SANDBOX_XIAOMI_ACCOUNT_ADDR: doubles.xiaomiAccount,
      STEPGATE_SANDBOX_XIAOMI_STS_ADDR: doubles.xiaomiSts,
      STEPGATE_SANDBOX_LYNKCO_B2C_ADDR: doubles.lynkcoB2c,
      STEPGATE_SANDBOX_LYNKCO_IAM_ADDR: doubles.lynkcoIam,
      STEPGATE_SANDBOX_FLAMECONNECT_ADDR: doubles.flameconnect,
    },
  });
  await waitFor(`http://${doubles.flameconnect}/testing/faults`);
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "stepgate-upstream-faults-"));
  server = spawn(path.join(root, "target", "release", "stepgate"), [], {
    cwd: root,
    stdio: "ignore",
    env: {
      ...process.env,
      LEPTOS_SITE_ADDR: `127.0.0.1:${base}`,
      STEPGATE_DATA: dataDir,
      STEPGATE_KEY_FILE: path.join(dataDir, "secret.key"),
      STEPGATE_DEMO: "0",
      STEPGATE_REGISTRATION: "open",
      STEPGATE_TOTP_PROVIDER_URL: `http://${host(0)}`,
      STEPGATE_PUBLIC_URL: APP,
      STEPGATE_UPSTREAMS: upstreams,
      STEPGATE_STEP_TIMEOUT: String(STEP_TIMEOUT_S),
      // On SQLite of its own even when the suite runs scaled out: this spec is about the process.
      DATABASE_URL: "",
      STEPGATE_REDIS_URL: "",
    },
  });
  await waitFor(`${APP}/login`);
});

test.afterAll(async () => {
  await stop(server);
  await stop(sandbox);
});

test.use({ baseURL: APP });

async function setFault(page: Page, double: string, step: string, fault: string): Promise<void> {
  const answer = await page.request.post(`http://${double}/testing/faults`, { data: { step, fault } });
  expect(answer.ok(), await answer.text()).toBe(true);
}

async function clearFaults(page: Page): Promise<void> {
  for (const double of [doubles.lynkcoB2c, doubles.flameconnect, doubles.xiaomiAccount]) {
    await page.request.post(`http://${double}/testing/faults`, { data: { step: "all", fault: "none" } });
  }
}

/** Submits FlameConnect's first form; answers how long the step took (ms). */
async function connectFlameConnect(page: Page): Promise<number> {
  await page.goto("/accounts/connect/flameconnect");
  await page.getByLabel("Email").fill("demo@flameconnect.test");
  await page.getByLabel("Password").fill("flame-demo");
  const started = Date.now();
  await page.getByRole("button", { name: "Connect", exact: true }).click();
  await expect(page.getByRole("alert").or(page.getByRole("status").first())).toBeVisible({ timeout: STEP_DEADLINE_MS + 5_000 });
  return Date.now() - started;
}

/** Submits Lynk & Co's first form; answers how long the step took (ms). */
async function connectLynkco(page: Page): Promise<number> {
  await page.goto("/accounts/connect/lynkco");
  await page.getByLabel("Email").fill("demo@lynkco.test");
  await page.getByLabel("Password").fill("lynkco-demo");
  await page.getByLabel("VIN").fill("LYVXFEDC0KL123456");
  const started = Date.now();
  await page.getByRole("button", { name: "Connect", exact: true }).click();
  await expect(page.getByRole("alert").or(page.getByLabel("Verification code"))).toBeVisible({
    timeout: STEP_DEADLINE_MS + 5_000,
  });
  return Date.now() - started;
}

async function expectHealthy(page: Page): Promise<void> {
  expect(serverRssMib()).toBeLessThan(256);
  const login = await page.request.get(`${APP}/login`);
  expect(login.ok()).toBe(true);
}

test.beforeEach(async ({ page }) => {
  await clearFaults(page);
  await register(page, uniqueEmail("upstream-faults"), "correct-horse-battery-staple-17");
});

for (const [fault, words] of HOSTILE) {
  test(`FlameConnect: a hostile answer (${fault}) at authorize and at confirmed fails in words in time`, async ({ page }) => {
    test.setTimeout(60_000);
    for (const step of ["authorize", "confirmed"]) {
      await setFault(page, doubles.flameconnect, step, fault);
      const took = await connectFlameConnect(page);
      const alert = page.getByRole("alert");
      await expect(alert, `${fault} at ${step}`).toContainText(words);
      await expect(alert).not.toContainText("on our side");
      // No fallback: signing in on B2C's own page would meet the same answer.
      await expect(page.getByLabel("Redirect URL")).toHaveCount(0);
      expect(took, `${fault} at ${step}`).toBeLessThan(STEP_DEADLINE_MS);
      await expectHealthy(page);
      await clearFaults(page);
    }
  });
}

test("Lynk & Co: hostile answers at its GET steps fail in words in time", async ({ page }) => {
  test.setTimeout(90_000);
  for (const [fault, words] of HOSTILE) {
    for (const step of ["authorize", "confirmed"]) {
      await setFault(page, doubles.lynkcoB2c, step, fault);
      const took = await connectLynkco(page);
      await expect(page.getByRole("alert"), `${fault} at ${step}`).toContainText(words);
      expect(took, `${fault} at ${step}`).toBeLessThan(STEP_DEADLINE_MS);
      await expectHealthy(page);
      await clearFaults(page);
    }
  }
});

test("Xiaomi: an endless login answer fails in words in time", async ({ page }) => {
  await setFault(page, doubles.xiaomiAccount, "service_login", "endless");
  await page.goto("/accounts/connect/xiaomi");
  await page.getByLabel("Xiaomi account").fill("demo@xiaomi.test");
  await page.getByLabel("Password").fill("xiaomi-demo");
  const started = Date.now();
  await page.getByRole("button", { name: "Connect" }).click();
  await expect(page.getByRole("alert")).toContainText(HOSTILE[0][1], { timeout: STEP_DEADLINE_MS });
  expect(Date.now() - started).toBeLessThan(STEP_DEADLINE_MS);
  await expectHealthy(page);
});

test("after every hostile answer the server still connects an account", async ({ page }) => {
  await clearFaults(page);
  const took = await connectFlameConnect(page);
  expect(took).toBeLessThan(STEP_DEADLINE_MS);
  await expect(page).toHaveURL(/\/accounts\?connected=\d+$/);
  await expectHealthy(page);
});
