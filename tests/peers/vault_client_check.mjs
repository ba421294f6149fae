// vault_client_check.mjs - drive a Vault (the stand-in) with node-vault, Vault's official
// JavaScript client, and print what it saw as one JSON object on stdout, for
// tests/integration/test_secrets_vault.py to assert. Any client error is reported, not thrown.
//
//   node vault_client_check.mjs ENDPOINT ROOT_TOKEN ROLE_ID SECRET_ID NAMESPACE
import nodeVault from 'node-vault';

const [endpoint, rootToken, roleId, secretId, namespace] = process.argv.slice(2);
const out = {};

async function step(name, fn) {
    try {
        out[name] = await fn();
    } catch (e) {
        out[name] = {error: e.message, status: e.response ? e.response.statusCode : null};
    }
}

const root = nodeVault({apiVersion: 'v1', endpoint, token: rootToken});
await step('health', async () => (await root.health()).initialized);
await step('write1', async () => (await root.write('secret/data/nv/check',
                                                   {data: {value: 'one'}})).data.version);
await step('write2', async () => (await root.write('secret/data/nv/check',
                                                   {data: {value: 'two', n: 2}})).data.version);
await step('cas_conflict', async () => (await root.write('secret/data/nv/check',
                                                         {data: {value: 'x'},
                                                          options: {cas: 1}})).data.version);
await step('read_latest', async () => {
    const r = await root.read('secret/data/nv/check');
    return {data: r.data.data, version: r.data.metadata.version};
});
await step('read_v1', async () => {
    const r = await root.read('secret/data/nv/check?version=1');
    return {data: r.data.data, version: r.data.metadata.version};
});
await step('read_missing', async () => root.read('secret/data/nv/absent'));
await step('metadata', async () => (await root.read('secret/metadata/nv/check')).data
                                       .current_version);
await step('no_token', async () => nodeVault({apiVersion: 'v1', endpoint})
                                       .read('secret/data/nv/check'));

const app = nodeVault({apiVersion: 'v1', endpoint});
await step('approle_login', async () => {
    const r = await app.approleLogin({role_id: roleId, secret_id: secretId});
    return {has_token: typeof r.auth.client_token === 'string' && r.auth.client_token.length > 0,
            lease_duration: r.auth.lease_duration, renewable: r.auth.renewable,
            client_took_token: app.token === r.auth.client_token};
});
await step('lookup_self', async () => {
    const r = await app.tokenLookupSelf();
    return {id_matches: r.data.id === app.token, ttl: r.data.ttl, renewable: r.data.renewable,
            policies: r.data.policies, path: r.data.path};
});
await step('renew_self', async () => {
    const r = await app.tokenRenewSelf();
    return {same_token: r.auth.client_token === app.token, lease_duration: r.auth.lease_duration};
});
await step('approle_bad_secret', async () => nodeVault({apiVersion: 'v1', endpoint})
                                                 .approleLogin({role_id: roleId,
                                                                secret_id: 'wrong'}));
await step('jwt_garbage', async () => nodeVault({apiVersion: 'v1', endpoint})
                                          .jwtLogin({role: 'ci', jwt: 'a.b.c'}));

const nsRoot = nodeVault({apiVersion: 'v1', endpoint, token: rootToken, namespace});
await step('ns_write', async () => (await nsRoot.write('secret/data/nv/ns',
                                                       {data: {value: 'in-ns'}})).data.version);
await step('ns_read', async () => (await nsRoot.read('secret/data/nv/ns')).data.data.value);
await step('ns_read_from_root', async () => root.read('secret/data/nv/ns'));

process.stdout.write(JSON.stringify(out) + '\n');
