// gcp_client_check.mjs - drive tests/peers/gcp_standin.mjs with google-auth-library, Google's
// official Node.js auth client, to show in the same test run that the stand-in answers the
// way the real STS, IAM Credentials and Secret Manager do (paths, form body, JSON shapes,
// error bodies). Prints one JSON object of observations; the test script judges them.
//
//   GCP_EXPECT_LATEST=... GCP_EXPECT_V1=... node gcp_client_check.mjs STANDIN_URL \
//       SUBJECT_TOKEN_FILE AUDIENCE SERVICE_ACCOUNT SECRET DENIED_SECRET
//
// SECRET and DENIED_SECRET are "projects/P/secrets/S". The expected values come from the
// environment (not argv) and are compared here, never printed.
//
// Pointing the library at a test server: google-auth-library 10.5.0 takes token_url and
// service_account_impersonation_url from the credential configuration as given (no host
// pattern check in this version), so no universe_domain or other override is needed.
import {ExternalAccountClient} from 'google-auth-library';

const [url, tokenFile, audience, serviceAccount, secret, denied] = process.argv.slice(2);
const out = {};

// An independent CRC-32C (bit by bit, unlike the stand-in's table).
function crc32c(buf) {
    let c = 0xffffffff;
    for (const b of buf) {
        c ^= b;
        for (let k = 0; k < 8; k++) c = (c >>> 1) ^ (0x82f63b78 & -(c & 1));
    }
    return (c ^ 0xffffffff) >>> 0;
}

function client(extra = {}) {
    return ExternalAccountClient.fromJSON({
        type: 'external_account',
        audience,
        subject_token_type: 'urn:ietf:params:oauth:token-type:jwt',
        token_url: `${url}/v1/token`,
        credential_source: {file: tokenFile},
        ...extra,
    });
}

async function readVersion(c, name, version) {
    const r = await c.request({url: `${url}/v1/${name}/versions/${version}:access`});
    const bytes = Buffer.from(r.data.payload.data, 'base64');
    return {status: r.status, name: r.data.name, bytes,
            crc_ok: crc32c(bytes) === Number(r.data.payload.dataCrc32c),
            crc_is_string: typeof r.data.payload.dataCrc32c === 'string',
            content_type: String(r.headers.get ? r.headers.get('content-type')
                                               : r.headers['content-type'])};
}

async function failure(p) {
    try {
        await p;
        return {status: 200};
    } catch (e) {
        const data = e.response?.data;
        return {status: e.response?.status ?? e.status ?? null,
                google_status: data?.error?.status ?? null,
                oauth_error: typeof data?.error === 'string' ? data.error : null,
                message_has_code: /invalid_target|invalid_grant/.test(String(e.message))};
    }
}

async function main() {
    // 1. Workload identity federation without impersonation: STS only.
    const fed = client();
    const tok = await fed.getAccessToken();
    out.federated_token = typeof tok.token === 'string' && tok.token.startsWith('ya29.fed-');
    const latest = await readVersion(fed, secret, 'latest');
    out.latest = {status: latest.status, name_version: latest.name.split('/').pop(),
                  name_is_number_form: /^projects\/\d+\/secrets\//.test(latest.name),
                  value_ok: latest.bytes.toString('utf8') === process.env.GCP_EXPECT_LATEST,
                  crc_ok: latest.crc_ok, crc_is_string: latest.crc_is_string,
                  json: latest.content_type.startsWith('application/json')};

    // 2. With service account impersonation: STS, then generateAccessToken.
    const imp = client({service_account_impersonation_url:
        `${url}/v1/projects/-/serviceAccounts/${serviceAccount}:generateAccessToken`});
    const itok = await imp.getAccessToken();
    out.impersonated_token = typeof itok.token === 'string' && itok.token.startsWith('ya29.sa-');
    // The library parsed the stand-in's expireTime (RFC 3339) into its expiry: within the hour.
    const exp = imp.credentials?.expiry_date;
    out.impersonated_expiry_ok = typeof exp === 'number' && exp > Date.now() &&
                                 exp <= Date.now() + 3600 * 1000 + 5000;
    const v1 = await readVersion(imp, secret, '1');
    out.v1 = {status: v1.status, name_version: v1.name.split('/').pop(),
              value_ok: v1.bytes.toString('utf8') === process.env.GCP_EXPECT_V1, crc_ok: v1.crc_ok};

    // 3. Errors as Google shapes them.
    out.missing = await failure(fed.request({url: `${url}/v1/${secret}-absent/versions/latest:access`}));
    out.denied = await failure(fed.request({url: `${url}/v1/${denied}/versions/latest:access`}));
    out.bad_audience = await failure(client({audience: audience.replace(/providers\/.*/,
                                                                      'providers/nope')})
                                         .getAccessToken());
    out.wrong_sa = await failure(client({service_account_impersonation_url:
        `${url}/v1/projects/-/serviceAccounts/other@x.iam.gserviceaccount.com:generateAccessToken`})
        .getAccessToken());
}

main().then(() => {
    process.stdout.write(JSON.stringify(out) + '\n');
}, (e) => {
    out.fatal = String(e && e.message ? e.message : e).slice(0, 300);
    process.stdout.write(JSON.stringify(out) + '\n');
});
