// vault_standin.mjs - a plain-HTTP subset of HashiCorp Vault's HTTP API on 127.0.0.1, written
// from Vault's API documentation (developer.hashicorp.com/vault/api-docs: secret/kv/kv-v2,
// auth/jwt, auth/approle, auth/token) for ferry's integration tests. Node built-ins only.
//
//   node vault_standin.mjs --config FILE [--port N]
//
// FILE (JSON):
//   {"root_token": "...",                       a token with every path, in the root namespace
//    "namespaces": ["team-a"],                  namespaces besides the root one ("")
//    "kv_mounts": ["secret"],                   KV version 2 mounts (in every namespace)
//    "jwks_file": "/path/jwks.json",            keys that JWT logins must be signed with
//                                               (read at each login)
//    "bound_issuer": "https://ferry.test",      optional: required "iss" of JWT logins
//    "jwt_roles": {"NAME": {"namespace": "", "bound_audiences": ["vault"],
//                           "bound_subject": "spiffe://...", "token_ttl": 60,
//                           "token_max_ttl": 600, "paths": ["secret/data/ci/*"]}},
//    "approle_roles": {"NAME": {"namespace": "", "role_id": "...", "secret_id": "...",
//                               "token_ttl": 60, "token_max_ttl": 600, "paths": [...]}},
//    "tokens": {"TOKEN": {"namespace": "", "paths": [...]}}}   static (non-expiring) tokens
// "paths" are ACL-like: "secret/data/ci/*" grants the prefix, anything else the exact path,
// "*" everything. A token works in its own namespace (a root-namespace token in all).
//
// Endpoints: GET/POST/PUT /v1/<kv>/data/<path> (?version=N), GET /v1/<kv>/metadata/<path>,
// POST/PUT /v1/auth/jwt/login, /v1/auth/approle/login, /v1/auth/token/renew-self,
// GET /v1/auth/token/lookup-self, GET /v1/sys/health; for tests: GET /_standin/stats,
// POST /_standin/reset, POST /_standin/fail (fault injection, below). Errors are Vault-shaped:
// {"errors": [...]}.
//
// POST /_standin/fail {"count": N, "kind": K, "path": P, ...}: the next N /v1 requests whose
// path contains P (every /v1 request without P) meet the fault K instead of an answer:
//   "status" (default)  answer {"errors": [body]} with "status" (e.g. 429, 500, 503), and
//                       Retry-After: "retry_after" (seconds) when given
//   "slow"              hold the request "delay_ms", then answer it normally (a read counts)
//   "truncate"          200, application/json, Content-Length larger than sent: the first part
//                       of a KV answer holding "body", then the connection is closed
//   "oversize"          200, application/json, chunked: "size" bytes (default 300 KiB) of a
//                       KV answer, past ferry's 256 KiB cap
//   "content_type"      200 and a well-formed KV answer holding "body", but text/html
//   "redirect"          "status" (default 307) with Location: "location" + the request path
// "body" is the text the fault carries (tests put a canary there: it must reach no log).
// stats.injected counts the faults, stats.reads the KV reads answered (after "slow" too).
// Prints "READY http://127.0.0.1:PORT" on stdout once listening.
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';

const args = process.argv.slice(2);
let port = 0;
let confPath = null;
for (let i = 0; i < args.length; i++) {
    if (args[i] === '--port') port = Number(args[++i]);
    else if (args[i] === '--config') confPath = args[++i];
    else {
        process.stderr.write(`unknown argument ${args[i]}\n`);
        process.exit(2);
    }
}
if (!confPath) {
    process.stderr.write('usage: vault_standin.mjs --config FILE [--port N]\n');
    process.exit(2);
}
const conf = JSON.parse(fs.readFileSync(confPath, 'utf8'));
const namespaces = new Set(['', ...(conf.namespaces || [])]);
const kvMounts = new Set(conf.kv_mounts || ['secret']);
const tokens = new Map(); // id -> {ns, paths, expires (ms, 0 = never), ttl, maxUntil, ...}
const kv = new Map(); // `${ns}\0${mount}\0${path}` -> {versions: [{data, created, deleted}]}
let stats;
let failPlan = {status: 0, count: 0};
const resetStats = () => {
    stats = {requests: 0, logins: {jwt: 0, approle: 0}, login_failures: 0, renewals: 0,
             lookups: 0, reads: 0, writes: 0, denied: 0, injected: 0,
             last_headers: {}};
};
resetStats();

