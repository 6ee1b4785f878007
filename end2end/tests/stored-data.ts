// What the scaled-out e2e run's database holds, for the checks that no secret is kept in clear.
import { execFileSync } from "node:child_process";
import * as path from "node:path";
import { dataDir, e2eDatabaseUrl } from "../playwright.config";

const PG_BIN = process.env.STEPGATE_PG_BIN ?? "/usr/lib/postgresql/15/bin";

/** The e2e database's rows as text (`pg_dump --data-only`), written to a file whose path is
 * returned; bytea columns come out as hex. */
export function postgresDump(): string {
  const file = path.join(dataDir, "postgres-data.sql");
  execFileSync(path.join(PG_BIN, "pg_dump"), ["--data-only", "--no-owner", "--file", file, e2eDatabaseUrl!]);
  return file;
}
