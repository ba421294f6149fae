#!/usr/bin/env node
// tests/peers/oidc_provider.mjs - the upstream OpenID Connect IdP (npm oidc-provider 9) as a
// loopback test peer for ferry.
//
// Usage: node oidc_provider.mjs [--port N] [--alg RS256|ES256] [--client ID:SECRET]...
//                                [--resource URL]... [--ttl SECONDS] [--keys FILE]
// Environment (used when the option is absent): FERRY_PEER_PORT, FERRY_PEER_ALG,
// FERRY_PEER_CLIENTS ("id:secret id2:secret2"), FERRY_PEER_RESOURCES ("url url2"),
// FERRY_PEER_TTL, FERRY_PEER_KEYS.
//
// Listens on 127.0.0.1:PORT (0, the default, picks a free port) as the issuer
// http://127.0.0.1:PORT and prints exactly one line "READY <issuer>" on stdout once it
// accepts connections. What it serves is oidc-provider's own: discovery at
// /.well-known/openid-configuration, the key set at /jwks, the token endpoint at /token
// (plus introspection and revocation). Each client may use the client_credentials grant with
// client_secret_basic; a request with resource=<one of the resources> gets an RFC 9068 JWT
// access token (typ at+jwt, aud = the resource, sub = client_id = the client) signed with the
// chosen algorithm; without a resource the token is opaque, and an unknown resource is
// invalid_target. Defaults: client ferry-test:ferry-test-secret, resources https://ferry.test
// and https://other.test, scopes "read write", token lifetime 600 s.
//
// Keys are generated at start: one RSA 2048 and one P-256 key, both published; --alg picks
// which one signs access tokens. With --keys FILE the private key set is kept in FILE (JSON
// {"keys": [{"alg", "jwk"}]}, newest first, mode 0600, replaced atomically after every
// change): a FILE that exists at start is loaded instead of generating keys, so a peer
// restarted on the same port with the same FILE is the same IdP with the same keys. Test control (loopback only, never part of a real IdP):
//   POST /_rotate   generate a new RSA and P-256 pair and put it in front: new tokens are
//                   signed with the new keys, the old keys stay published. SIGUSR2 does the
//                   same. Answers {"signing": {"RS256": kid, "ES256": kid}, "kids": [...]}.
//   POST /_retire   drop every key but the newest pair from the published set.
//   GET  /_keys     the same answer as /_rotate, without changing anything.
//   GET  /_stats    {"requests": {PATH: n}, "total": n}: requests per path since start or the
//                   last POST /_stats/reset (control paths are not counted).
// A rotation builds a new Provider with the new key set and swaps it in for new requests;
// requests already running finish on the old one, so keys can rotate while requests flow.
// SIGTERM and SIGINT stop it: no new connections, running requests finish, exit 0.
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import process from 'node:process';

import Provider, { errors } from 'oidc-provider';

const ALGS = new Set(['RS256', 'ES256']);

function fail(msg) {
  process.stderr.write(`oidc_provider.mjs: ${msg}\n`);
  process.exit(2);
}

