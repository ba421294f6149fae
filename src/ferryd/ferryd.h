/* ferryd/ferryd.h - the daemon's shared state and its routes. */
#ifndef FERRYD_FERRYD_H
#define FERRYD_FERRYD_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "ferry/auditlog.h"
#include "ferry/exchange.h"
#include "ferry/mint.h"
#include "ferry/oidc.h"
#include "ferry/policy.h"
#include "ferry/ratelimit.h"
#include "ferry/secrets.h"
#include "ferryd/configfile.h"
#include "ferryd/httpd.h"
#include "ferryd/stats.h"

typedef struct ferryd {
    ferryd_config config;
    ferry_oidc *oidc;
    ferry_policy_store *policies;
    ferry_mint *mint;
    ferry_auditlog *log;
    ferry_exchange *exchange;
    ferry_secrets *secrets; /* the backends and their cache (GET /v1/secrets/{ref}) */
    ferryd_stats *stats; /* metrics for /metrics (stats.h) */
    _Atomic(ferryd_httpd *) httpd; /* the server, once started (its worker pool's counters) */
    /* Rate limits (configured from config by ferryd_apply_rate_limits; never NULL once
     * started, off when their rate is 0). per_identity is the exchange's identity_limit. */
    ferry_ratelimit *per_address;
    ferry_ratelimit *per_identity;

    /* Serialised discovery and JWKS documents, replaced on reload (under lock). */
    pthread_mutex_t lock;
    char *discovery;
    char *jwks;
    atomic_bool issuers_ready;
    atomic_llong last_prefetch; /* monotonic seconds of the last prefetch try */
} ferryd;

/* Rebuild the cached discovery and JWKS documents from the mint. Returns 0 or negative. */
int ferryd_refresh_documents(ferryd *d);

/* Create the two rate limiters from d->config (first call) or re-apply the configuration's
 * rates, bursts and max_tracked to them (later calls, e.g. after SIGHUP re-read the file).
 * Returns 0, or a negative error with errbuf saying which limiter (the old settings stay). */
int ferryd_apply_rate_limits(ferryd *d, char *errbuf, size_t errlen);

/* The request handler (ferryd_handler_fn) with d as userdata. */
void ferryd_route(void *userdata, const ferryd_request *req, ferryd_response *resp);

/* Strict application/x-www-form-urlencoded decoding of body into params (exposed for the
 * route). Decoded bytes go to a new buffer *ret_buf (wipe and free it with the params). Returns
 * 0, -EINVAL (malformed: empty pair, missing '=', bad escape) or -ENOMEM. */
int ferryd_form_decode(const char *body, size_t len, ferry_exchange_param **ret_params,
                       size_t *ret_n, char **ret_buf);

#endif
