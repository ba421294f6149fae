/* ferryd/stats.h - ferryd's metrics: what every request records, and GET /metrics.
 *
 * The request counters, the latency histogram, the in-flight gauge and the decision counters
 * are updated on every request through the httpd observer (ferryd_stats_observer): one table
 * look-up and three or four atomic additions, no lock. Everything else (trust store, replay
 * cache, policies, audit log, signing key, rate limiters) is read from its module when
 * /metrics is scraped. Labels come only from fixed lists (the known paths plus "other", the
 * numeric status, the exchange's static outcome names, the oidc module's static reason and
 * state names) or from the configuration (issuer URLs, under a cap): never from request data.
 * Design note: docs/internals/metrics.md.
 */
#ifndef FERRYD_STATS_H
#define FERRYD_STATS_H

#include <stddef.h>

#include "ferryd/httpd.h"

typedef struct ferryd_stats ferryd_stats;
struct ferryd;

/* New metrics registry with every family declared (and the fixed series registered, so they
 * show as 0 before their first event). Returns 0 and *ret (ferryd_stats_free), or -ENOMEM /
 * -EINVAL with errbuf saying which metric. */
int ferryd_stats_new(ferryd_stats **ret, char *errbuf, size_t errlen);
void ferryd_stats_free(ferryd_stats *s); /* accepts NULL */

/* The observer to hand to ferryd_httpd_start (s borrowed; outlives the server). */
ferryd_observer ferryd_stats_observer(ferryd_stats *s);

/* GET/HEAD /metrics: refresh the gauges read from d's modules and answer the exposition text
 * (Content-Type FERRY_METRICS_CONTENT_TYPE); other methods 405; 503 when d has no stats. */
void ferryd_route_metrics(struct ferryd *d, const ferryd_request *req, ferryd_response *resp);

/* The exposition text after refreshing from d (new string, free), for tests. Returns 0 or a
 * negative error. */
int ferryd_stats_render(ferryd_stats *s, struct ferryd *d, char **ret_text, size_t *ret_len);

#endif
