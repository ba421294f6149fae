// azure_client_check.mjs - drive the Entra ID and Key Vault stand-in (azure_standin.mjs) with
// Microsoft's official clients, @azure/identity's ClientAssertionCredential and
// @azure/keyvault-secrets' SecretClient, and print what they saw as one JSON object on stdout
// for tests/integration/test_secrets_azure.py to assert. Any client error is reported, not
// thrown. The stand-in's certificate is trusted through NODE_EXTRA_CA_CERTS.
//
//   node azure_client_check.mjs ORIGIN TENANT CLIENT_ID ASSERTION_FILE SECRET OLD_VERSION
//
// ORIGIN is both the authority host and the (default) vault URL; ASSERTION_FILE holds a
// ferry-minted JWT for audience api://AzureADTokenExchange.
import fs from 'node:fs';
import {ClientAssertionCredential} from '@azure/identity';
import {SecretClient} from '@azure/keyvault-secrets';

const [origin, tenant, clientId, assertionFile, name, oldVersion] = process.argv.slice(2);
const out = {};
let assertions = 0;

async function step(key, fn) {
    try {
        out[key] = await fn();
    } catch (e) {
        out[key] = {error: String(e.message).slice(0, 300), name: e.name,
                    statusCode: e.statusCode ?? null, code: e.code ?? null};
    }
}

const credential = new ClientAssertionCredential(tenant, clientId, async () => {
    assertions++;
    return fs.readFileSync(assertionFile, 'utf8').trim();
}, {authorityHost: origin, disableInstanceDiscovery: true});

await step('get_token', async () => {
    const t = await credential.getToken('https://vault.azure.net/.default');
    return {has_token: typeof t.token === 'string' && t.token.length > 0,
            expires_in_future: t.expiresOnTimestamp > Date.now()};
});

const client = new SecretClient(origin, credential, {disableChallengeResourceVerification: true,
                                                     retryOptions: {maxRetries: 0}});
await step('latest', async () => {
    const s = await client.getSecret(name);
    return {value: s.value, version: s.properties.version, name: s.properties.name,
            enabled: s.properties.enabled, vaultUrl: s.properties.vaultUrl};
});
await step('versioned', async () => {
    const s = await client.getSecret(name, {version: oldVersion});
    return {value: s.value, version: s.properties.version};
});
await step('missing', async () => client.getSecret('no-such-secret'));
await step('old_api', async () => {
    const c = new SecretClient(origin, credential, {disableChallengeResourceVerification: true,
                                                    serviceVersion: '7.4'});
    return (await c.getSecret(name)).value;
});
await step('verification_on', async () => {
    const c = new SecretClient(origin, credential, {retryOptions: {maxRetries: 0}});
    return (await c.getSecret(name)).value;
});
out.assertions = assertions;
process.stdout.write(JSON.stringify(out) + '\n');
