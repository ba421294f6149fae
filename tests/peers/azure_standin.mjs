// azure_standin.mjs - an HTTPS stand-in of Entra ID's v2 token endpoint (client credentials
// with a federated client assertion) and of Azure Key Vault's Get Secret API on 127.0.0.1,
// written from Microsoft's references ("Microsoft identity platform and the OAuth 2.0 client
// credentials flow", "Workload identity federation", Key Vault REST "Get Secret",
// "Authentication, requests and responses") for ferry's integration tests. Node built-ins only.
//
//   node azure_standin.mjs --config FILE [--port N]
//
// FILE (JSON):
//   {"cert": "good.pem", "key": "good.key",        TLS (tests/peers/mkcerts.sh)
//    "tenant_id": GUID, "jwks_file": PATH,          assertions must be signed by a key of the
//                                                   JWKS (read at each token request)
//    "federated_credentials": [{"client_id": GUID, "issuer": I, "subject": S,
//                               "audience": "api://AzureADTokenExchange"}],
//    "resource": "https://vault.azure.net",         the audience of Key Vault's tokens
//    "api_versions": ["7.4", ...],                  supported Key Vault api-versions
//    "token_lifetime": 3599,
//    "vaults": {"NAME": {"readers": [client ids]}}, "default_vault": NAME}
// Key Vault is served at /<vault>/secrets/<name>[/<version>] (ferry's vault_url
// https://127.0.0.1:PORT/{vault}) and, for the default vault, at /secrets/... (the SDK's
// vaultUrl https://127.0.0.1:PORT: its identifier parser wants /secrets/ first in the path).
// Entra ID: GET /<tenant>/v2.0/.well-known/openid-configuration, POST
// /<tenant>/oauth2/v2.0/token. For tests: GET /_standin/stats, POST /_standin/reset,
// POST /_standin/secret {vault, name, value, enabled, exp, nbf, contentType, tags} (answers
// {version}), POST /_standin/revoke (forget issued tokens), POST /_standin/config {token_lifetime},
// POST /_standin/fail {"target": "token"|"kv", "count": N, "mode": "status"|"slow"|
// "truncate"|"oversize"|"content_type"|"challenge", "status": 429, "retry_after": S,
// "message": M (error.message of a status answer, e.g. a canary), "delay_ms": MS,
// "www_authenticate": "..."} (plans queue; the first matching one applies).
// Prints "READY https://127.0.0.1:PORT" on stdout once listening.
import crypto from 'node:crypto';
import fs from 'node:fs';
import https from 'node:https';

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
    process.stderr.write('usage: azure_standin.mjs --config FILE [--port N]\n');
    process.exit(2);
}
const conf = JSON.parse(fs.readFileSync(confPath, 'utf8'));
const tenant = conf.tenant_id.toLowerCase();
const resource = (conf.resource || 'https://vault.azure.net').replace(/\/+$/, '');
const apiVersions = new Set(conf.api_versions || ['7.4', '7.5', '7.6', '2025-07-01']);
let tokenLifetime = conf.token_lifetime || 3599;
const vaults = new Map(); // name -> {readers: Set, secrets: Map(name -> [versions])}
for (const [name, v] of Object.entries(conf.vaults || {}))
    vaults.set(name, {readers: new Set((v.readers || []).map((c) => c.toLowerCase())),
                      secrets: new Map()});
const tokens = new Map(); // access token -> {client_id, aud, tid, exp (s)}
let stats;
let plans = [];
let origin = '';
const resetStats = () => {
    stats = {requests: 0, token_requests: 0, tokens_issued: 0, token_failures: 0,
             token_errors: [], scopes: [], kv_requests: 0, kv_reads: 0, kv_unauthenticated: 0,
             challenges: 0, denied: 0, not_found: 0, bad_api_version: 0, injected: 0,
             metadata_requests: 0, last_api_version: '', token_requests_by_tenant: {}};
};
resetStats();

const nowS = () => Math.floor(Date.now() / 1000);
const guid = () => crypto.randomUUID();

function send(res, status, body, headers = {}) {
    const text = body === undefined ? '' : JSON.stringify(body);
    res.writeHead(status, {'Content-Type': 'application/json; charset=utf-8',
                           'Content-Length': Buffer.byteLength(text),
                           'Cache-Control': 'no-cache', 'x-ms-request-id': guid(), ...headers});
    res.end(text);
}

// ---- Entra ID --------------------------------------------------------------------------

