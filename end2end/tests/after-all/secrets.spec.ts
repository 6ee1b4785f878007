// After the whole suite: no third-party password, token or cookie value the doubles handed out,
// no recovery code and no sign-in link Stepgate showed, appears in clear in Stepgate's database or its log (they are sealed, or never kept). On SQLite
// that is the database files; scaled out (playwright.config.ts), a text dump of the Postgres
// database, every value left in Redis, and every instance's log.
import { expect, test } from "@playwright/test";
import { execFileSync } from "node:child_process";
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { dataDir, doubles, e2eRedisUrl, scaledOut, serverLogs } from "../../playwright.config";
import { postgresDump } from "../stored-data";

// The doubles' demo passwords, from their one table (sandbox/src/doubles.rs).
const PASSWORDS: string[] = JSON.parse(
  execFileSync(path.join(__dirname, "..", "..", "..", "target", "release", "sandbox"), ["--print-demo-passwords"], {
    encoding: "utf8",
  }),
);

/** Every key and string, hash, list, set and sorted-set value in Redis, one per line. */
function redisValues(): string {
  const file = path.join(dataDir, "redis-values.txt");
  const script = `
    local out = {}
    for _, key in ipairs(redis.call('KEYS', '*')) do
      table.insert(out, key)
      local kind = redis.call('TYPE', key).ok
      if kind == 'string' then table.insert(out, redis.call('GET', key))
      elseif kind == 'hash' then for _, v in ipairs(redis.call('HGETALL', key)) do table.insert(out, v) end
      elseif kind == 'list' then for _, v in ipairs(redis.call('LRANGE', key, 0, -1)) do table.insert(out, v) end
      elseif kind == 'set' then for _, v in ipairs(redis.call('SMEMBERS', key)) do table.insert(out, v) end
      elseif kind == 'zset' then for _, v in ipairs(redis.call('ZRANGE', key, 0, -1)) do table.insert(out, v) end
      end
    end
    return out`;
  const values = execFileSync("redis-cli", ["-u", e2eRedisUrl!, "--raw", "EVAL", script, "0"], {
    maxBuffer: 256 * 1024 * 1024,
  });
  fs.writeFileSync(file, values);
  return file;
}

test("no third-party secret and no recovery code is in the database or the log in clear", async ({ request }) => {
  expect(PASSWORDS, "one demo password per connectable provider").toHaveLength(4);
  const issued: string[] = await (await request.get(`http://${doubles.librusApi}/testing/issued`)).json();
  // The suite connected Librus, Xiaomi, Lynk & Co and FlameConnect accounts: plenty to look for.
  expect(issued.length).toBeGreaterThan(10);
  const xiaomiHash = crypto.createHash("md5").update("xiaomi-demo").digest("hex").toUpperCase();
  // The recovery codes the suite was shown (recovery-codes.spec.ts), as shown and as compared.
  const shown = path.join(dataDir, "recovery-codes-shown.txt");
  const recoveryCodes = fs.readFileSync(shown, "utf8").split("\n").filter((c) => c !== "");
  expect(recoveryCodes.length).toBeGreaterThanOrEqual(30);
  const recoveryForms = recoveryCodes.flatMap((c) => [c, c.replaceAll("-", "")]);
  // The sign-in links the suite was shown (sign-in-links.spec.ts): their tokens, and the MAC
  // half alone (the id half is stored; it opens nothing).
  const linksShown = path.join(dataDir, "sign-in-links-shown.txt");
  const linkTokens = fs.existsSync(linksShown)
    ? fs
        .readFileSync(linksShown, "utf8")
        .split("\n")
        .filter((l) => l !== "")
        .flatMap((link) => {
          const token = link.split("/").pop()!;
          return [token, token.split(".")[1]];
        })
    : [];
  const secrets = [...new Set([...issued, ...PASSWORDS, xiaomiHash, ...recoveryForms, ...linkTokens])].filter(
    (s) => s.length >= 8,
  );

  let files: string[];
  if (scaledOut) {
    const dump = postgresDump();
    // The dump holds what the suite did: users, and connected accounts with sealed secrets.
    const text = fs.readFileSync(dump, "utf8");
    expect(text).toContain("COPY public.connected_accounts");
    expect(text).toContain("demo@stepgate.test");
    files = [dump, ...(e2eRedisUrl ? [redisValues()] : []), ...serverLogs];
  } else {
    files = fs
      .readdirSync(dataDir)
      .filter((f) => f.startsWith("stepgate.db"))
      .map((f) => path.join(dataDir, f));
    expect(files.some((f) => f.endsWith("stepgate.db"))).toBe(true);
    files.push(...serverLogs);
  }
  for (const log of serverLogs) expect(fs.existsSync(log), `${path.basename(log)} exists`).toBe(true);
  if (scaledOut) {
    // The second instance logs JSON: every log line parses, and each request's lines carry its id.
    const lines = fs
      .readFileSync(serverLogs[1], "utf8")
      .split("\n")
      .filter((l) => l.startsWith("{"))
      .map((l) => JSON.parse(l));
    const requests = lines.filter((l) => l.fields?.message === "request");
    expect(requests.length).toBeGreaterThan(50);
    for (const line of requests) expect(line.span?.request_id).toMatch(/^[0-9a-f]{24}$/);
  }
  for (const file of files) {
    const bytes = fs.readFileSync(file);
    // pg_dump writes bytea as hex: a secret kept unsealed in a bytea column would show that way.
    const hexToo = file.endsWith(".sql");
    const found = secrets.filter(
      (s) => bytes.includes(Buffer.from(s)) || (hexToo && bytes.includes(Buffer.from(Buffer.from(s).toString("hex")))),
    );
    expect(found, `${path.basename(file)} holds secrets in clear`).toEqual([]);
  }
});