function parseArgs(argv) {
  const env = process.env;
  const opts = {
    port: env.FERRY_PEER_PORT ?? '0',
    alg: env.FERRY_PEER_ALG || 'RS256',
    clients: [],
    resources: [],
    ttl: env.FERRY_PEER_TTL ?? '600',
    keys: env.FERRY_PEER_KEYS || null,
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const val = () => {
      if (i + 1 >= argv.length) fail(`${a} needs a value`);
      return argv[++i];
    };
    switch (a) {
      case '--port': opts.port = val(); break;
      case '--alg': opts.alg = val(); break;
      case '--client': opts.clients.push(val()); break;
      case '--resource': opts.resources.push(val()); break;
      case '--ttl': opts.ttl = val(); break;
      case '--keys': opts.keys = val(); break;
      case '-h': case '--help':
        process.stdout.write('usage: oidc_provider.mjs [--port N] [--alg RS256|ES256] '
          + '[--client ID:SECRET]... [--resource URL]... [--ttl SECONDS] [--keys FILE]\n');
        process.exit(0);
        break;
      default:
        // A bare number is the port, so `node oidc_provider.mjs 8080` works.
        if (/^\d+$/.test(a)) opts.port = a;
        else fail(`unknown argument '${a}'`);
    }
  }
  if (!opts.clients.length) {
    opts.clients = (env.FERRY_PEER_CLIENTS || 'ferry-test:ferry-test-secret').split(/\s+/)
      .filter(Boolean);
  }
  if (!opts.resources.length) {
    opts.resources = (env.FERRY_PEER_RESOURCES || 'https://ferry.test https://other.test')
      .split(/\s+/).filter(Boolean);
  }
  if (!/^\d{1,5}$/.test(String(opts.port)) || Number(opts.port) > 65535) {
    fail(`port '${opts.port}' is not 0..65535`);
  }
  opts.port = Number(opts.port);
  if (!ALGS.has(opts.alg)) fail(`alg '${opts.alg}' is not one of ${[...ALGS].join(', ')}`);
  if (!/^\d{1,6}$/.test(String(opts.ttl)) || Number(opts.ttl) < 1) {
    fail(`ttl '${opts.ttl}' is not a positive number of seconds`);
  }
  opts.ttl = Number(opts.ttl);
  opts.clients = opts.clients.map((c) => {
    const colon = c.indexOf(':');
    if (colon < 1 || colon === c.length - 1) fail(`client '${c}' is not ID:SECRET`);
    return { id: c.slice(0, colon), secret: c.slice(colon + 1) };
  });
  for (const r of opts.resources) {
    let u;
    try { u = new URL(r); } catch { fail(`resource '${r}' is not a URL`); }
    if (u.hash) fail(`resource '${r}' must not have a fragment (RFC 8707)`);
  }
  return opts;
}

const opts = parseArgs(process.argv.slice(2));

// ---- keys ---------------------------------------------------------------------------------

// The published key set, newest first: [{alg, jwk (private)}].
let keys = [];

function newKeyPair() {
  const rsa = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  const ec = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const stamp = crypto.randomBytes(6).toString('base64url');
  return [
    { alg: 'RS256', jwk: { ...rsa.privateKey.export({ format: 'jwk' }), kid: `rs256-${stamp}`, alg: 'RS256', use: 'sig' } },
    { alg: 'ES256', jwk: { ...ec.privateKey.export({ format: 'jwk' }), kid: `es256-${stamp}`, alg: 'ES256', use: 'sig' } },
  ];
}

