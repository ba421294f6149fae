/* ferryd/configfile.c - ferryd's JSON configuration file. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <syslog.h>
#include <unistd.h>

#include "basic/fileio.h"
#include "basic/macro.h"
#include "ferry/json.h"
#include "ferry/mint.h"
#include "ferry/ratelimit.h"
#include "ferryd/configfile.h"

#define CONFIG_DEPTH 16
#define STRING_MAX 4096

typedef struct ctx {
    const char *path;
    ferry_json_locs *locs;
    char *errbuf;
    size_t errlen;
} ctx;

static int fail(ctx *x, const json_t *container, const char *key, const char *fmt, ...)
    _printf_(4, 5);
static int fail(ctx *x, const json_t *container, const char *key, const char *fmt, ...)
{
    unsigned line = ferry_json_locs_line(x->locs, container, key);
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    snprintf(x->errbuf, x->errlen, "%s:%u: %s", x->path, line, msg);
    return -EINVAL;
}

static int get_string(ctx *x, const json_t *obj, const char *key, const char *what, char **ret)
{
    json_t *v = json_object_get(obj, key);
    const char *s;
    if (!json_is_string(v))
        return fail(x, obj, key, "%s must be a string", what);
    s = json_string_value(v);
    if (s[0] == '\0' || strlen(s) != json_string_length(v) || strlen(s) > STRING_MAX)
        return fail(x, obj, key, "%s must be a non-empty string without NUL bytes", what);
    char *d = strdup(s);
    if (!d)
        return -ENOMEM;
    free(*ret);
    *ret = d;
    return 0;
}

static int get_uint(ctx *x, const json_t *obj, const char *key, const char *what, long long min,
                    long long max, long long *ret)
{
    json_t *v = json_object_get(obj, key);
    if (!json_is_integer(v) || json_integer_value(v) < min || json_integer_value(v) > max)
        return fail(x, obj, key, "%s must be an integer from %lld to %lld", what, min, max);
    *ret = json_integer_value(v);
    return 0;
}

/* parent's member key must be an object (named what); a scalar has no line of its own, so the
 * error names the member's. */
static int want_object(ctx *x, const json_t *parent, const char *key, const char *what)
{
    if (json_is_object(json_object_get(parent, key)))
        return 0;
    return fail(x, parent, key, "%s must be an object", what);
}

/* Every member of obj must be one of names. */
static int check_members(ctx *x, const json_t *obj, const char *const *names, const char *where)
{
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)obj, key, v)
    {
        bool known = false;
        for (size_t i = 0; names[i]; i++)
            if (strcmp(key, names[i]) == 0)
                known = true;
        if (!known) {
            char what[300];
            snprintf(what, sizeof(what), "unknown member \"%.100s\" in %s", key, where);
            return fail(x, obj, key, "%s", what);
        }
    }
    return 0;
}

int ferryd_config_init(ferryd_config *c)
{
    *c = (ferryd_config){
        .alg = FERRY_ALG_ES256,
        .sync = FERRY_AUDITLOG_SYNC_ALWAYS,
        .limits =
            {
                .max_body = FERRYD_DEFAULT_MAX_BODY,
                .max_header = FERRYD_DEFAULT_MAX_HEADER,
                .connections = FERRYD_DEFAULT_CONNECTIONS,
                .connections_per_ip = FERRYD_DEFAULT_CONNECTIONS_PER_IP,
                .timeout_s = FERRYD_DEFAULT_TIMEOUT,
                .request_timeout_s = FERRYD_DEFAULT_REQUEST_TIMEOUT,
                .threads = 0, /* the CPUs of the affinity mask */
                .workers = FERRYD_DEFAULT_WORKERS,
                .worker_queue = FERRYD_DEFAULT_WORKER_QUEUE,
            },
        .drain_timeout_s = FERRYD_DEFAULT_DRAIN_TIMEOUT,
        .one_time_subject = true,
        .per_address = {FERRYD_DEFAULT_ADDRESS_RATE, FERRYD_DEFAULT_ADDRESS_BURST},
        .per_identity = {FERRYD_DEFAULT_IDENTITY_RATE, FERRYD_DEFAULT_IDENTITY_BURST},
        .max_tracked = FERRYD_DEFAULT_MAX_TRACKED,
        .log_target = FERRYD_LOG_STDERR,
        .log_facility = LOG_DAEMON,
    };
    c->listen[0] = strdup(FERRYD_DEFAULT_LISTEN);
    c->n_listen = 1;
    c->state_dir = strdup(FERRY_STATEDIR);
    c->policies_dir = strdup(FERRY_SYSCONFDIR "/policies");
    c->trust = json_pack("{s:[]}", "issuers");
    c->log_ident = strdup(FERRYD_DEFAULT_LOG_IDENT);
    if (!c->listen[0] || !c->state_dir || !c->policies_dir || !c->trust || !c->log_ident) {
        ferryd_config_free(c);
        return -ENOMEM;
    }
    return 0;
}

