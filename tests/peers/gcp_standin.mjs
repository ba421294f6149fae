// gcp_standin.mjs - a plain-HTTP stand-in on 127.0.0.1 for the three Google Cloud calls of
// ferry's gcp-sm backend, written from Google's API references (Security Token Service v1
// token, IAM Service Account Credentials v1 generateAccessToken, Secret Manager v1
// projects.secrets.versions.access) for ferry's integration tests. Node built-ins only.
//
//   node gcp_standin.mjs --config FILE [--port N]
//
// FILE (JSON):
//   {"jwks_file": "/path/jwks.json",             keys subject tokens must be signed with
//                                                (read at each exchange)
//    "providers": {"//iam.googleapis.com/projects/N/locations/global/workloadIdentityPools/P/
//                   providers/X": {"issuer": "https://ferry.test",
//                                  "allowed_audiences": [...]}},  default ["https:" + name]
//    "projects": {"my-project": "123456789012"},   project id -> number
//    "service_accounts": {"EMAIL": {"members": ["principal://iam.googleapis.com/projects/N/
//                   locations/global/workloadIdentityPools/P/subject/SUB", ...]}},
//                                                 who holds roles/iam.workloadIdentityUser
//    "secrets": {"projects/my-project/secrets/S": {"accessors": [MEMBER, ...],
//                   "versions": [{"text": "...", "state": "ENABLED|DISABLED|DESTROYED"}]}},
//                                                 MEMBER: a principal:// URI as above or
//                                                 "serviceAccount:EMAIL"
//    "token_ttl": 3600}                           lifetime of the tokens issued
//
// Counters (GET /_standin/stats): calls.{sts,iam,access} count every request of each path,
// faults included; sts_ok, iam_ok, access_ok the answered ones; early_retries the requests
// that came back before the Retry-After of a 429 or 503 had passed.
// Endpoints: POST /v1/token (form or JSON body), POST /v1/projects/-/serviceAccounts/
// EMAIL:generateAccessToken, GET /v1/projects/P/secrets/S/versions/V:access; for tests:
// GET /_standin/stats, POST /_standin/reset, POST /_standin/fail {"path": "sts" | "iam" |
// "access", "kind": "status" | "slow" | "truncate" | "oversize" | "content_type" | "bad_crc",
// "status": 429, "retry_after": 1, "delay_ms": 2000, "count": N} (the next N requests of that
// path meet the fault). Errors are Google-shaped: {"error": {"code", "message", "status"}},
// and OAuth-shaped at STS: {"error", "error_description"}. Like Google's, the messages echo
// parts of the request. Prints "READY http://127.0.0.1:PORT" on stdout once listening.
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
    process.stderr.write('usage: gcp_standin.mjs --config FILE [--port N]\n');
    process.exit(2);
}
const conf = JSON.parse(fs.readFileSync(confPath, 'utf8'));
const TTL = conf.token_ttl || 3600;
const tokens = new Map(); // access token -> {principal, expires (ms), kind}
let stats;
let faults = []; // [{path, kind, ..., count}]
const notBefore = {}; // path -> ms before which a retry after a 429 is early
const resetStats = () => {
    stats = {requests: 0, calls: {sts: 0, iam: 0, access: 0}, sts: 0, sts_ok: 0, sts_refused: 0, iam: 0, iam_ok: 0, iam_refused: 0,
             access: 0, access_ok: 0, access_denied: 0, unauthenticated: 0, injected: 0,
             early_retries: 0, last: {}};
};
resetStats();

const now = () => Date.now();
const projectNumber = (id) => (conf.projects || {})[id] || (/^\d+$/.test(id) ? id : null);

// ---- CRC-32C (Castagnoli, reflected 0x82F63B78) ----------------------------------------------
const CRC_TABLE = (() => {
    const t = new Uint32Array(256);
    for (let i = 0; i < 256; i++) {
        let c = i;
        for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
        t[i] = c >>> 0;
    }
    return t;
})();
function crc32c(buf) {
    let c = 0xffffffff;
    for (const b of buf) c = CRC_TABLE[(c ^ b) & 0xff] ^ (c >>> 8);
    return (c ^ 0xffffffff) >>> 0;
}