const now = () => Date.now();
const rfc3339 = (ms) => new Date(ms).toISOString();
const requestId = () => crypto.randomUUID();

function addToken(id, t) {
    tokens.set(id, {accessor: crypto.randomBytes(12).toString('base64url'), created: now(), ...t});
    return tokens.get(id);
}
if (conf.root_token) addToken(conf.root_token, {ns: '', paths: ['*'], expires: 0, ttl: 0,
                                                policies: ['root'], renewable: false,
                                                path: 'auth/token/root'});
for (const [id, t] of Object.entries(conf.tokens || {}))
    addToken(id, {ns: t.namespace || '', paths: t.paths || [], expires: 0, ttl: 0,
                  policies: ['default'], renewable: false, path: 'auth/token/create'});

function send(res, status, body, extraHeaders) {
    const text = body === undefined ? '' : JSON.stringify(body);
    res.writeHead(status, {'Content-Type': 'application/json',
                           'Content-Length': Buffer.byteLength(text),
                           'Cache-Control': 'no-store', ...(extraHeaders || {})});
    res.end(text);
}
const errors = (res, status, ...msgs) => send(res, status, {errors: msgs});
const denied = (res) => { stats.denied++; errors(res, 403, 'permission denied'); };

function envelope(extra) {
    return {request_id: requestId(), lease_id: '', renewable: false, lease_duration: 0,
            data: null, wrap_info: null, warnings: null, auth: null, ...extra};
}

function readBody(req) {
    return new Promise((resolve, reject) => {
        const chunks = [];
        let size = 0;
        req.on('data', (c) => {
            size += c.length;
            if (size > 1 << 20) {
                reject(new Error('too large'));
                req.destroy();
            } else chunks.push(c);
        });
        req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
        req.on('error', reject);
    });
}

function pathAllowed(paths, p) {
    return paths.some((g) => g === '*' || g === p || (g.endsWith('*') && p.startsWith(g.slice(0, -1))));
}

// The token of the request, when it exists, has not expired and belongs to the namespace.
function tokenOf(req, ns) {
    const id = req.headers['x-vault-token'];
    if (!id) return null;
    const t = tokens.get(id);
    if (!t) return null;
    if (t.expires && now() >= t.expires) {
        tokens.delete(id);
        return null;
    }
    if (t.ns !== '' && t.ns !== ns) return null;
    return {id, t};
}

function issue(ns, role, kind, meta) {
    const id = 'hvs.' + crypto.randomBytes(24).toString('base64url');
    const ttl = role.token_ttl || 0;
    const t = addToken(id, {ns, paths: role.paths || [], ttl,
                            expires: ttl ? now() + ttl * 1000 : 0,
                            maxUntil: role.token_max_ttl ? now() + role.token_max_ttl * 1000 : 0,
                            policies: ['default', ...(role.policies || [])],
                            renewable: ttl > 0, path: `auth/${kind}/login`, meta});
    return envelope({auth: {client_token: id, accessor: t.accessor, policies: t.policies,
                            token_policies: t.policies, metadata: meta, lease_duration: ttl,
                            renewable: t.renewable, entity_id: '', token_type: 'service',
                            orphan: true, mfa_requirement: null, num_uses: 0}});
}

// ---- JWT verification (signature against the JWKS file, exp/nbf, aud, sub, iss) ----------

function b64json(s) {
    return JSON.parse(Buffer.from(s, 'base64url').toString('utf8'));
}