int ferryd_config_add_listen(ferryd_config *c, const char *addr, bool first)
{
    if (first) {
        for (size_t i = 0; i < c->n_listen; i++) {
            free(c->listen[i]);
            c->listen[i] = NULL;
        }
        c->n_listen = 0;
    }
    if (c->n_listen >= FERRYD_MAX_LISTEN)
        return -E2BIG;
    c->listen[c->n_listen] = strdup(addr);
    if (!c->listen[c->n_listen])
        return -ENOMEM;
    c->n_listen++;
    return 0;
}

static int load_listen(ctx *x, ferryd_config *c, const json_t *doc)
{
    json_t *v = json_object_get(doc, "listen");
    size_t i;
    json_t *e;
    if (!json_is_array(v) || json_array_size(v) == 0 || json_array_size(v) > FERRYD_MAX_LISTEN)
        return fail(x, doc, "listen", "%s must be an array of 1 to 16 addresses", "listen");
    json_array_foreach(v, i, e)
    {
        if (!json_is_string(e) || json_string_length(e) == 0 ||
            json_string_length(e) != strlen(json_string_value(e)) || json_string_length(e) > 200) {
            unsigned line = ferry_json_locs_line_index(x->locs, v, i);
            snprintf(x->errbuf, x->errlen, "%s:%u: listen[%zu] must be a non-empty string", x->path,
                     line, i);
            return -EINVAL;
        }
        int r = ferryd_config_add_listen(c, json_string_value(e), i == 0);
        if (r < 0)
            return r;
    }
    return 0;
}

static int load_token(ctx *x, ferryd_config *c, const json_t *t)
{
    static const char *const names[] = {"default_ttl", "max_ttl", "client_id", "one_time_subject",
                                        NULL};
    long long n;
    int r;
    if (!json_is_object(t))
        return fail(x, t, NULL, "%s must be an object", "token");
    if ((r = check_members(x, t, names, "token")) < 0)
        return r;
    if (json_object_get(t, "max_ttl")) {
        if ((r = get_uint(x, t, "max_ttl", "token.max_ttl", 1, FERRY_MINT_MAX_TTL_LIMIT, &n)) < 0)
            return r;
        c->max_ttl = n;
    }
    if (json_object_get(t, "default_ttl")) {
        if ((r = get_uint(x, t, "default_ttl", "token.default_ttl", 1, FERRY_MINT_MAX_TTL_LIMIT,
                          &n)) < 0)
            return r;
        c->default_ttl = n;
    }
    if (c->max_ttl && c->default_ttl > c->max_ttl)
        return fail(x, t, "default_ttl", "%s must not exceed token.max_ttl", "token.default_ttl");
    if (json_object_get(t, "client_id") &&
        (r = get_string(x, t, "client_id", "token.client_id", &c->client_id)) < 0)
        return r;
    if (json_object_get(t, "one_time_subject")) {
        json_t *v = json_object_get(t, "one_time_subject");
        if (!json_is_boolean(v))
            return fail(x, t, "one_time_subject", "%s must be true or false",
                        "token.one_time_subject");
        c->one_time_subject = json_is_true(v);
    }
    return 0;
}

/* {"rate": R, "burst": B}: R a number 0..1e6 (0 = off), B an integer 1..1e6. A rate without a
 * burst gets burst max(1, ceil(2 * rate)), the defaults' ratio. */
