import { defineConfig, devices } from "@playwright/test";
import * as path from "node:path";
import { chromiumArgs } from "./chromium";

// The real server binary, built by `cargo leptos build --release`, on its own port and a data
// folder that is fresh for every run (scripts/test.sh empties it).
const port = Number(process.env.STEPGATE_E2E_PORT ?? 3300);
const sandboxPort = Number(process.env.STEPGATE_E2E_SANDBOX_PORT ?? 3400);
export const appOrigin = `http://127.0.0.1:${port}`;
export const sandboxOrigin = `http://127.0.0.1:${sandboxPort}`;
// The simulated third-party hosts, each on its own port next to the TOTP provider's.
export const doubles = {
  librusApi: `127.0.0.1:${sandboxPort + 1}`,
  librusSynergia: `127.0.0.1:${sandboxPort + 2}`,
  xiaomiAccount: `127.0.0.1:${sandboxPort + 3}`,
  xiaomiSts: `127.0.0.1:${sandboxPort + 4}`,
  lynkcoB2c: `127.0.0.1:${sandboxPort + 5}`,
  lynkcoIam: `127.0.0.1:${sandboxPort + 6}`,
  flameconnect: `127.0.0.1:${sandboxPort + 7}`,
};
export const upstreams = [
  `https://api.librus.pl=http://${doubles.librusApi}`,
  `https://synergia.librus.pl=http://${doubles.librusSynergia}`,
  `https://account.xiaomi.com=http://${doubles.xiaomiAccount}`,
  `https://sts.api.io.mi.com=http://${doubles.xiaomiSts}`,
  `https://login.lynkco.com=http://${doubles.lynkcoB2c}`,
  `https://iam-service-prod.westeurope.cloudapp.azure.com=http://${doubles.lynkcoIam}`,
  `https://gdhvb2cflameconnect.b2clogin.com=http://${doubles.flameconnect}`,
].join(" ");
const root = path.resolve(__dirname, "..");
const dataDir = path.join(__dirname, ".data");


export default defineConfig({
  testDir: "./tests",
  timeout: 30_000,
  expect: { timeout: 7_000 },
  forbidOnly: !!process.env.CI,
  retries: 0,
  workers: process.env.CI ? 1 : 2,
  reporter: [["list"], ["json", { outputFile: "playwright-report/results.json" }]],
  use: {
    baseURL: `http://127.0.0.1:${port}`,
    trace: "retain-on-failure",
  },
  projects: [
    {
      name: "chromium",
      testIgnore: /after-all\//,
      use: {
        ...devices["Desktop Chrome"],
        launchOptions: {
          executablePath: process.env.CHROMIUM_PATH ?? "/usr/bin/chromium",
          args: chromiumArgs,
        },
      },
    },
    {
      // Checks that need the whole suite to have run first (no secret left in clear).
      name: "after-all",
      testMatch: /after-all\/.*\.spec\.ts/,
      dependencies: ["chromium"],
    },
  ],
  webServer: [
    {
      // The simulated TOTP provider, on its own origin.
      command: path.join(root, "target", "release", "sandbox"),
      cwd: root,
      url: `${sandboxOrigin}/`,
      reuseExistingServer: false,
      timeout: 60_000,
      stdout: "pipe",
      env: {
        STEPGATE_SANDBOX_ADDR: `127.0.0.1:${sandboxPort}`,
        STEPGATE_APP_ORIGIN: appOrigin,
        STEPGATE_SANDBOX_LIBRUS_API_ADDR: doubles.librusApi,
        STEPGATE_SANDBOX_LIBRUS_SYNERGIA_ADDR: doubles.librusSynergia,
        STEPGATE_SANDBOX_XIAOMI_ACCOUNT_ADDR: doubles.xiaomiAccount,
        STEPGATE_SANDBOX_XIAOMI_STS_ADDR: doubles.xiaomiSts,
        STEPGATE_SANDBOX_LYNKCO_B2C_ADDR: doubles.lynkcoB2c,
        STEPGATE_SANDBOX_LYNKCO_IAM_ADDR: doubles.lynkcoIam,
        STEPGATE_SANDBOX_FLAMECONNECT_ADDR: doubles.flameconnect,
      },
    },
    {
    // The server's log is kept in the data folder too, for the after-all secrets check.
    command: `mkdir -p '${dataDir}' && '${path.join(root, "target", "release", "server")}' 2>&1 | tee '${path.join(dataDir, "server.log")}'`,
    cwd: root,
    url: `http://127.0.0.1:${port}/login`,
    reuseExistingServer: false,
    timeout: 60_000,
    stdout: "pipe",
    env: {
      LEPTOS_SITE_ADDR: `127.0.0.1:${port}`,
      LEPTOS_SITE_ROOT: path.join(root, "target", "site"),
      STEPGATE_DATA: dataDir,
      STEPGATE_DEMO: "1",
      STEPGATE_TOTP_PROVIDER_URL: sandboxOrigin,
      STEPGATE_PUBLIC_URL: appOrigin,
      // As behind a proxy: tests that exercise throttling each send their own X-Forwarded-For.
      STEPGATE_TRUST_PROXY: "1",
      STEPGATE_UPSTREAMS: upstreams,
      // Short, so stalled-upstream tests end quickly.
      STEPGATE_STEP_TIMEOUT: "3",
      // Every visit of /accounts checks the accounts again, so a revoked token shows at once.
      STEPGATE_ACCOUNT_CHECK_INTERVAL: "0",
      // The token upkeep looks for due accounts every second.
      STEPGATE_UPKEEP_INTERVAL: "1",
      RUST_LOG: "info,sqlx=warn",
    },
    },
  ],
});
