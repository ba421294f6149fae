/* lib/secrets/gcp_sm.c - the gcp-sm secret backend (work in progress: not available yet).
 *
 * Until it is written, opening a "gcp-sm" section fails as before the backend existed.
 */
#include "config.h"

#include "basic/errbuf.h"
#include "ferry/error.h"
#include "secrets-internal.h"

static int gcp_sm_open(const json_t *conf, const ferry_secrets_env *env, void **ret_state,
                       char *errbuf, size_t errlen)
{
    (void)conf, (void)env, (void)ret_state;
    return ferry_errbuf_set(errbuf, errlen, -FERRY_EUNSUPPORTED,
                            "secrets: backend \"gcp-sm\" is not available in this "
                            "version yet");
}

static int gcp_sm_fetch(void *state, void *ctx, const ferry_secret_ref *ref,
                        ferry_secret_value **ret, char *errbuf, size_t errlen)
{
    (void)state, (void)ctx, (void)ref, (void)ret;
    return ferry_errbuf_set(errbuf, errlen, -FERRY_EUNSUPPORTED, "gcp-sm: not available yet");
}

static void gcp_sm_close(void *state)
{
    (void)state;
}

const ferry_secret_backend_ops ferry_secrets_gcp_sm_backend = {
    .name = "gcp-sm",
    .id = FERRY_SECRET_GCP_SM,
    .open = gcp_sm_open,
    .fetch = gcp_sm_fetch,
    .close = gcp_sm_close,
};