static int load_rate(ctx *x, const json_t *o, const char *what, ferryd_rate_limit *ret)
{
    static const char *const names[] = {"rate", "burst", NULL};
    char where[64];
    ferryd_rate_limit rl = *ret;
    json_t *v;
    long long n;
    int r;

    snprintf(where, sizeof(where), "rate_limits.%s", what);
    if (!json_is_object(o))
        return fail(x, o, NULL, "%s must be an object", where);
    if ((r = check_members(x, o, names, where)) < 0)
        return r;
    if ((v = json_object_get(o, "rate"))) {
        if (!json_is_number(v) || !(json_number_value(v) >= 0) ||
            json_number_value(v) > FERRY_RATELIMIT_RATE_MAX)
            return fail(x, o, "rate", "%s.rate must be a number from 0 to 1000000", where);
        rl.rate = json_number_value(v);
        if (!json_object_get(o, "burst")) {
            double b = rl.rate * 2;
            rl.burst = b < 1 ? 1 : b >= FERRY_RATELIMIT_BURST_MAX ? FERRY_RATELIMIT_BURST_MAX
                                                                  : (unsigned)b;
            if ((double)rl.burst < b && rl.burst < FERRY_RATELIMIT_BURST_MAX)
                rl.burst++;
        }
    }
    if (json_object_get(o, "burst")) {
        char bw[80];
        snprintf(bw, sizeof(bw), "%s.burst", where);
        if ((r = get_uint(x, o, "burst", bw, 1, FERRY_RATELIMIT_BURST_MAX, &n)) < 0)
            return r;
        rl.burst = (unsigned)n;
    }
    *ret = rl;
    return 0;
}

static int load_rate_limits(ctx *x, ferryd_config *c, const json_t *l)
{
    static const char *const names[] = {"per_address", "per_identity", "max_tracked", NULL};
    json_t *v;
    long long n;
    int r;

    if (!json_is_object(l))
        return fail(x, l, NULL, "%s must be an object", "rate_limits");
    if ((r = check_members(x, l, names, "rate_limits")) < 0)
        return r;
    if ((v = json_object_get(l, "per_address")) &&
        ((r = want_object(x, l, "per_address", "rate_limits.per_address")) < 0 ||
         (r = load_rate(x, v, "per_address", &c->per_address)) < 0))
        return r;
    if ((v = json_object_get(l, "per_identity")) &&
        ((r = want_object(x, l, "per_identity", "rate_limits.per_identity")) < 0 ||
         (r = load_rate(x, v, "per_identity", &c->per_identity)) < 0))
        return r;
    if (json_object_get(l, "max_tracked")) {
        if ((r = get_uint(x, l, "max_tracked", "rate_limits.max_tracked", 1,
                          FERRY_RATELIMIT_MAX_KEYS_LIMIT, &n)) < 0)
            return r;
        c->max_tracked = (size_t)n;
    }
    return 0;
}

static const struct {
    const char *name;
    int facility;
} facilities[] = {
    {"daemon", LOG_DAEMON}, {"auth", LOG_AUTH},     {"authpriv", LOG_AUTHPRIV},
    {"local0", LOG_LOCAL0}, {"local1", LOG_LOCAL1}, {"local2", LOG_LOCAL2},
    {"local3", LOG_LOCAL3}, {"local4", LOG_LOCAL4}, {"local5", LOG_LOCAL5},
    {"local6", LOG_LOCAL6}, {"local7", LOG_LOCAL7},
};