// --keys FILE: load a saved set (refusing anything but what saveKeys writes), save after changes.
function loadKeys(file) {
  let doc;
  try {
    doc = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (e) {
    if (e.code === 'ENOENT') return null;
    fail(`keys file ${file}: ${e.message}`);
  }
  const list = doc?.keys;
  if (!Array.isArray(list) || list.length < 2 || list.length > 50) {
    fail(`keys file ${file}: "keys" is not an array of 2 to 50 keys`);
  }
  for (const k of list) {
    if (!ALGS.has(k?.alg) || typeof k?.jwk?.kid !== 'string' || k.jwk.alg !== k.alg) {
      fail(`keys file ${file}: an entry is not {"alg": "RS256"|"ES256", "jwk": {kid, alg, ...}}`);
    }
    try {
      crypto.createPrivateKey({ key: k.jwk, format: 'jwk' });
    } catch (e) {
      fail(`keys file ${file}: key ${k.jwk.kid}: ${e.message}`);
    }
  }
  return list;
}

function saveKeys() {
  if (!opts.keys) return;
  const tmp = `${opts.keys}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, JSON.stringify({ keys }), { mode: 0o600 });
  fs.renameSync(tmp, opts.keys);
}

function keysAnswer() {
  const signing = {};
  for (const k of keys) signing[k.alg] ??= k.jwk.kid;
  return { signing, kids: keys.map((k) => k.jwk.kid), alg: opts.alg };
}

// ---- the provider -------------------------------------------------------------------------

let issuer;
const cookieKeys = [crypto.randomBytes(32).toString('base64url')];
const resources = new Set(opts.resources);

function buildProvider() {
  const provider = new Provider(issuer, {
    clients: opts.clients.map((c) => ({
      client_id: c.id,
      client_secret: c.secret,
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
      token_endpoint_auth_method: 'client_secret_basic',
      scope: 'read write',
    })),
    scopes: ['read', 'write'],
    jwks: { keys: keys.map((k) => k.jwk) },
    cookies: { keys: cookieKeys },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      introspection: { enabled: true },
      revocation: { enabled: true },
      resourceIndicators: {
        enabled: true,
        // Only the resource the request names; no default, so a request without one gets
        // an opaque token, as a real deployment would.
        defaultResource: async (_ctx, _client, oneOf) => oneOf,
        useGrantedResource: async () => false,
        getResourceServerInfo: async (_ctx, resourceIndicator) => {
          if (!resources.has(resourceIndicator)) {
            throw new errors.InvalidTarget(`unknown resource ${resourceIndicator}`);
          }
          return {
            scope: 'read write',
            audience: resourceIndicator,
            accessTokenTTL: opts.ttl,
            accessTokenFormat: 'jwt',
            jwt: { sign: { alg: opts.alg } },
          };
        },
      },
    },
    ttl: {
      ClientCredentials: (_ctx, token) => token.resourceServer?.accessTokenTTL || opts.ttl,
    },
  });
  // Tests run several peers and many short processes; nothing is behind a proxy.
  provider.proxy = false;
  return provider;
}

let current;

function install() {
  current = { provider: buildProvider() };
  current.handler = current.provider.callback();
}

function rotate() {
  keys = [...newKeyPair(), ...keys];
  saveKeys();
  install();
  return keysAnswer();
}

function retire() {
  keys = keys.slice(0, 2);
  saveKeys();
  install();
  return keysAnswer();
}

// ---- HTTP ---------------------------------------------------------------------------------

const stats = { requests: {}, total: 0 };

function sendJson(res, status, doc) {
  const body = JSON.stringify(doc);
  res.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(body),
    'cache-control': 'no-store',
  });
  res.end(body);
}

function control(req, res, path) {
  const post = req.method === 'POST';
  if (path === '/_rotate' && post) return sendJson(res, 200, rotate());
  if (path === '/_retire' && post) return sendJson(res, 200, retire());
  if (path === '/_keys' && req.method === 'GET') return sendJson(res, 200, keysAnswer());
  if (path === '/_stats' && req.method === 'GET') return sendJson(res, 200, stats);
  if (path === '/_stats/reset' && post) {
    stats.requests = {};
    stats.total = 0;
    return sendJson(res, 200, stats);
  }
  return sendJson(res, 404, { error: 'unknown control request', path });
}

const server = http.createServer((req, res) => {
  const path = (req.url || '/').split('?', 1)[0];
  if (path.startsWith('/_')) {
    // Drain any body, then answer; control requests are tiny.
    req.resume();
    req.on('end', () => control(req, res, path));
    return;
  }
  stats.total += 1;
  stats.requests[path] = (stats.requests[path] || 0) + 1;
  if (!current) return sendJson(res, 503, { error: "starting" });
  return current.handler(req, res);
});
server.keepAliveTimeout = 2000;

let stopping = false;
function stop(sig) {
  if (stopping) return;
  stopping = true;
  process.stderr.write(`oidc_provider.mjs: ${sig}: stopping\n`);
  server.close(() => process.exit(0));
  server.closeIdleConnections();
  // Connections still busy after a grace period are cut; the exit stays clean.
  setTimeout(() => {
    server.closeAllConnections();
    process.exit(0);
  }, 2000).unref();
}
process.on('SIGTERM', () => stop('SIGTERM'));
process.on('SIGINT', () => stop('SIGINT'));
process.on('SIGUSR2', () => {
  const a = rotate();
  process.stderr.write(`oidc_provider.mjs: SIGUSR2: rotated, signing ${JSON.stringify(a.signing)}\n`);
});

server.on('error', (err) => fail(`listen: ${err.message}`));
server.listen(opts.port, '127.0.0.1', () => {
  issuer = `http://127.0.0.1:${server.address().port}`;
  const saved = opts.keys ? loadKeys(opts.keys) : null;
  if (saved) {
    keys = saved;
    install();
  } else {
    rotate();
  }
  process.stdout.write(`READY ${issuer}\n`);
});