// RFC 6749 section 5.2 errors as Entra shapes them (AADSTS codes in the description).
function aadError(res, status, error, aadsts, description) {
    stats.token_failures++;
    stats.token_errors.push(error + ':' + aadsts);
    send(res, status, {error, error_description: `AADSTS${aadsts}: ${description} Trace ID: ` +
                       `${guid()} Correlation ID: ${guid()} Timestamp: ${new Date().toISOString()}`,
                       error_codes: [aadsts], timestamp: new Date().toISOString(),
                       trace_id: guid(), correlation_id: guid(),
                       error_uri: `${origin}/error?code=${aadsts}`});
}

function b64json(s) {
    return JSON.parse(Buffer.from(s, 'base64url').toString('utf8'));
}

// Verify the client assertion: a JWS signed by a key of the JWKS, unexpired; returns claims.
function verifyAssertion(jwt) {
    const parts = typeof jwt === 'string' ? jwt.split('.') : [];
    if (parts.length !== 3) throw [50027, 'JWT token is invalid or malformed.'];
    let header, claims;
    try {
        header = b64json(parts[0]);
        claims = b64json(parts[1]);
    } catch {
        throw [50027, 'JWT token is invalid or malformed.'];
    }
    const jwks = JSON.parse(fs.readFileSync(conf.jwks_file, 'utf8'));
    const algs = {RS256: ['sha256', {}], RS384: ['sha384', {}], RS512: ['sha512', {}],
                  PS256: ['sha256', {padding: crypto.constants.RSA_PKCS1_PSS_PADDING,
                                     saltLength: 32}],
                  ES256: ['sha256', {dsaEncoding: 'ieee-p1363'}],
                  ES384: ['sha384', {dsaEncoding: 'ieee-p1363'}], EdDSA: [null, {}]};
    const alg = algs[header.alg];
    if (!alg) throw [5002738, 'Invalid JWT token. The signing algorithm is not supported.'];
    const data = Buffer.from(parts[0] + '.' + parts[1]);
    const sig = Buffer.from(parts[2], 'base64url');
    const ok = (jwks.keys || []).filter((k) => !header.kid || k.kid === header.kid).some((k) => {
        try {
            return crypto.verify(alg[0], data, {key: crypto.createPublicKey({key: k,
                                                                              format: 'jwk'}),
                                                ...alg[1]}, sig);
        } catch {
            return false;
        }
    });
    if (!ok) throw [5002738, 'Invalid JWT token. No certificate thumbprint or kid matched.'];
    const t = nowS();
    if (typeof claims.exp !== 'number' || t > claims.exp + 300)
        throw [700024, 'Client assertion is not within its valid time range.'];
    if (typeof claims.nbf === 'number' && t < claims.nbf - 300)
        throw [700024, 'Client assertion is not within its valid time range.'];
    return claims;
}