static int load_log(ctx *x, ferryd_config *c, const json_t *l)
{
    static const char *const names[] = {"target", "facility", "ident", NULL};
    json_t *v;
    int r;

    if (!json_is_object(l))
        return fail(x, l, NULL, "%s must be an object", "log");
    if ((r = check_members(x, l, names, "log")) < 0)
        return r;
    if ((v = json_object_get(l, "target"))) {
        const char *s = json_string_value(v);
        if (s && strcmp(s, "stderr") == 0)
            c->log_target = FERRYD_LOG_STDERR;
        else if (s && strcmp(s, "syslog") == 0)
            c->log_target = FERRYD_LOG_SYSLOG;
        else
            return fail(x, l, "target", "%s must be \"stderr\" or \"syslog\"", "log.target");
    }
    if ((v = json_object_get(l, "facility"))) {
        const char *s = json_string_value(v);
        size_t i;
        for (i = 0; s && i < ARRAY_SIZE(facilities); i++)
            if (strcmp(s, facilities[i].name) == 0)
                break;
        if (!s || i == ARRAY_SIZE(facilities))
            return fail(x, l, "facility",
                        "%s must be \"daemon\", \"auth\", \"authpriv\" or \"local0\" to "
                        "\"local7\"",
                        "log.facility");
        c->log_facility = facilities[i].facility;
    }
    if (json_object_get(l, "ident")) {
        if ((r = get_string(x, l, "ident", "log.ident", &c->log_ident)) < 0)
            return r;
        for (const char *p = c->log_ident; *p; p++)
            if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                  (*p >= '0' && *p <= '9') || *p == '-' || *p == '_' || *p == '.'))
                return fail(x, l, "ident", "%s must be letters, digits, '-', '_' or '.'",
                            "log.ident");
        if (strlen(c->log_ident) > FERRYD_LOG_IDENT_MAX)
            return fail(x, l, "ident", "%s must be at most %d bytes", "log.ident",
                        FERRYD_LOG_IDENT_MAX);
    }
    return 0;
}

static int load_audit(ctx *x, ferryd_config *c, const json_t *a)
{
    static const char *const names[] = {
        "path", "checkpoint_every", "sync", "sync_every_records", "sync_interval_ms", NULL};
    static const char *const modes[] = {"always", "batch", "checkpoint"};
    long long n;
    int r;
    if (!json_is_object(a))
        return fail(x, a, NULL, "%s must be an object", "audit_log");
    if ((r = check_members(x, a, names, "audit_log")) < 0)
        return r;
    if (json_object_get(a, "path") &&
        (r = get_string(x, a, "path", "audit_log.path", &c->audit_path)) < 0)
        return r;
    if (json_object_get(a, "checkpoint_every")) {
        if ((r = get_uint(x, a, "checkpoint_every", "audit_log.checkpoint_every", 1,
                          FERRY_AUDITLOG_MAX_CHECKPOINT_EVERY, &n)) < 0)
            return r;
        c->checkpoint_every = (unsigned)n;
    }
    if (json_object_get(a, "sync")) {
        const char *s = json_string_value(json_object_get(a, "sync"));
        size_t i;
        for (i = 0; s && i < ARRAY_SIZE(modes); i++)
            if (strcmp(s, modes[i]) == 0)
                break;
        if (!s || i == ARRAY_SIZE(modes))
            return fail(x, a, "sync", "%s must be \"always\", \"batch\" or \"checkpoint\"",
                        "audit_log.sync");
        c->sync = (ferry_auditlog_sync_mode)i;
    }
    if (json_object_get(a, "sync_every_records")) {
        if ((r = get_uint(x, a, "sync_every_records", "audit_log.sync_every_records", 1, 1000000,
                          &n)) < 0)
            return r;
        c->sync_every_records = (unsigned)n;
    }
    if (json_object_get(a, "sync_interval_ms")) {
        if ((r = get_uint(x, a, "sync_interval_ms", "audit_log.sync_interval_ms", 1, 3600000, &n)) <
            0)
            return r;
        c->sync_interval_ms = (unsigned)n;
    }
    return 0;
}

