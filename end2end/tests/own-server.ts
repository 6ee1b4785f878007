// A Stepgate server of a test's own (on its own port and data folder), for tests that stop and
// start it: the shared server from playwright.config.ts must never be stopped under other tests.
// Scaled out (playwright.config.ts), it runs on Postgres and Redis too: a database of its own,
// named after its data folder (so a restart finds it again), and its own Redis key prefix.
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import * as fs from "node:fs";
import * as path from "node:path";
import { e2eDatabaseUrl, e2eRedisUrl, upstreams } from "../playwright.config";
import { SANDBOX } from "./helpers";

const root = path.resolve(__dirname, "..", "..");
const PG_BIN = process.env.STEPGATE_PG_BIN ?? "/usr/lib/postgresql/15/bin";

/** The Postgres database of an own server whose data folder is `dataDir` (scaled out only). */
export function ownDatabaseUrl(dataDir: string): string | undefined {
  if (!e2eDatabaseUrl) return undefined;
  const url = new URL(e2eDatabaseUrl);
  url.pathname = `/${ownDatabaseName(dataDir)}`;
  return url.toString();
}

function ownDatabaseName(dataDir: string): string {
  return `own_${path.basename(dataDir).toLowerCase().replace(/[^a-z0-9]/g, "_")}`;
}

/** DATABASE_URL and Redis settings for an own server scaled out; none on SQLite. */
function scaledOutEnv(dataDir: string): Record<string, string> {
  if (!e2eDatabaseUrl) return {};
  const name = ownDatabaseName(dataDir);
  const psql = (sql: string) =>
    execFileSync(path.join(PG_BIN, "psql"), ["-X", "-qtA", "-v", "ON_ERROR_STOP=1", "-c", sql, e2eDatabaseUrl!], {
      encoding: "utf8",
    }).trim();
  if (psql(`SELECT 1 FROM pg_database WHERE datname = '${name}'`) !== "1") psql(`CREATE DATABASE ${name}`);
  const url = new URL(e2eDatabaseUrl);
  url.pathname = `/${name}`;
  return {
    DATABASE_URL: url.toString(),
    // On Postgres a key must be given (no key file per instance); the run's key serves.
    STEPGATE_KEY: process.env.STEPGATE_E2E_KEY!,
    ...(e2eRedisUrl ? { STEPGATE_REDIS_URL: e2eRedisUrl, STEPGATE_REDIS_PREFIX: `${name}:` } : {}),
  };
}

/**
 * Starts the server on `port` with its data in `dataDir`. Registration is open (tests register
 * their own users) unless `env` says otherwise; a `null` in `env` leaves that variable unset, so
 * the server's own default applies.
 */
export async function startOwnServer(
  port: number,
  dataDir: string,
  env: Record<string, string | null> = {},
  log?: string,
): Promise<ChildProcess> {
  const base = `http://127.0.0.1:${port}`;
  const merged: Record<string, string | null | undefined> = {
    ...process.env,
    LEPTOS_SITE_ADDR: `127.0.0.1:${port}`,
    STEPGATE_DATA: dataDir,
    // Its own key (scaled out, STEPGATE_KEY below wins), not the machine user's default file.
    STEPGATE_KEY_FILE: path.join(dataDir, "secret.key"),
    STEPGATE_DEMO: "0",
    STEPGATE_REGISTRATION: "open",
    STEPGATE_TOTP_PROVIDER_URL: SANDBOX,
    STEPGATE_PUBLIC_URL: base,
    STEPGATE_UPSTREAMS: upstreams,
    ...scaledOutEnv(dataDir),
    ...env,
  };
  const serverEnv = Object.fromEntries(
    Object.entries(merged).filter((entry): entry is [string, string] => typeof entry[1] === "string"),
  );
  const server = spawn(path.join(root, "target", "release", "stepgate"), [], {
    cwd: root,
    // With `log`, its output goes to that file (for tests that read what it logged).
    stdio: log ? ["ignore", fs.openSync(log, "a"), fs.openSync(log, "a")] : "ignore",
    env: serverEnv,
  });
  for (let i = 0; i < 100; i++) {
    try {
      if ((await fetch(`${base}/login`)).ok) return server;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  server.kill();
  throw new Error("the server did not start");
}

export async function stopOwnServer(server: ChildProcess): Promise<void> {
  if (server.exitCode !== null) return;
  const exited = once(server, "exit");
  server.kill("SIGTERM");
  await exited;
}