async function tokenEndpoint(req, res, tid) {
    if (req.method !== 'POST')
        return aadError(res, 405, 'invalid_request', 900561, 'The endpoint only accepts POST.');
    const ct = (req.headers['content-type'] || '').split(';')[0].trim().toLowerCase();
    const text = await readBody(req);
    if (ct !== 'application/x-www-form-urlencoded')
        return aadError(res, 400, 'invalid_request', 900144,
                        "The request body must contain the following parameter: 'grant_type'.");
    const f = new URLSearchParams(text);
    if (tid !== tenant)
        return aadError(res, 400, 'invalid_request', 90002, `Tenant '${tid}' not found.`);
    if (f.get('grant_type') !== 'client_credentials')
        return aadError(res, 400, 'unsupported_grant_type', 70003,
                        'The app requested an unsupported grant type.');
    const clientId = (f.get('client_id') || '').toLowerCase();
    const scope = f.get('scope') || '';
    if (!clientId)
        return aadError(res, 400, 'invalid_request', 900144,
                        "The request body must contain the following parameter: 'client_id'.");
    if (!scope.endsWith('/.default') || !/^https:\/\/[^\s/]+/.test(scope))
        return aadError(res, 400, 'invalid_scope', 1002012,
                        'The provided value for scope is not valid. Client credential flows ' +
                        'must have a scope value with /.default suffixed to the resource ' +
                        'identifier (application ID URI).');
    if (f.get('client_secret'))
        return aadError(res, 401, 'invalid_client', 7000215, 'Invalid client secret provided.');
    if (f.get('client_assertion_type') !==
        'urn:ietf:params:oauth:client-assertion-type:jwt-bearer')
        return aadError(res, 400, 'invalid_request', 900144,
                        "The request body must contain the following parameter: " +
                        "'client_assertion' or 'client_secret'.");
    let claims;
    try {
        claims = verifyAssertion(f.get('client_assertion'));
    } catch (e) {
        if (!Array.isArray(e)) throw e;
        return aadError(res, 401, 'invalid_client', e[0], e[1]);
    }
    const creds = (conf.federated_credentials || []).filter(
        (c) => c.client_id.toLowerCase() === clientId);
    if (creds.length === 0)
        return aadError(res, 400, 'unauthorized_client', 700016,
                        `Application with identifier '${clientId}' was not found in the ` +
                        `directory '${tid}'.`);
    const aud = Array.isArray(claims.aud) ? claims.aud : [claims.aud];
    const cred = creds.find((c) => c.issuer === claims.iss && c.subject === claims.sub);
    if (!creds.some((c) => c.issuer === claims.iss))
        return aadError(res, 400, 'invalid_request', 700211,
                        'No matching federated identity record found for presented assertion ' +
                        'issuer.');
    if (!cred)
        return aadError(res, 400, 'invalid_request', 700213,
                        'No matching federated identity record found for presented assertion ' +
                        'subject.');
    if (!aud.includes(cred.audience || 'api://AzureADTokenExchange'))
        return aadError(res, 400, 'invalid_request', 700212,
                        'No matching federated identity record found for presented assertion ' +
                        'audience.');
    const at = 'eyJ0eXAiOiJKV1QiLCJhbGciOiJub25lIn0.' +
               crypto.randomBytes(48).toString('base64url') + '.standin';
    tokens.set(at, {client_id: clientId, aud: scope.slice(0, -'/.default'.length), tid,
                    exp: nowS() + tokenLifetime});
    stats.tokens_issued++;
    stats.scopes.push(scope);
    send(res, 200, {token_type: 'Bearer', expires_in: tokenLifetime,
                    ext_expires_in: tokenLifetime, access_token: at});
}

function openidConfiguration(res, tid) {
    stats.metadata_requests++;
    const base = `${origin}/${tid}`;
    send(res, 200, {token_endpoint: `${base}/oauth2/v2.0/token`,
                    token_endpoint_auth_methods_supported: ['client_secret_post',
                                                            'private_key_jwt',
                                                            'client_secret_basic'],
                    jwks_uri: `${origin}/${tid}/discovery/v2.0/keys`,
                    response_modes_supported: ['query', 'fragment', 'form_post'],
                    subject_types_supported: ['pairwise'],
                    id_token_signing_alg_values_supported: ['RS256'],
                    response_types_supported: ['code', 'id_token', 'code id_token',
                                               'id_token token'],
                    scopes_supported: ['openid', 'profile', 'email', 'offline_access'],
                    issuer: `${origin}/${tid}/v2.0`, request_uri_parameter_supported: false,
                    userinfo_endpoint: `${origin}/oidc/userinfo`,
                    authorization_endpoint: `${base}/oauth2/v2.0/authorize`,
                    device_authorization_endpoint: `${base}/oauth2/v2.0/devicecode`,
                    http_logout_supported: true, frontchannel_logout_supported: true,
                    end_session_endpoint: `${base}/oauth2/v2.0/logout`,
                    claims_supported: ['sub', 'iss', 'aud', 'exp', 'iat', 'nbf', 'tid'],
                    kerberos_endpoint: `${base}/kerberos`, tenant_region_scope: 'EU',
                    cloud_instance_name: 'microsoftonline.com',
                    cloud_graph_host_name: 'graph.windows.net',
                    msgraph_host: 'graph.microsoft.com', rbac_url: 'https://pas.windows.net'});
}

// ---- Key Vault ------------------------------------------------------------------------

function kvError(res, status, code, message, inner, headers) {
    const error = {code, message};
    if (inner) error.innererror = {code: inner};
    send(res, status, {error}, headers);
}

function challenge(res, message) {
    stats.challenges++;
    kvError(res, 401, 'Unauthorized', message, null,
            {'WWW-Authenticate': `Bearer authorization="${origin}/${tenant}", ` +
                                 `resource="${resource}"`});
}

function bundle(base, name, v) {
    const attributes = {enabled: v.enabled, created: v.created, updated: v.updated,
                        recoveryLevel: 'Recoverable+Purgeable', recoverableDays: 90};
    if (v.exp !== undefined) attributes.exp = v.exp;
    if (v.nbf !== undefined) attributes.nbf = v.nbf;
    const out = {value: v.value, id: `${base}/secrets/${name}/${v.version}`, attributes,
                 tags: v.tags || {}};
    if (v.contentType !== undefined) out.contentType = v.contentType;
    return out;
}

