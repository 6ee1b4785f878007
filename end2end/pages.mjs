// The pages the front-end measurements visit, and how to reach each: the code page needs a
// sign-in waiting at its second factor, made here through the API as a browser would.
import { createHmac } from "node:crypto";

function totp(base32, unixSeconds = Date.now() / 1000) {
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
  let bits = "";
  for (const c of base32.replace(/=+$/, "").toUpperCase()) bits += alphabet.indexOf(c).toString(2).padStart(5, "0");
  const key = Buffer.from(bits.match(/.{8}/g).map((b) => parseInt(b, 2)));
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(Math.floor(unixSeconds / 30)));
  const hash = createHmac("sha1", key).update(counter).digest();
  const offset = hash[19] & 0xf;
  return ((hash.readUInt32BE(offset) & 0x7fffffff) % 1e6).toString().padStart(6, "0");
}

/** Calls a server function as the browser does; returns the answer and the cookies it set. */
async function call(origin, name, form, cookie = "") {
  const response = await fetch(`${origin}/api/${name}`, {
    method: "POST",
    headers: { accept: "application/json", "content-type": "application/x-www-form-urlencoded", cookie },
    body: new URLSearchParams(form),
    redirect: "manual",
  });
  const cookies = response.headers.getSetCookie().map((c) => c.split(";")[0]).filter((c) => !c.endsWith("="));
  if (response.status >= 400) throw new Error(`${name}: ${response.status} ${await response.text()}`);
  return { response, cookie: cookies.join("; ") || cookie };
}

/** A sign-in waiting at its code step: the URL and the login cookie that owns it. */
async function codeStep(origin) {
  const email = `lighthouse-${Date.now()}@example.org`;
  const { cookie: session } = await call(origin, "register", { email, password: "lighthouse-1-quiet-harbor", confirm_password: "lighthouse-1-quiet-harbor" });
  const { response } = await call(origin, "begin_app_enrollment", {}, session);
  const { secret } = await response.json();
  await call(origin, "confirm_app_enrollment", { code: totp(secret) }, session);
  const signedIn = await call(origin, "sign_in", { email, password: "lighthouse-1-quiet-harbor" });
  const location = signedIn.response.headers.get("location");
  if (!location?.startsWith("/login/code")) throw new Error(`sign-in went to ${location}, not the code page`);
  return { url: new URL(location, origin).href, cookie: signedIn.cookie };
}

/** A signed-in user with a connected Librus account (the sandbox's demo parent). */
async function accountsPage(origin) {
  const email = `lighthouse-accounts-${Date.now()}@example.org`;
  const { cookie } = await call(origin, "register", { email, password: "lighthouse-1-quiet-harbor", confirm_password: "lighthouse-1-quiet-harbor" });
  await call(origin, "submit_connect_step", {
    provider: "librus",
    flow_id: "",
    "fields[login]": "demo.parent",
    "fields[password]": "librus-demo",
  }, cookie);
  return { url: `${origin}/accounts`, cookie };
}

/** The URL (and cookie) that shows `page`: login, register, or code (a sign-in at its second factor). */
export async function pageTarget(origin, page) {
  switch (page) {
    case "login":
      return { url: `${origin}/login` };
    case "register":
      return { url: `${origin}/register` };
    case "code":
      return codeStep(origin);
    case "accounts":
      return accountsPage(origin);
    default:
      throw new Error(`unknown page ${page}`);
  }
}