// ---- answers --------------------------------------------------------------------------------
function send(res, status, body, extra = {}) {
    const text = JSON.stringify(body);
    res.writeHead(status, {'Content-Type': 'application/json; charset=UTF-8',
                           'Content-Length': Buffer.byteLength(text), ...extra});
    res.end(text);
}
const STATUS = {400: 'INVALID_ARGUMENT', 401: 'UNAUTHENTICATED', 403: 'PERMISSION_DENIED',
                404: 'NOT_FOUND', 429: 'RESOURCE_EXHAUSTED', 500: 'INTERNAL',
                503: 'UNAVAILABLE'};
function gerror(res, code, message, status, extra) {
    send(res, code, {error: {code, message, status: status || STATUS[code] || 'UNKNOWN'}}, extra);
}
function oauthError(res, code, error, description) {
    send(res, code, {error, error_description: description});
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

// ---- subject token verification (signature against the JWKS file, exp, iat, iss, aud) --------
function b64json(s) {
    return JSON.parse(Buffer.from(s, 'base64url').toString('utf8'));
}

function verifyJwt(jwt, provider, providerName) {
    const parts = typeof jwt === 'string' ? jwt.split('.') : [];
    if (parts.length !== 3) throw new Error('Unable to parse the ID Token.');
    let header, claims;
    try {
        header = b64json(parts[0]);
        claims = b64json(parts[1]);
    } catch {
        throw new Error('Unable to parse the ID Token.');
    }
    const jwks = JSON.parse(fs.readFileSync(conf.jwks_file, 'utf8'));
    const candidates = (jwks.keys || []).filter((k) => !header.kid || k.kid === header.kid);
    const data = Buffer.from(parts[0] + '.' + parts[1]);
    const sig = Buffer.from(parts[2], 'base64url');
    const algs = {RS256: ['sha256', {}], RS384: ['sha384', {}], RS512: ['sha512', {}],
                  ES256: ['sha256', {dsaEncoding: 'ieee-p1363'}],
                  ES384: ['sha384', {dsaEncoding: 'ieee-p1363'}]};
    const alg = algs[header.alg];
    if (!alg) throw new Error(`The ID Token is signed with an unsupported algorithm ${header.alg}.`);
    const ok = candidates.some((k) => {
        try {
            return crypto.verify(alg[0], data,
                                 {key: crypto.createPublicKey({key: k, format: 'jwk'}), ...alg[1]},
                                 sig);
        } catch {
            return false;
        }
    });
    if (!ok) throw new Error('Invalid ID Token signature.');
    const t = now() / 1000;
    if (typeof claims.exp !== 'number' || t > claims.exp)
        throw new Error('The ID Token has expired.');
    if (typeof claims.iat !== 'number' || claims.iat > t + 300)
        throw new Error('The ID Token was issued in the future.');
    if (claims.exp - claims.iat > 86400)
        throw new Error('The ID Token lifetime is longer than one day.');
    if (claims.iss !== provider.issuer)
        throw new Error(`The issuer ${claims.iss} does not match the expected value.`);
    const allowed = provider.allowed_audiences || ['https:' + providerName];
    const aud = Array.isArray(claims.aud) ? claims.aud : [claims.aud];
    if (!aud.some((a) => allowed.includes(a)))
        throw new Error(`The audience in ID Token [${aud.join(',')}] does not match the expected ` +
                        'audience.');
    if (typeof claims.sub !== 'string' || !claims.sub)
        throw new Error('The ID Token has no subject.');
    return claims;
}

// ---- STS ------------------------------------------------------------------------------------
async function sts(req, res) {
    stats.sts++;
    const ct = (req.headers['content-type'] || '').split(';')[0].trim().toLowerCase();
    const raw = await readBody(req);
    let p;
    if (ct === 'application/x-www-form-urlencoded') p = Object.fromEntries(new URLSearchParams(raw));
    else if (ct === 'application/json') {
        try {
            const j = JSON.parse(raw);
            // The JSON form takes the proto field names in either spelling.
            p = {grant_type: j.grant_type ?? j.grantType, audience: j.audience, scope: j.scope,
                 requested_token_type: j.requested_token_type ?? j.requestedTokenType,
                 subject_token: j.subject_token ?? j.subjectToken,
                 subject_token_type: j.subject_token_type ?? j.subjectTokenType};
        } catch {
            stats.sts_refused++;
            return oauthError(res, 400, 'invalid_request', 'Invalid JSON payload received.');
        }
    } else {
        stats.sts_refused++;
        return oauthError(res, 400, 'invalid_request', `Unsupported content type ${ct}.`);
    }
    stats.last.sts = {content_type: ct, grant_type: p.grant_type, audience: p.audience,
                      scope: p.scope, requested_token_type: p.requested_token_type,
                      subject_token_type: p.subject_token_type};
    const refuse = (error, d) => {
        stats.sts_refused++;
        return oauthError(res, 400, error, d);
    };
    if (p.grant_type !== 'urn:ietf:params:oauth:grant-type:token-exchange')
        return refuse('unsupported_grant_type', `Unsupported grant type ${p.grant_type}.`);
    if (p.requested_token_type !== 'urn:ietf:params:oauth:token-type:access_token')
        return refuse('invalid_request',
                      `Invalid value for "requested_token_type": ${p.requested_token_type}`);
    if (!['urn:ietf:params:oauth:token-type:jwt', 'urn:ietf:params:oauth:token-type:id_token']
        .includes(p.subject_token_type))
        return refuse('invalid_request',
                      `Invalid value for "subject_token_type": ${p.subject_token_type}`);
    if (!p.subject_token) return refuse('invalid_request', 'Missing subject_token.');
    const provider = (conf.providers || {})[p.audience];
    if (!provider)
        return refuse('invalid_target', `The target service indicated by the "audience" ` +
                      `parameters is invalid: ${p.audience}`);
    let claims;
    try {
        claims = verifyJwt(p.subject_token, provider, p.audience);
    } catch (e) {
        return refuse('invalid_grant', e.message);
    }
    // Who signed the accepted subject token, for the test to check it was ferry's key.
    stats.last.sts_subject = {kid: JSON.parse(Buffer.from(p.subject_token.split('.')[0],
                                                          'base64url')).kid,
                              iss: claims.iss, sub: claims.sub, aud: claims.aud};
    const pool = p.audience.replace(/^\/\/iam\.googleapis\.com\//, '').replace(/\/providers\/.*$/, '');
    const principal = `principal://iam.googleapis.com/${pool}/subject/${claims.sub}`;
    const token = 'ya29.fed-' + crypto.randomBytes(24).toString('base64url');
    tokens.set(token, {principal, expires: now() + TTL * 1000, kind: 'federated',
                       scopes: (p.scope || '').split(' ').filter(Boolean)});
    stats.sts_ok++;
    send(res, 200, {access_token: token,
                    issued_token_type: 'urn:ietf:params:oauth:token-type:access_token',
                    token_type: 'Bearer', expires_in: TTL});
}

// The identity behind the request's Bearer token, or null.
function bearer(req) {
    const m = /^Bearer ([!-~]+)$/.exec(req.headers.authorization || '');
    if (!m) return null;
    const t = tokens.get(m[1]);
    if (!t || now() >= t.expires) return null;
    return t;
}

// ---- IAM Credentials ------------------------------------------------------------------------
async function generateAccessToken(req, res, email) {
    stats.iam++;
    const raw = await readBody(req);
    const refuse = (code, msg, st) => {
        stats.iam_refused++;
        return gerror(res, code, msg, st);
    };
    const who = bearer(req);
    if (!who)
        return refuse(401, 'Request had invalid authentication credentials. Expected OAuth 2 ' +
                      'access token, login cookie or other valid authentication credential.');
    let body;
    try {
        body = JSON.parse(raw);
    } catch {
        return refuse(400, `Invalid JSON payload received. ${raw.slice(0, 40)}`);
    }
    if (!Array.isArray(body.scope) || body.scope.length === 0 ||
        !body.scope.every((s) => typeof s === 'string'))
        return refuse(400, 'Scope required.');
    let lifetime = 3600;
    if (body.lifetime !== undefined) {
        const m = /^(\d+)(\.\d+)?s$/.exec(String(body.lifetime));
        if (!m || Number(m[1]) < 1 || Number(m[1]) > 3600)
            return refuse(400, `Invalid value at 'lifetime' (${body.lifetime})`);
        lifetime = Number(m[1]);
    }
    stats.last.iam = {email, scope: body.scope, lifetime: body.lifetime};
    const sa = (conf.service_accounts || {})[email];
    if (!sa || !(sa.members || []).includes(who.principal))
        return refuse(403, `Permission 'iam.serviceAccounts.getAccessToken' denied on resource ` +
                      `(or it may not exist). ${email}`);
    const token = 'ya29.sa-' + crypto.randomBytes(24).toString('base64url');
    const expires = now() + lifetime * 1000;
    tokens.set(token, {principal: 'serviceAccount:' + email, expires, kind: 'service_account',
                       scopes: body.scope});
    stats.iam_ok++;
    send(res, 200, {accessToken: token,
                    expireTime: new Date(Math.floor(expires / 1000) * 1000).toISOString()
                        .replace('.000Z', 'Z')});
}

// ---- Secret Manager -------------------------------------------------------------------------
function access(req, res, project, secret, version, fault) {
    stats.access++;
    const who = bearer(req);
    if (!who) {
        stats.unauthenticated++;
        return gerror(res, 401, 'Request had invalid authentication credentials. Expected ' +
                      'OAuth 2 access token, login cookie or other valid authentication ' +
                      'credential.');
    }
    stats.last.access = {principal: who.principal, project, secret, version};
    const number = projectNumber(project);
    const id = Object.keys(conf.projects || {}).find((k) => conf.projects[k] === number) || project;
    const s = (conf.secrets || {})[`projects/${id}/secrets/${secret}`];
    const full = `projects/${number}/secrets/${secret}`;
    if (!number || !s) return gerror(res, 404, `Secret [${full}] not found or has no versions.`);
    if (!(s.accessors || []).includes(who.principal)) {
        stats.access_denied++;
        return gerror(res, 403, `Permission 'secretmanager.versions.access' denied for ` +
                      `resource '${full}/versions/${version}' (or it may not exist).`);
    }
    let n;
    if (version === 'latest') {
        n = 0;
        s.versions.forEach((v, i) => { if ((v.state || 'ENABLED') === 'ENABLED') n = i + 1; });
        if (!n) return gerror(res, 404, `Secret [${full}] not found or has no versions.`);
    } else {
        n = Number(version);
        if (!/^\d+$/.test(version) || n < 1 || n > s.versions.length)
            return gerror(res, 404, `Secret Version [${full}/versions/${version}] not found.`);
    }
    const v = s.versions[n - 1];
    const state = v.state || 'ENABLED';
    if (state !== 'ENABLED')
        return gerror(res, 400, `Secret Version [${full}/versions/${n}] is in ${state} state.`,
                      'FAILED_PRECONDITION');
    const bytes = v.base64 !== undefined ? Buffer.from(v.base64, 'base64')
                                         : Buffer.from(v.text, 'utf8');
    let crc = crc32c(bytes);
    if (fault === 'bad_crc') crc = (crc ^ 1) >>> 0;
    stats.access_ok++;
    send(res, 200, {name: `${full}/versions/${n}`,
                    payload: {data: bytes.toString('base64'), dataCrc32c: String(crc)}});
}

// ---- fault injection ------------------------------------------------------------------------
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// Meet the request with fault f. 'answered' when done, 'slow' / 'bad_crc' to go on normally.
async function injectFault(req, res, f, kind) {
    if (f.kind === 'status' || !f.kind) {
        const code = f.status || 503;
        const extra = f.retry_after !== undefined ? {'Retry-After': String(f.retry_after)} : {};
        if (f.retry_after !== undefined)
            notBefore[kind] = now() + Number(f.retry_after) * 1000;
        if (kind === 'sts')
            send(res, code, {error: code === 429 ? 'rate_limit_exceeded' : 'server_error',
                             error_description: 'injected'}, extra);
        else gerror(res, code, 'injected failure', undefined, extra);
        return 'answered';
    }
    if (f.kind === 'slow') {
        await sleep(f.delay_ms || 2000);
        // A client that gave up (its timeout) is not answered, and its request is not counted
        // as served: a late count would land in a later test's window.
        if (req.socket.destroyed) {
            stats.abandoned = (stats.abandoned || 0) + 1;
            return 'answered';
        }
        return 'go';
    }
    const sample = JSON.stringify({name: 'projects/1/secrets/x/versions/1',
                                   payload: {data: Buffer.from('injected').toString('base64'),
                                             dataCrc32c: String(crc32c(Buffer.from('injected')))}});
    if (f.kind === 'truncate') {
        const full = Buffer.from(sample);
        res.writeHead(200, {'Content-Type': 'application/json; charset=UTF-8',
                            'Content-Length': full.length});
        res.write(full.subarray(0, Math.floor(full.length / 2)));
        await sleep(50);
        res.socket.destroy();
        return 'answered';
    }
    if (f.kind === 'oversize') {
        const size = f.size || 300 * 1024;
        res.writeHead(200, {'Content-Type': 'application/json; charset=UTF-8'}); // chunked
        res.write('{"name":"projects/1/secrets/x/versions/1","payload":{"data":"');
        const chunk = 'QUFB'.repeat(4096);
        for (let sent = 0; sent < size && !res.destroyed; sent += chunk.length)
            if (!res.write(chunk))
                await Promise.race([new Promise((resolve) => res.once('drain', resolve)),
                                    new Promise((resolve) => res.once('close', resolve))]);
        if (!res.destroyed) res.end('"}}');
        return 'answered';
    }
    if (f.kind === 'content_type') {
        res.writeHead(200, {'Content-Type': 'text/html; charset=utf-8',
                            'Content-Length': Buffer.byteLength(sample)});
        res.end(sample);
        return 'answered';
    }
    if (f.kind === 'bad_crc') return 'bad_crc';
    gerror(res, 500, `unknown fault kind ${f.kind}`);
    return 'answered';
}

// ---- dispatch -------------------------------------------------------------------------------
const ACCESS = /^\/v1\/projects\/([a-z0-9-]+)\/secrets\/([A-Za-z0-9_-]+)\/versions\/([a-z0-9]+):access$/;
const GAT = /^\/v1\/projects\/-\/serviceAccounts\/([^/:]+):generateAccessToken$/;

async function handle(req, res) {
    const url = new URL(req.url, 'http://127.0.0.1');
    const p = url.pathname;
    if (p === '/_standin/stats' && req.method === 'GET') return send(res, 200, stats);
    if (p === '/_standin/reset' && req.method === 'POST') {
        resetStats();
        faults = [];
        return send(res, 200, {});
    }
    if (p === '/_standin/fail' && req.method === 'POST') {
        const f = JSON.parse(await readBody(req));
        faults = faults.filter((x) => x.path !== f.path);
        if (f.count > 0) faults.push(f);
        return send(res, 200, f);
    }
    let kind = null, m;
    if (p === '/v1/token' && req.method === 'POST') kind = 'sts';
    else if ((m = GAT.exec(p)) && req.method === 'POST') kind = 'iam';
    else if ((m = ACCESS.exec(p)) && req.method === 'GET') kind = 'access';
    if (!kind) return gerror(res, 404, `The requested URL ${p} was not found on this server.`);
    stats.requests++;
    stats.calls[kind]++;
    if (notBefore[kind]) {
        if (now() < notBefore[kind] - 50) stats.early_retries++;
        delete notBefore[kind];
    }
    let go = 'go';
    const f = faults.find((x) => x.path === kind && x.count > 0);
    if (f) {
        f.count--;
        stats.injected++;
        go = await injectFault(req, res, f, kind);
        if (go === 'answered') return;
    }
    if (kind === 'sts') return sts(req, res);
    if (kind === 'iam') return generateAccessToken(req, res, decodeURIComponent(m[1]));
    return access(req, res, m[1], m[2], m[3], go);
}

const server = http.createServer((req, res) => {
    handle(req, res).catch((e) => {
        if (!res.headersSent) gerror(res, 500, `stand-in error: ${e.message}`);
        else res.destroy();
    });
});
server.listen(port, '127.0.0.1', () => {
    process.stdout.write(`READY http://127.0.0.1:${server.address().port}\n`);
});
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => process.exit(0));