static int load_limits(ctx *x, ferryd_config *c, const json_t *l)
{
    static const char *const names[] = {
        "max_body", "max_header",    "connections", "connections_per_ip", "timeout",
        "request_timeout", "drain_timeout", "threads", "workers", "worker_queue", NULL};
    const struct {
        const char *name, *where;
        long long min, max;
        size_t *size;   /* one of the two destinations */
        unsigned *uint;
    } keys[] = {
        {"max_body", "limits.max_body", 1024, 1024 * 1024, &c->limits.max_body, NULL},
        {"max_header", "limits.max_header", 4096, 1024 * 1024, &c->limits.max_header, NULL},
        {"connections", "limits.connections", 1, 10000, NULL, &c->limits.connections},
        {"connections_per_ip", "limits.connections_per_ip", 0, 10000, NULL,
         &c->limits.connections_per_ip},
        {"timeout", "limits.timeout", 1, 3600, NULL, &c->limits.timeout_s},
        {"request_timeout", "limits.request_timeout", 1, 3600, NULL,
         &c->limits.request_timeout_s},
        {"drain_timeout", "limits.drain_timeout", 0, 3600, NULL, &c->drain_timeout_s},
        {"threads", "limits.threads", 0, 64, NULL, &c->limits.threads},
        {"workers", "limits.workers", 1, 256, NULL, &c->limits.workers},
        {"worker_queue", "limits.worker_queue", 1, 65536, NULL, &c->limits.worker_queue},
    };
    long long n;
    int r;

    if (!json_is_object(l))
        return fail(x, l, NULL, "%s must be an object", "limits");
    if ((r = check_members(x, l, names, "limits")) < 0)
        return r;
    for (size_t i = 0; i < ARRAY_SIZE(keys); i++) {
        if (!json_object_get(l, keys[i].name))
            continue;
        if ((r = get_uint(x, l, keys[i].name, keys[i].where, keys[i].min, keys[i].max, &n)) < 0)
            return r;
        if (keys[i].size)
            *keys[i].size = (size_t)n;
        else
            *keys[i].uint = (unsigned)n;
    }
    return 0;
}

int ferryd_config_load(ferryd_config *c, const char *path, char *errbuf, size_t errlen)
{
    static const char *const names[] = {
        "listen",   "state_dir", "issuer", "signing_alg", "token", "issuers", "replay_cache_size",
        "policies", "audit_log", "limits", "rate_limits", "log", "secrets", "secrets_subject", NULL};
    _cleanup_free_ char *buf = NULL;
    size_t len = 0;
    json_t *doc = NULL, *v;
    unsigned line = 0;
    char perr[256];
    ctx x = {.path = path, .errbuf = errbuf, .errlen = errlen};
    int r;

    r = ferry_read_regular_file(path, FERRYD_CONFIG_MAX, &buf, &len);
    if (r == -EINVAL || r == -EFBIG) {
        snprintf(errbuf, errlen, "%s: not a regular file of at most %d bytes", path,
                 FERRYD_CONFIG_MAX);
        return -EINVAL;
    }
    if (r < 0) {
        snprintf(errbuf, errlen, "%s: %s", path, strerror(-r));
        return r;
    }
    r = ferry_json_parse_located(buf, len, FERRYD_CONFIG_MAX, CONFIG_DEPTH, &doc, &x.locs, &line,
                                 perr, sizeof(perr));
    if (r < 0) {
        snprintf(errbuf, errlen, "%s:%u: %s", path, line, perr);
        return r == -ENOMEM ? r : -EINVAL;
    }
    if (!json_is_object(doc)) {
        r = fail(&x, doc, NULL, "%s", "the configuration must be a JSON object");
        goto out;
    }
    if ((r = check_members(&x, doc, names, "the configuration")) < 0)
        goto out;
    if (json_object_get(doc, "listen") && (r = load_listen(&x, c, doc)) < 0)
        goto out;
    if (json_object_get(doc, "state_dir") &&
        (r = get_string(&x, doc, "state_dir", "state_dir", &c->state_dir)) < 0)
        goto out;
    if (json_object_get(doc, "issuer") &&
        (r = get_string(&x, doc, "issuer", "issuer", &c->issuer)) < 0)
        goto out;
    if ((v = json_object_get(doc, "signing_alg"))) {
        const char *s = json_string_value(v);
        ferry_alg a = s ? ferry_alg_from_name(s) : FERRY_ALG_UNKNOWN;
        if (a != FERRY_ALG_ES256 && a != FERRY_ALG_EDDSA && a != FERRY_ALG_RS256) {
            r = fail(&x, doc, "signing_alg", "%s must be \"ES256\", \"EdDSA\" or \"RS256\"",
                     "signing_alg");
            goto out;
        }
        c->alg = a;
    }
    if ((v = json_object_get(doc, "token")) &&
        ((r = want_object(&x, doc, "token", "token")) < 0 || (r = load_token(&x, c, v)) < 0))
        goto out;
    if (json_object_get(doc, "policies") &&
        (r = get_string(&x, doc, "policies", "policies", &c->policies_dir)) < 0)
        goto out;
    if ((v = json_object_get(doc, "audit_log")) &&
        ((r = want_object(&x, doc, "audit_log", "audit_log")) < 0 ||
         (r = load_audit(&x, c, v)) < 0))
        goto out;
    if ((v = json_object_get(doc, "limits")) &&
        ((r = want_object(&x, doc, "limits", "limits")) < 0 || (r = load_limits(&x, c, v)) < 0))
        goto out;
    if ((v = json_object_get(doc, "rate_limits")) &&
        ((r = want_object(&x, doc, "rate_limits", "rate_limits")) < 0 ||
         (r = load_rate_limits(&x, c, v)) < 0))
        goto out;
    if ((v = json_object_get(doc, "log")) &&
        ((r = want_object(&x, doc, "log", "log")) < 0 || (r = load_log(&x, c, v)) < 0))
        goto out;
    if ((v = json_object_get(doc, "secrets"))) {
        /* Checked member by member by ferry_secrets_new at start; here only its shape. */
        if ((r = want_object(&x, doc, "secrets", "secrets")) < 0)
            goto out;
        json_decref(c->secrets);
        c->secrets = json_incref(v);
    }
    if (json_object_get(doc, "secrets_subject") &&
        (r = get_string(&x, doc, "secrets_subject", "secrets_subject", &c->secrets_subject)) < 0)
        goto out;
    if ((v = json_object_get(doc, "issuers"))) {
        if (!json_is_array(v)) {
            r = fail(&x, doc, "issuers", "%s must be an array", "issuers");
            goto out;
        }
        if (json_object_set(c->trust, "issuers", v) < 0) {
            r = -ENOMEM;
            goto out;
        }
    }
    if ((v = json_object_get(doc, "replay_cache_size"))) {
        if (!json_is_integer(v)) {
            r = fail(&x, doc, "replay_cache_size", "%s must be an integer", "replay_cache_size");
            goto out;
        }
        if (json_object_set(c->trust, "replay_cache_size", v) < 0) {
            r = -ENOMEM;
            goto out;
        }
    }
    r = 0;
out:
    if (r == -ENOMEM)
        snprintf(errbuf, errlen, "%s: out of memory", path);
    ferry_json_locs_free(x.locs);
    json_decref(doc);
    return r;
}

