import { defineConfig, devices } from "@playwright/test";
import { execFileSync } from "node:child_process";
import * as crypto from "node:crypto";
import * as path from "node:path";
import { chromiumArgs } from "./chromium";

// The real server binary, built by `cargo leptos build --release`, on its own port and a data
// folder that is fresh for every run (scripts/test.sh empties it).
//
// Two modes:
// - default: one instance on SQLite in the data folder.
// - scaled out, when STEPGATE_E2E_DATABASE_URL (postgres://…, a fresh database) is set, with
//   STEPGATE_E2E_REDIS_URL: two instances sharing that database and Redis (and one key), behind
//   end2end/round-robin-proxy.mjs on the usual port, which sends each request to the other
//   instance than the one before (no sticky sessions). Each test's baseURL stays the same.
const port = Number(process.env.STEPGATE_E2E_PORT ?? 3300);
const sandboxPort = Number(process.env.STEPGATE_E2E_SANDBOX_PORT ?? 3400);
export const appOrigin = `http://127.0.0.1:${port}`;
export const sandboxOrigin = `http://127.0.0.1:${sandboxPort}`;
const root = path.resolve(__dirname, "..");
// The simulated third-party hosts, each on its own port after the TOTP provider's, from the one
// table of doubles (sandbox/src/doubles.rs) as the built sandbox prints it.
type Double = { origin: string; addrVar: string; addr: string };
const table: Record<string, Double> = JSON.parse(
  execFileSync(path.join(root, "target", "release", "sandbox"), ["--print-json"], {
    encoding: "utf8",
    env: { STEPGATE_SANDBOX_ADDR: `127.0.0.1:${sandboxPort}` },
  }),
);
/** Each double's `HOST:PORT` by its short name (`doubles.lynkcoB2c`). */
export const doubles: Record<string, string> = Object.fromEntries(
  Object.entries(table).map(([name, d]) => [name, d.addr]),
);
export const upstreams = Object.values(table)
  .map((d) => `${d.origin}=http://${d.addr}`)
  .join(" ");
// STEPGATE_E2E_DATA, STEPGATE_E2E_RESULTS and STEPGATE_E2E_OUTPUT (with the ports) let a second
// run go on beside another one without sharing its folders.
export const dataDir = path.resolve(__dirname, process.env.STEPGATE_E2E_DATA ?? ".data");

export const e2eDatabaseUrl = process.env.STEPGATE_E2E_DATABASE_URL || undefined;
export const e2eRedisUrl = process.env.STEPGATE_E2E_REDIS_URL || undefined;
export const scaledOut = e2eDatabaseUrl !== undefined;
export const instanceCount = scaledOut ? 2 : 1;
/** Each instance's log, in the data folder (the after-all secrets check reads them). Scaled
 * out, the second instance logs JSON lines (STEPGATE_LOG_FORMAT=json), the first text. */
export const serverLogs = scaledOut
  ? Array.from({ length: instanceCount }, (_, i) => path.join(dataDir, `server-${i + 1}.log`))
  : [path.join(dataDir, "server.log")];
// Instances sharing a database must share the key that seals its secrets. One per run: this file
// is loaded again in every worker, which inherits the first load's environment.
if (scaledOut && !process.env.STEPGATE_E2E_KEY) {
  process.env.STEPGATE_E2E_KEY = crypto.randomBytes(32).toString("hex");
}

// What every instance gets (plus its address, data folder and, scaled out, database and Redis).
const serverEnv = {
  STEPGATE_DEMO: "1",
  // Every spec registers its own users; the invite-only default has its own server (admin.spec.ts).
  STEPGATE_REGISTRATION: "open",
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
  // The webhook specs' receivers listen on 127.0.0.1, which webhooks may not reach otherwise.
  STEPGATE_WEBHOOK_ALLOW: "127.0.0.1",
  RUST_LOG: "info,sqlx=warn",
};
const serverBinary = path.join(root, "target", "release", "stepgate");

// The server's log is kept in the data folder too, for the after-all secrets check.
function serverCommand(instanceDataDir: string, log: string): string {
  return `mkdir -p '${instanceDataDir}' && '${serverBinary}' 2>&1 | tee '${log}'`;
}

const appServers = scaledOut
  ? [
      ...serverLogs.map((log, i) => {
        const instancePort = port + 1 + i;
        const instanceDir = path.join(dataDir, `instance-${i + 1}`);
        return {
          command: serverCommand(instanceDir, log),
          cwd: root,
          url: `http://127.0.0.1:${instancePort}/login`,
          reuseExistingServer: false,
          timeout: 60_000,
          stdout: "pipe" as const,
          env: {
            ...serverEnv,
            LEPTOS_SITE_ADDR: `127.0.0.1:${instancePort}`,
            STEPGATE_DATA: instanceDir,
            DATABASE_URL: e2eDatabaseUrl!,
            ...(e2eRedisUrl ? { STEPGATE_REDIS_URL: e2eRedisUrl } : {}),
            STEPGATE_KEY: process.env.STEPGATE_E2E_KEY!,
            ...(i === 1 ? { STEPGATE_LOG_FORMAT: "json" } : {}),
          },
        };
      }),
      {
        // The load balancer on the usual port: instance 1, 2, 1, 2… request by request.
        command: `node '${path.join(__dirname, "round-robin-proxy.mjs")}' ${port} ${serverLogs
          .map((_, i) => `http://127.0.0.1:${port + 1 + i}`)
          .join(" ")}`,
        cwd: root,
        url: `${appOrigin}/login`,
        reuseExistingServer: false,
        timeout: 30_000,
        stdout: "pipe" as const,
        gracefulShutdown: { signal: "SIGTERM" as const, timeout: 2_000 },
      },
    ]
  : [
      {
        command: serverCommand(dataDir, serverLogs[0]),
        cwd: root,
        url: `${appOrigin}/login`,
        reuseExistingServer: false,
        timeout: 60_000,
        stdout: "pipe" as const,
        env: {
          ...serverEnv,
          LEPTOS_SITE_ADDR: `127.0.0.1:${port}`,
          STEPGATE_DATA: dataDir,
          // Its own key, not the machine user's default key file.
          STEPGATE_KEY_FILE: path.join(dataDir, "secret.key"),
        },
      },
    ];


export default defineConfig({
  testDir: "./tests",
  outputDir: process.env.STEPGATE_E2E_OUTPUT ?? "test-results",
  timeout: 30_000,
  expect: { timeout: 7_000 },
  forbidOnly: !!process.env.CI,
  retries: 0,
  workers: process.env.CI ? 1 : 2,
  // One results file per mode, so scripts/test.sh can count both runs.
  reporter: [
    ["list"],
    [
      "json",
      {
        outputFile:
          process.env.STEPGATE_E2E_RESULTS ??
          `playwright-report/${scaledOut ? "results-scaled-out.json" : "results.json"}`,
      },
    ],
  ],
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
      // Checks that need the whole suite to have run first (no secret left in clear) and, scaled
      // out, flows pinned to alternate instances (with the doubles to themselves).
      name: "after-all",
      testMatch: /after-all\/.*\.spec\.ts/,
      testIgnore: scaledOut ? [] : [/cross-instance\.spec\.ts/],
      dependencies: ["chromium"],
      use: {
        ...devices["Desktop Chrome"],
        launchOptions: {
          executablePath: process.env.CHROMIUM_PATH ?? "/usr/bin/chromium",
          args: chromiumArgs,
        },
      },
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
        ...Object.fromEntries(Object.values(table).map((d) => [d.addrVar, d.addr])),
      },
    },
    ...appServers,
  ],
});