function keyVault(req, res, url, vaultName, rest) {
    const base = vaultName === conf.default_vault && !url.pathname.startsWith(`/${vaultName}/`)
        ? origin : `${origin}/${vaultName}`;
    const vault = vaults.get(vaultName);
    const api = url.searchParams.get('api-version');
    stats.last_api_version = api || '';
    if (!api) {
        stats.bad_api_version++;
        return kvError(res, 400, 'BadParameter', 'The api-version query parameter is required.');
    }
    if (!apiVersions.has(api)) {
        stats.bad_api_version++;
        return kvError(res, 400, 'BadParameter',
                       `The specified version (${api}) is not recognized. Consider using the ` +
                       'latest supported version.');
    }
    const auth = req.headers.authorization || '';
    const m = /^Bearer ([!-~]+)$/.exec(auth);
    if (!m) {
        stats.kv_unauthenticated++;
        return challenge(res, 'AKV10000: Request is missing a Bearer or PoP token.');
    }
    const t = tokens.get(m[1]);
    if (!t || t.exp <= nowS()) return challenge(res, 'AKV10032: Invalid issuer or token.');
    if (t.aud !== resource || t.tid !== tenant)
        return challenge(res, `AKV10022: Invalid audience. Expected ${resource}, found: ${t.aud}.`);
    if (!vault.readers.has(t.client_id)) {
        stats.denied++;
        return kvError(res, 403, 'Forbidden',
                       `Caller is not authorized to perform action on resource. Caller: ` +
                       `appid=${t.client_id}`, 'ForbiddenByRbac');
    }
    if (req.method !== 'GET') return kvError(res, 405, 'BadParameter', 'Method not allowed');
    const seg = rest.split('/');
    // secrets/<name>, secrets/<name>/, secrets/<name>/<version>
    if (seg[0] !== 'secrets' || seg.length < 2 || seg.length > 3 || !seg[1])
        return kvError(res, 404, 'NotFound', 'The requested resource was not found.');
    const name = seg[1].toLowerCase();
    const version = (seg[2] || '').toLowerCase();
    const versions = vault.secrets.get(name) || [];
    const v = version ? versions.find((x) => x.version === version) : versions.at(-1);
    if (!v) {
        stats.not_found++;
        return kvError(res, 404, 'SecretNotFound',
                       `A secret with (name/id) ${seg[1]}${version ? '/' + version : ''} was ` +
                       'not found in this key vault. If you recently deleted this secret you ' +
                       'may be able to recover it using the correct recovery command.');
    }
    if (!v.enabled) {
        stats.denied++;
        return kvError(res, 403, 'Forbidden', `Operation get is not allowed on a disabled ` +
                       `secret.`, 'SecretDisabled');
    }
    stats.kv_reads++;
    send(res, 200, bundle(base, seg[1].toLowerCase(), v));
}

// ---- faults --------------------------------------------------------------------------

function takePlan(target) {
    const p = plans.find((x) => x.count > 0 && (x.target === target || x.target === 'any'));
    if (!p) return null;
    p.count--;
    plans = plans.filter((x) => x.count > 0);
    stats.injected++;
    return p;
}

// Apply a plan; returns true when the request is answered (false: slow, then go on).
async function inject(p, res) {
    const mode = p.mode || 'status';
    if (mode === 'slow') {
        await new Promise((r) => setTimeout(r, p.delay_ms || 3000));
        // A client that gave up (its timeout) is not answered and its request not served.
        if (res.socket === null || res.socket.destroyed) return true;
        return false;
    }
    if (mode === 'status') {
        const headers = {};
        if (p.retry_after !== undefined) headers['Retry-After'] = String(p.retry_after);
        if (p.status === 429)
            kvError(res, 429, 'Throttled', 'Rate limit is exceeded. Try again in ' +
                    `${p.retry_after ?? 1} seconds.`, null, headers);
        else kvError(res, p.status || 500, 'InternalServerError', p.message || 'injected failure',
                     null, headers);
        return true;
    }
    if (mode === 'challenge') {
        stats.challenges++;
        kvError(res, 401, 'Unauthorized', 'AKV10000: Request is missing a Bearer or PoP token.',
                null, {'WWW-Authenticate': p.www_authenticate});
        return true;
    }
    if (mode === 'content_type') {
        const text = '<html><body>Service Unavailable</body></html>';
        res.writeHead(200, {'Content-Type': 'text/html', 'Content-Length': text.length});
        res.end(text);
        return true;
    }
    if (mode === 'truncate') {
        const text = JSON.stringify({value: p.value || 'x'.repeat(64), id: `${origin}/v/secrets/x/` +
                                     '0'.repeat(32), attributes: {enabled: true}});
        res.writeHead(200, {'Content-Type': 'application/json; charset=utf-8',
                            'Content-Length': Buffer.byteLength(text)});
        res.write(text.slice(0, Math.floor(text.length / 2)));
        setTimeout(() => res.socket && res.socket.destroy(), 20);
        return true;
    }
    if (mode === 'oversize') {
        const text = JSON.stringify({value: (p.value || '') + 'A'.repeat(400 * 1024),
                                     id: `${origin}/v/secrets/x/` + '0'.repeat(32),
                                     attributes: {enabled: true}});
        res.writeHead(200, {'Content-Type': 'application/json; charset=utf-8',
                            'Content-Length': Buffer.byteLength(text)});
        res.end(text);
        return true;
    }
    return false;
}

