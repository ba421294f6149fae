/* ferryd/configfile.h - ferryd's JSON configuration file (docs/configuration.md, "ferryd"). */
#ifndef FERRYD_CONFIGFILE_H
#define FERRYD_CONFIGFILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

#include "ferry/auditlog.h"
#include "ferry/jose.h"
#include "ferryd/httpd.h"

#define FERRYD_CONFIG_MAX (1024 * 1024) /* bytes of the configuration file */
#define FERRYD_MAX_LISTEN 16
#define FERRYD_DEFAULT_LISTEN "127.0.0.1:8787"
#define FERRYD_DEFAULT_MAX_BODY (64 * 1024)
#define FERRYD_DEFAULT_MAX_HEADER (32 * 1024)
#define FERRYD_DEFAULT_CONNECTIONS 256
#define FERRYD_DEFAULT_CONNECTIONS_PER_IP 32
#define FERRYD_DEFAULT_TIMEOUT 30
#define FERRYD_DEFAULT_REQUEST_TIMEOUT 30
#define FERRYD_DEFAULT_DRAIN_TIMEOUT 10
#define FERRYD_DEFAULT_WORKERS 8
#define FERRYD_DEFAULT_WORKER_QUEUE 1024
/* Rate limits (docs/configuration.md): generous enough for one machine's normal use. */
#define FERRYD_DEFAULT_ADDRESS_RATE 200.0
#define FERRYD_DEFAULT_ADDRESS_BURST 400
#define FERRYD_DEFAULT_IDENTITY_RATE 20.0
#define FERRYD_DEFAULT_IDENTITY_BURST 40
#define FERRYD_DEFAULT_MAX_TRACKED 65536
#define FERRYD_DEFAULT_LOG_IDENT "ferryd"
#define FERRYD_LOG_IDENT_MAX 64

typedef struct ferryd_rate_limit {
    double rate;    /* requests per second; 0 = off */
    unsigned burst; /* bucket size */
} ferryd_rate_limit;

typedef enum ferryd_log_target {
    FERRYD_LOG_STDERR = 0,
    FERRYD_LOG_SYSLOG,
} ferryd_log_target;

typedef struct ferryd_config {
    char *listen[FERRYD_MAX_LISTEN];
    size_t n_listen;
    char *state_dir;
    char *issuer; /* NULL: derived from the first TCP listen address when it is loopback */
    ferry_alg alg;
    int64_t default_ttl, max_ttl;
    char *client_id; /* NULL = the exchange's default ("ferry") */
    char *policies_dir;
    char *audit_path; /* NULL = STATE_DIR/audit.log */
    unsigned checkpoint_every;
    ferry_auditlog_sync_mode sync;
    unsigned sync_every_records, sync_interval_ms;
    ferryd_httpd_limits limits;
    unsigned drain_timeout_s;
    bool one_time_subject; /* token.one_time_subject: FERRY_EXCHANGE_ONE_TIME_SUBJECT */
    ferryd_rate_limit per_address, per_identity; /* rate_limits */
    size_t max_tracked;                          /* rate_limits.max_tracked, per limiter */
    ferryd_log_target log_target;                /* log.target */
    int log_facility;                            /* log.facility: LOG_DAEMON, ... */
    char *log_ident;                             /* log.ident */
    json_t *trust; /* {"issuers": [...], "replay_cache_size": N} for ferry_oidc_load_config */
    json_t *secrets; /* the "secrets" section for ferry_secrets_new, NULL when absent */
    char *secrets_subject; /* secrets_subject: sub of the tokens ferryd mints for its own
                              backend identity; NULL = the issuer URL */
} ferryd_config;

/* Defaults (no file). */
int ferryd_config_init(ferryd_config *c);

/* Read and check path into c (which holds the defaults). Unknown members and wrong types are
 * errors; errbuf gets "PATH:LINE: reason". Returns 0, -EINVAL (bad configuration), -errno. */
int ferryd_config_load(ferryd_config *c, const char *path, char *errbuf, size_t errlen);

/* Replace the listen list by one address (first call) or add one (later calls). */
int ferryd_config_add_listen(ferryd_config *c, const char *addr, bool first);

/* Fill what depends on other settings (issuer from listen, audit path from state dir).
 * Returns 0 or -EINVAL with a reason. */
int ferryd_config_finish(ferryd_config *c, char *errbuf, size_t errlen);

void ferryd_config_free(ferryd_config *c);

#endif
