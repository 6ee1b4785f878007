// A load balancer for the end-to-end tests against several server instances: every request goes
// to the next instance in turn (no sticky sessions, nothing kept per client), so a flow that
// takes several requests crosses instances. Plain node:http, no packages.
//
//   node round-robin-proxy.mjs <listen port> <instance origin> [<instance origin>…]
//   e.g. node round-robin-proxy.mjs 3300 http://127.0.0.1:3301 http://127.0.0.1:3302
//
// Requests and responses are streamed through unchanged, headers included (every Set-Cookie, and
// the tests' own X-Forwarded-For, which the instances trust with STEPGATE_TRUST_PROXY=1). Only
// the hop-by-hop headers of each connection are not forwarded; each response says which
// instance served it in `X-Stepgate-Instance` (1-based). A test may pin a request to one instance
// with `X-Stepgate-Test-Instance: <n>` (not forwarded; the turn order is not advanced by it), to
// show a flow finishing on another instance than the one it started on.
import * as http from "node:http";

const [listenPort, ...origins] = process.argv.slice(2);
if (!listenPort || origins.length === 0) {
  console.error("usage: node round-robin-proxy.mjs <listen port> <instance origin> [<instance origin>…]");
  process.exit(2);
}
const instances = origins.map((origin) => new URL(origin));
const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });
const served = instances.map(() => 0);
let next = 0;

// RFC 9110 §7.6.1: these describe one connection, not the message.
const HOP_BY_HOP = new Set([
  "x-stepgate-test-instance", // the proxy's own
  "connection",
  "keep-alive",
  "proxy-connection",
  "proxy-authenticate",
  "proxy-authorization",
  "te",
  "trailer",
  "upgrade",
]);

function forwardedHeaders(rawHeaders) {
  const out = [];
  // Connection may name further headers that are for this hop only.
  const named = new Set();
  for (let i = 0; i < rawHeaders.length; i += 2) {
    if (rawHeaders[i].toLowerCase() === "connection") {
      for (const name of rawHeaders[i + 1].split(",")) named.add(name.trim().toLowerCase());
    }
  }
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const name = rawHeaders[i].toLowerCase();
    if (HOP_BY_HOP.has(name) || named.has(name)) continue;
    out.push(rawHeaders[i], rawHeaders[i + 1]);
  }
  return out;
}

function forward(req, res) {
  const pinned = Number(req.headers["x-stepgate-test-instance"]);
  let index;
  if (Number.isInteger(pinned) && pinned >= 1 && pinned <= instances.length) {
    index = pinned - 1;
  } else {
    index = next;
    next = (next + 1) % instances.length;
  }
  served[index] += 1;
  const target = instances[index];

  const upstream = http.request(
    {
      host: target.hostname,
      port: target.port,
      method: req.method,
      path: req.url,
      headers: forwardedHeaders(req.rawHeaders),
      agent,
    },
    (upRes) => {
      const headers = forwardedHeaders(upRes.rawHeaders);
      headers.push("X-Stepgate-Instance", String(index + 1));
      res.writeHead(upRes.statusCode, upRes.statusMessage, headers);
      upRes.pipe(res);
      upRes.on("error", () => res.destroy());
    },
  );
  upstream.on("error", (error) => {
    if (res.headersSent) {
      res.destroy();
    } else {
      res.writeHead(502, { "content-type": "text/plain; charset=utf-8" });
      res.end(`round-robin proxy: instance ${index + 1} (${target.origin}) did not answer: ${error.message}\n`);
    }
  });
  // The client went away before the answer was complete: stop asking the instance.
  res.on("close", () => {
    if (!res.writableFinished) upstream.destroy();
  });
  if (/100-continue/i.test(req.headers.expect ?? "")) {
    // The instance decides whether the body may come (it refuses one too large at once): ask it
    // first, and let the client send only when it says 100 Continue.
    upstream.on("continue", () => res.writeContinue());
    upstream.flushHeaders();
  }
  req.pipe(upstream);
}

const server = http.createServer(forward);
// Without this listener node would answer 100 Continue itself, before any instance is asked.
server.on("checkContinue", forward);

server.keepAliveTimeout = 5_000;
server.listen(Number(listenPort), "127.0.0.1", () => {
  console.log(`round-robin proxy on 127.0.0.1:${listenPort} -> ${instances.map((u) => u.origin).join(", ")}`);
});

function stop() {
  console.log(`round-robin proxy: requests served per instance: ${served.join(", ")}`);
  process.exit(0);
}
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
