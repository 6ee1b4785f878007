// A Stepgate server of a test's own (on its own port and data folder), for tests that stop and
// start it: the shared server from playwright.config.ts must never be stopped under other tests.
import { spawn, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import * as path from "node:path";
import { upstreams } from "../playwright.config";
import { SANDBOX } from "./helpers";

const root = path.resolve(__dirname, "..", "..");

export async function startOwnServer(port: number, dataDir: string): Promise<ChildProcess> {
  const base = `http://127.0.0.1:${port}`;
  const server = spawn(path.join(root, "target", "release", "server"), [], {
    cwd: root,
    stdio: "ignore",
    env: {
      ...process.env,
      LEPTOS_SITE_ADDR: `127.0.0.1:${port}`,
      LEPTOS_SITE_ROOT: path.join(root, "target", "site"),
      STEPGATE_DATA: dataDir,
      STEPGATE_DEMO: "0",
      STEPGATE_TOTP_PROVIDER_URL: SANDBOX,
      STEPGATE_PUBLIC_URL: base,
      STEPGATE_UPSTREAMS: upstreams,
    },
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
