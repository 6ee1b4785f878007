// After the whole suite: no third-party password, token or cookie value the doubles handed out
// appears in clear in Stepgate's database files or its log (they are sealed, or never kept).
import { expect, test } from "@playwright/test";
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { doubles } from "../../playwright.config";

const dataDir = path.join(__dirname, "..", "..", ".data");
const PASSWORDS = ["librus-demo", "xiaomi-demo", "lynkco-demo", "flame-demo"];

test("no third-party secret is in the database or the log in clear", async ({ request }) => {
  const issued: string[] = await (await request.get(`http://${doubles.librusApi}/testing/issued`)).json();
  // The suite connected Librus, Xiaomi, Lynk & Co and FlameConnect accounts: plenty to look for.
  expect(issued.length).toBeGreaterThan(10);
  const xiaomiHash = crypto.createHash("md5").update("xiaomi-demo").digest("hex").toUpperCase();
  const secrets = [...new Set([...issued, ...PASSWORDS, xiaomiHash])].filter((s) => s.length >= 8);

  const files = fs
    .readdirSync(dataDir)
    .filter((f) => f.startsWith("stepgate.db") || f === "server.log")
    .map((f) => path.join(dataDir, f));
  expect(files.some((f) => f.endsWith("stepgate.db"))).toBe(true);
  expect(files.some((f) => f.endsWith("server.log"))).toBe(true);
  for (const file of files) {
    const bytes = fs.readFileSync(file);
    const found = secrets.filter((s) => bytes.includes(Buffer.from(s)));
    expect(found, `${path.basename(file)} holds secrets in clear`).toEqual([]);
  }
});
