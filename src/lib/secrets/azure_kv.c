/* lib/secrets/azure_kv.c - the azure-kv secret backend (work in progress: not available yet).
 *
 * Until it is written, opening a "azure-kv" section fails as before the backend existed.
 */
#include "config.h"

#include "basic/errbuf.h"
#include "ferry/error.h"
#include "secrets-internal.h"

static int azure_kv_open(const json_t *conf, const ferry_secrets_env *env, void **ret_state,
                         char *errbuf, size_t errlen)
{
    (void)conf, (void)env, (void)ret_state;
    return ferry_errbuf_set(errbuf, errlen, -FERRY_EUNSUPPORTED,
                            "secrets: backend \"azure-kv\" is not available in this "
                            "version yet");
}

static int azure_kv_fetch(void *state, void *ctx, const ferry_secret_ref *ref,
                          ferry_secret_value **ret, char *errbuf, size_t errlen)
{
    (void)state, (void)ctx, (void)ref, (void)ret;
    return ferry_errbuf_set(errbuf, errlen, -FERRY_EUNSUPPORTED, "azure-kv: not available yet");
}

static void azure_kv_close(void *state)
{
    (void)state;
}

const ferry_secret_backend_ops ferry_secrets_azure_kv_backend = {
    .name = "azure-kv",
    .id = FERRY_SECRET_AZURE_KV,
    .open = azure_kv_open,
    .fetch = azure_kv_fetch,
    .close = azure_kv_close,
};