function verifyJwt(jwt) {
    const parts = typeof jwt === 'string' ? jwt.split('.') : [];
    if (parts.length !== 3) throw new Error('error validating token: malformed JWT');
    let header, claims;
    try {
        header = b64json(parts[0]);
        claims = b64json(parts[1]);
    } catch {
        throw new Error('error validating token: malformed JWT');
    }
    const jwks = JSON.parse(fs.readFileSync(conf.jwks_file, 'utf8'));
    const candidates = (jwks.keys || []).filter((k) => !header.kid || k.kid === header.kid);
    const data = Buffer.from(parts[0] + '.' + parts[1]);
    const sig = Buffer.from(parts[2], 'base64url');
    const algs = {RS256: ['sha256', {}], RS384: ['sha384', {}], RS512: ['sha512', {}],
                  PS256: ['sha256', {padding: crypto.constants.RSA_PKCS1_PSS_PADDING,
                                     saltLength: 32}],
                  ES256: ['sha256', {dsaEncoding: 'ieee-p1363'}],
                  ES384: ['sha384', {dsaEncoding: 'ieee-p1363'}],
                  EdDSA: [null, {}]};
    const alg = algs[header.alg];
    if (!alg) throw new Error('error validating token: unsupported signing algorithm');
    const ok = candidates.some((k) => {
        try {
            const key = crypto.createPublicKey({key: k, format: 'jwk'});
            return crypto.verify(alg[0], data, {key, ...alg[1]}, sig);
        } catch {
            return false;
        }
    });
    if (!ok) throw new Error('error validating token: failed to verify id token signature');
    const t = now() / 1000;
    const leeway = 150; // Vault's default expiration_leeway and not_before_leeway
    if (typeof claims.exp !== 'number' || t > claims.exp + leeway)
        throw new Error('error validating token: token is expired (exp)');
    if (typeof claims.nbf === 'number' && t < claims.nbf - leeway)
        throw new Error('error validating token: token not valid yet (nbf)');
    if (conf.bound_issuer && claims.iss !== conf.bound_issuer)
        throw new Error('error validating token: invalid issuer (iss) claim');
    return claims;
}

function jwtLogin(ns, body) {
    if (!body.role) return [400, 'missing role'];
    if (!body.jwt) return [400, 'missing token'];
    const role = (conf.jwt_roles || {})[body.role];
    if (!role || (role.namespace || '') !== ns) return [400, `role "${body.role}" could not be found`];
    let claims;
    try {
        claims = verifyJwt(body.jwt);
    } catch (e) {
        return [400, e.message];
    }
    const aud = Array.isArray(claims.aud) ? claims.aud : [claims.aud];
    if (role.bound_audiences && !aud.some((a) => role.bound_audiences.includes(a)))
        return [400, 'error validating token: invalid audience (aud) claim: audience claim ' +
                     'does not match any expected audience'];
    if (role.bound_subject && claims.sub !== role.bound_subject)
        return [400, 'sub claim does not match bound subject'];
    stats.logins.jwt++;
    return [200, issue(ns, role, 'jwt', {role: body.role})];
}

function approleLogin(ns, body) {
    if (!body.role_id) return [400, 'missing role_id'];
    const entry = Object.entries(conf.approle_roles || {}).find(
        ([, r]) => r.role_id === body.role_id && (r.namespace || '') === ns);
    if (!entry) return [400, 'invalid role or secret ID'];
    const [name, role] = entry;
    const a = Buffer.from(String(body.secret_id || ''));
    const b = Buffer.from(role.secret_id);
    if (a.length !== b.length || !crypto.timingSafeEqual(a, b))
        return [400, 'invalid role or secret ID'];
    stats.logins.approle++;
    return [200, issue(ns, role, 'approle', {role_name: name})];
}

// ---- KV version 2 -------------------------------------------------------------------------

function kvRead(res, ns, mount, path, query) {
    const e = kv.get(`${ns}\0${mount}\0${path}`);
    let vn = query.get('version');
    if (!e) return errors(res, 404); // Vault: 404 with an empty errors array
    vn = vn === null || vn === '0' ? e.versions.length : Number(vn);
    if (!Number.isInteger(vn) || vn < 1 || vn > e.versions.length) return errors(res, 404);
    const v = e.versions[vn - 1];
    const metadata = {created_time: rfc3339(v.created), custom_metadata: null,
                      deletion_time: v.deleted ? rfc3339(v.deleted) : '', destroyed: false,
                      version: vn};
    stats.reads++;
    if (v.deleted) return send(res, 404, envelope({data: {data: null, metadata}}));
    send(res, 200, envelope({data: {data: v.data, metadata}}));
}

function kvWrite(res, ns, mount, path, body) {
    if (!body || typeof body.data !== 'object' || body.data === null || Array.isArray(body.data))
        return errors(res, 400, 'no data provided');
    const key = `${ns}\0${mount}\0${path}`;
    if (!kv.has(key)) kv.set(key, {versions: []});
    const e = kv.get(key);
    if (body.options && body.options.cas !== undefined && body.options.cas !== e.versions.length)
        return errors(res, 400, 'check-and-set parameter did not match the current version');
    e.versions.push({data: body.data, created: now(), deleted: 0});
    stats.writes++;
    send(res, 200, envelope({data: {created_time: rfc3339(now()), custom_metadata: null,
                                    deletion_time: '', destroyed: false,
                                    version: e.versions.length}}));
}