int ferryd_config_finish(ferryd_config *c, char *errbuf, size_t errlen)
{
    for (size_t i = 0; i < c->n_listen; i++) {
        int r = ferryd_httpd_check_address(c->listen[i], errbuf, errlen);
        if (r < 0)
            return r;
    }
    if (!c->issuer) {
        /* A loopback listener can name itself; anything else must say how it is reached. */
        const char *a = c->listen[0];
        if (c->n_listen > 0 && (strncmp(a, "127.", 4) == 0 || strncmp(a, "[::1]:", 6) == 0)) {
            if (asprintf(&c->issuer, "http://%s", a) < 0) {
                c->issuer = NULL;
                snprintf(errbuf, errlen, "out of memory");
                return -ENOMEM;
            }
        } else {
            snprintf(errbuf, errlen,
                     "issuer is required when the first listen address is not loopback");
            return -EINVAL;
        }
    }
    if (!c->audit_path && asprintf(&c->audit_path, "%s/audit.log", c->state_dir) < 0) {
        c->audit_path = NULL;
        snprintf(errbuf, errlen, "out of memory");
        return -ENOMEM;
    }
    if (c->max_ttl && c->default_ttl > c->max_ttl) {
        snprintf(errbuf, errlen, "token.default_ttl exceeds token.max_ttl");
        return -EINVAL;
    }
    return 0;
}

void ferryd_config_free(ferryd_config *c)
{
    for (size_t i = 0; i < c->n_listen; i++)
        free(c->listen[i]);
    free(c->state_dir);
    free(c->issuer);
    free(c->client_id);
    free(c->policies_dir);
    free(c->audit_path);
    free(c->log_ident);
    json_decref(c->trust);
    json_decref(c->secrets);
    free(c->secrets_subject);
    *c = (ferryd_config){0};
}