// ---- dispatch ------------------------------------------------------------------------

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

function newVersion(vaultName, body) {
    const vault = vaults.get(vaultName);
    if (!vault) throw new Error('no such vault');
    const name = body.name.toLowerCase();
    if (!vault.secrets.has(name)) vault.secrets.set(name, []);
    const t = nowS();
    const v = {version: crypto.randomBytes(16).toString('hex'), value: body.value,
               enabled: body.enabled !== false, created: t, updated: t, exp: body.exp,
               nbf: body.nbf, contentType: body.contentType, tags: body.tags};
    vault.secrets.get(name).push(v);
    return v.version;
}

async function handle(req, res) {
    const url = new URL(req.url, 'https://127.0.0.1');
    const p = url.pathname;
    if (p.startsWith('/_standin/')) {
        const body = req.method === 'POST' ? JSON.parse((await readBody(req)) || '{}') : {};
        if (p === '/_standin/stats') return send(res, 200, stats);
        if (p === '/_standin/reset') {
            resetStats();
            plans = [];
            return send(res, 200, {});
        }
        if (p === '/_standin/secret') return send(res, 200, {version: newVersion(body.vault, body)});
        if (p === '/_standin/revoke') {
            tokens.clear();
            return send(res, 200, {});
        }
        if (p === '/_standin/config') {
            if (body.token_lifetime) tokenLifetime = body.token_lifetime;
            return send(res, 200, {token_lifetime: tokenLifetime});
        }
        if (p === '/_standin/fail') {
            if (body.count === 0) plans = [];
            else plans.push(body);
            return send(res, 200, {plans: plans.length});
        }
        return send(res, 404, {});
    }
    stats.requests++;
    let m = /^\/([^/]+)\/oauth2\/v2\.0\/token$/.exec(p);
    if (m) {
        const tid = m[1].toLowerCase();
        stats.token_requests++;
        stats.token_requests_by_tenant[tid] = (stats.token_requests_by_tenant[tid] || 0) + 1;
        const plan = takePlan('token');
        if (plan && (await inject(plan, res))) return;
        return tokenEndpoint(req, res, tid);
    }
    m = /^\/([^/]+)\/v2\.0\/\.well-known\/openid-configuration$/.exec(p);
    if (m && req.method === 'GET') return openidConfiguration(res, m[1].toLowerCase());
    let vaultName = null;
    let rest = null;
    m = /^\/([a-z0-9-]+)\/(secrets(\/.*)?)$/.exec(p);
    if (m && vaults.has(m[1])) [vaultName, rest] = [m[1], m[2]];
    else if (p.startsWith('/secrets/') && conf.default_vault)
        [vaultName, rest] = [conf.default_vault, p.slice(1)];
    if (vaultName) {
        stats.kv_requests++;
        const plan = takePlan('kv');
        if (plan && (await inject(plan, res))) return;
        return keyVault(req, res, url, vaultName, rest.replace(/\/$/, ''));
    }
    return send(res, 404, {error: {code: 'NotFound', message: 'no such route'}});
}

const server = https.createServer({cert: fs.readFileSync(conf.cert),
                                   key: fs.readFileSync(conf.key)}, (req, res) => {
    handle(req, res).catch((e) => {
        if (!res.headersSent) send(res, 500, {error: {code: 'InternalError',
                                                      message: String(e.message)}});
    });
});
server.listen(port, '127.0.0.1', () => {
    origin = `https://127.0.0.1:${server.address().port}`;
    process.stdout.write(`READY ${origin}\n`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