function kvMetadata(res, ns, mount, path) {
    const e = kv.get(`${ns}\0${mount}\0${path}`);
    if (!e) return errors(res, 404);
    const versions = {};
    e.versions.forEach((v, i) => {
        versions[i + 1] = {created_time: rfc3339(v.created),
                           deletion_time: v.deleted ? rfc3339(v.deleted) : '', destroyed: false};
    });
    send(res, 200, envelope({data: {current_version: e.versions.length, oldest_version: 1,
                                    max_versions: 0, versions}}));
}

// ---- fault injection (POST /_standin/fail) -------------------------------------------------

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// A KV v2 read answer whose field "value" holds text.
function kvAnswer(text) {
    return JSON.stringify(envelope({data: {data: {value: text},
                                           metadata: {created_time: rfc3339(now()),
                                                      custom_metadata: null, deletion_time: '',
                                                      destroyed: false, version: 1}}}));
}

// Meet the request with plan's fault. true when answered; false to go on normally ("slow").
async function injectFault(req, res, plan) {
    const kind = plan.kind || 'status';
    const text = plan.body || 'injected failure';
    if (kind === 'status') {
        const extra = plan.retry_after !== undefined ? {'Retry-After': String(plan.retry_after)}
                                                     : {};
        send(res, plan.status || 503, {errors: [text]}, extra);
        return true;
    }
    if (kind === 'slow') {
        await sleep(plan.delay_ms || 1000);
        // A client that gave up (its timeout) is not answered and its read not counted.
        if (req.socket.destroyed) {
            stats.abandoned = (stats.abandoned || 0) + 1;
            return true;
        }
        return false;
    }
    if (kind === 'truncate') {
        const full = Buffer.from(kvAnswer(text));
        res.writeHead(200, {'Content-Type': 'application/json',
                            'Content-Length': full.length + 64});
        res.write(full.subarray(0, Math.floor(full.length * 0.75)));
        await sleep(50);
        res.socket.destroy();
        return true;
    }
    if (kind === 'oversize') {
        const size = plan.size || 300 * 1024;
        res.writeHead(200, {'Content-Type': 'application/json'}); // chunked: no length up front
        res.write('{"data":{"data":{"value":"');
        const chunk = 'A'.repeat(16384);
        for (let sent = 0; sent < size && !res.destroyed; sent += chunk.length)
            if (!res.write(chunk))
                await Promise.race([new Promise((resolve) => res.once('drain', resolve)),
                                    new Promise((resolve) => res.once('close', resolve))]);
        if (!res.destroyed) res.end('"}}}');
        return true;
    }
    if (kind === 'content_type') {
        const t = kvAnswer(text);
        res.writeHead(200, {'Content-Type': 'text/html; charset=utf-8',
                            'Content-Length': Buffer.byteLength(t)});
        res.end(t);
        return true;
    }
    if (kind === 'redirect') {
        res.writeHead(plan.status || 307, {'Location': plan.location + req.url,
                                           'Content-Length': 0});
        res.end();
        return true;
    }
    send(res, 500, {errors: [`unknown fault kind ${kind}`]});
    return true;
}

// ---- dispatch ------------------------------------------------------------------------------

async function handle(req, res) {
    const url = new URL(req.url, 'http://127.0.0.1');
    const p = url.pathname;
    if (p === '/_standin/stats' && req.method === 'GET') return send(res, 200, stats);
    if (p === '/_standin/reset' && req.method === 'POST') {
        resetStats();
        return send(res, 200, {});
    }
    if (p === '/_standin/fail' && req.method === 'POST') {
        failPlan = JSON.parse(await readBody(req));
        return send(res, 200, failPlan);
    }
    if (!p.startsWith('/v1/')) return errors(res, 404, 'not found');
    stats.requests++;
    stats.last_headers = {namespace: req.headers['x-vault-namespace'] || '',
                          has_token: Boolean(req.headers['x-vault-token'])};
    if (failPlan.count > 0 && (!failPlan.path || p.includes(failPlan.path))) {
        failPlan.count--;
        stats.injected++;
        if (await injectFault(req, res, failPlan)) return;
    }
    const ns = (req.headers['x-vault-namespace'] || '').replace(/^\/+|\/+$/g, '');
    if (!namespaces.has(ns)) return errors(res, 404, 'no handler for route: namespace not found');
    const route = p.slice(4);
    let body = {};
    if (req.method === 'POST' || req.method === 'PUT') {
        const text = await readBody(req);
        try {
            body = text ? JSON.parse(text) : {};
        } catch {
            return errors(res, 400, 'failed to parse JSON input');
        }
    }
    if (route === 'sys/health' && req.method === 'GET')
        return send(res, 200, {initialized: true, sealed: false, standby: false,
                               version: '1.17.0-standin', cluster_name: 'standin'});
    if (route === 'auth/jwt/login' || route === 'auth/approle/login') {
        if (req.method !== 'POST' && req.method !== 'PUT') return errors(res, 405);
        const [status, out] = route === 'auth/jwt/login' ? jwtLogin(ns, body)
                                                         : approleLogin(ns, body);
        if (status !== 200) {
            stats.login_failures++;
            return errors(res, status, out);
        }
        return send(res, 200, out);
    }
    if (route === 'auth/token/lookup-self' && req.method === 'GET') {
        const tk = tokenOf(req, ns);
        if (!tk) return denied(res);
        stats.lookups++;
        const t = tk.t;
        const ttl = t.expires ? Math.max(0, Math.round((t.expires - now()) / 1000)) : 0;
        return send(res, 200, envelope({data: {
            accessor: t.accessor, creation_time: Math.floor(t.created / 1000),
            creation_ttl: t.ttl, display_name: t.path.split('/')[1] || 'token', entity_id: '',
            expire_time: t.expires ? rfc3339(t.expires) : null, explicit_max_ttl: 0,
            id: tk.id, issue_time: rfc3339(t.created), meta: t.meta || null, num_uses: 0,
            orphan: true, path: t.path, policies: t.policies, renewable: t.renewable, ttl,
            type: 'service', namespace_path: ns ? ns + '/' : ''}}));
    }
    if (route === 'auth/token/renew-self' && (req.method === 'POST' || req.method === 'PUT')) {
        const tk = tokenOf(req, ns);
        if (!tk) return denied(res);
        const t = tk.t;
        if (!t.renewable) return errors(res, 400, 'lease is not renewable');
        let inc = Number(body.increment) || t.ttl;
        let until = now() + inc * 1000;
        if (t.maxUntil && until > t.maxUntil) until = t.maxUntil;
        t.expires = until;
        stats.renewals++;
        const lease = Math.max(0, Math.round((until - now()) / 1000));
        return send(res, 200, envelope({auth: {client_token: tk.id, accessor: t.accessor,
                                               policies: t.policies, token_policies: t.policies,
                                               metadata: t.meta || null, lease_duration: lease,
                                               renewable: true, entity_id: '',
                                               token_type: 'service', orphan: true,
                                               mfa_requirement: null, num_uses: 0}}));
    }
    const m = /^([A-Za-z0-9_.-]+)\/(data|metadata)\/(.+)$/.exec(route);
    if (m && kvMounts.has(m[1])) {
        const [, mount, kind, path] = m;
        const tk = tokenOf(req, ns);
        if (!tk || !pathAllowed(tk.t.paths, `${mount}/${kind}/${path}`)) return denied(res);
        if (kind === 'metadata' && req.method === 'GET') return kvMetadata(res, ns, mount, path);
        if (kind === 'data' && req.method === 'GET')
            return kvRead(res, ns, mount, path, url.searchParams);
        if (kind === 'data' && (req.method === 'POST' || req.method === 'PUT'))
            return kvWrite(res, ns, mount, path, body);
        return errors(res, 405, 'unsupported operation');
    }
    return errors(res, 404, `no handler for route "${route}". route entry not found.`);
}

const server = http.createServer((req, res) => {
    handle(req, res).catch((e) => {
        if (!res.headersSent) errors(res, 500, 'internal error: ' + e.message);
    });
});
server.listen(port, '127.0.0.1', () => {
    process.stdout.write(`READY http://127.0.0.1:${server.address().port}\n`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
