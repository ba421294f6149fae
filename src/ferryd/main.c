/* ferryd/main.c - ferryd: the RFC 8693 token service (options, start, signals, shutdown).
 *
 *   ferryd [-c FILE] [--listen ADDR:PORT]... [--state-dir DIR]
 *   ferryd --check-config -c FILE
 *
 * Exit status: 0 clean stop (or a valid configuration), 1 a failure at run time, 2 usage or
 * configuration error. Design note: docs/internals/ferryd.md.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <time.h>
#include <limits.h>
#include <unistd.h>

#include "basic/macro.h"
#include "ferry/error.h"
#include "ferryd/ferryd.h"
#include "ferryd/log.h"

enum { EXIT_USAGE = 2 };

static void usage(FILE *f)
{
    fputs("Usage: ferryd [-c FILE] [--listen ADDR:PORT|unix:PATH]... [--state-dir DIR]\n"
          "       ferryd --check-config -c FILE\n"
          "\n"
          "The RFC 8693 token exchange service of ferry.\n"
          "\n"
          "  -c, --config FILE   JSON configuration (docs/configuration.md, \"ferryd\")\n"
          "      --check-config  check the configuration (and its issuers) and exit 0 or 2\n"
          "      --listen ADDR   listen on IPV4:PORT, [IPV6]:PORT or unix:PATH (repeatable;\n"
          "                      replaces the file's list; default " FERRYD_DEFAULT_LISTEN ")\n"
          "      --state-dir DIR keys and audit log (default " FERRY_STATEDIR ")\n"
          "  -h, --help          this help\n"
          "\n"
          "Signals: SIGTERM/SIGINT drain and stop, SIGHUP reloads policies and keys.\n",
          f);
}

/* What the command line says, re-applied to every (re)read of the configuration file. */
typedef struct cmdline {
    const char *config_path;
    const char *state_dir;
    const char *listen[FERRYD_MAX_LISTEN];
    size_t n_listen;
} cmdline;

/* Defaults, then the file (if any), then the command line, then derived values. On failure c
 * is freed and errbuf says why; returns -EINVAL for a bad configuration, -ENOMEM. */
static int build_config(ferryd_config *c, const cmdline *cl, char *errbuf, size_t errlen)
{
    int r = ferryd_config_init(c);

    if (r < 0) {
        snprintf(errbuf, errlen, "out of memory");
        return r;
    }
    if (cl->config_path && (r = ferryd_config_load(c, cl->config_path, errbuf, errlen)) < 0)
        goto fail;
    for (size_t i = 0; i < cl->n_listen; i++)
        if ((r = ferryd_config_add_listen(c, cl->listen[i], i == 0)) < 0) {
            snprintf(errbuf, errlen, "out of memory");
            goto fail;
        }
    if (cl->state_dir) {
        char *sd = strdup(cl->state_dir);
        if (!sd) {
            r = -ENOMEM;
            snprintf(errbuf, errlen, "out of memory");
            goto fail;
        }
        free(c->state_dir);
        c->state_dir = sd;
    }
    r = ferryd_config_finish(c, errbuf, errlen);
    if (r == 0)
        return 0;
fail:
    ferryd_config_free(c);
    return r;
}

static bool str_differs(const char *a, const char *b)
{
    return (a == NULL) != (b == NULL) || (a && strcmp(a, b) != 0);
}

/* Settings a running ferryd cannot change (they shape sockets, files, keys or the exchange):
 * each one that differs is named in a warning; the old value stays until a restart. */
static void warn_restart_only(const ferryd_config *o, const ferryd_config *n)
{
    bool listen = o->n_listen != n->n_listen;
    for (size_t i = 0; !listen && i < o->n_listen; i++)
        listen = strcmp(o->listen[i], n->listen[i]) != 0;
    const struct {
        const char *name;
        bool differs;
    } items[] = {
        {"listen", listen},
        {"state_dir", str_differs(o->state_dir, n->state_dir)},
        {"issuer", str_differs(o->issuer, n->issuer)},
        {"signing_alg", o->alg != n->alg},
        {"token.default_ttl", o->default_ttl != n->default_ttl},
        {"token.max_ttl", o->max_ttl != n->max_ttl},
        {"token.client_id", str_differs(o->client_id, n->client_id)},
        {"token.one_time_subject", o->one_time_subject != n->one_time_subject},
        {"audit_log.path", str_differs(o->audit_path, n->audit_path)},
        {"audit_log.checkpoint_every", o->checkpoint_every != n->checkpoint_every},
        {"audit_log.sync", o->sync != n->sync || o->sync_every_records != n->sync_every_records ||
                               o->sync_interval_ms != n->sync_interval_ms},
        {"secrets", !json_equal(o->secrets, n->secrets) && (o->secrets || n->secrets)},
        {"secrets_subject", str_differs(o->secrets_subject, n->secrets_subject)},
        {"limits", memcmp(&o->limits, &n->limits, sizeof(o->limits)) != 0 ||
                       o->drain_timeout_s != n->drain_timeout_s},
    };
    for (size_t i = 0; i < ARRAY_SIZE(items); i++)
        if (items[i].differs)
            ferryd_log("warning", "reload: %s changed; it takes effect after a restart",
                       items[i].name);
}

/* The identity of the cloud and Vault backends (ferry_secrets_env.web_identity_token): a
 * ferry token minted by ferryd for itself, subject secrets_subject (default: the issuer URL),
 * src_iss = the issuer, src_sub = that subject, for the audience the backend asks for. */
static int secrets_identity_token(void *userdata, const char *audience, char **ret_token,
                                  char *errbuf, size_t errlen)
{
    ferryd *d = userdata;
    const char *sub = d->config.secrets_subject ? d->config.secrets_subject : d->config.issuer;
    const char *aud[1] = {audience};
    char jti[FERRY_MINT_JTI_LEN + 1];
    ferry_mint_request mr = {
        .subject = sub,
        .audience = aud,
        .n_audience = 1,
        .client_id = d->config.client_id ? d->config.client_id : "ferry",
        .ttl = 300,
        .src_iss = d->config.issuer,
        .src_sub = sub,
    };
    int r = ferry_mint_token(d->mint, &mr, ret_token, jti, NULL);
    if (r < 0)
        snprintf(errbuf, errlen, "ferryd could not mint its identity token: %s",
                 ferry_strerror(r));
    return r;
}

static void log_problems(const char *what, ferry_policy_problems *p)
{
    size_t n = ferry_policy_problems_count(p);
    for (size_t i = 0; i < n && i < 50; i++) {
        const ferry_policy_problem *pr = ferry_policy_problems_get(p, i);
        ferryd_log("error", "%s: %s:%u: %s", what, pr->file ? pr->file : "-", pr->line,
                   pr->reason ? pr->reason : "");
    }
}

static int load_trust(ferryd *d, char *err, size_t errlen)
{
    int r = ferry_oidc_new(NULL, &d->oidc);
    if (r < 0) {
        snprintf(err, errlen, "trust store: %s", ferry_strerror(r));
        return r;
    }
    return ferry_oidc_load_config(d->oidc, d->config.trust, err, errlen);
}

static int open_audit(ferryd *d, char *err, size_t errlen)
{
    json_t *all = NULL;
    ferry_jwks *verify = NULL;
    ferry_jwk *sk = ferry_mint_signing_key(d->mint, NULL);
    int r;

    if (!sk) {
        snprintf(err, errlen, "no signing key in %s", d->config.state_dir);
        return -FERRY_ENOKEY;
    }
    /* Checkpoints of earlier keys are verified on reopen too. */
    if (ferry_mint_jwks(d->mint, true, &all) == 0)
        (void)ferry_jwks_from_json(all, &verify, NULL);
    json_decref(all);
    ferry_auditlog_options lo = {
        .path = d->config.audit_path,
        .checkpoint_every = d->config.checkpoint_every,
        .sync = d->config.sync,
        .sync_every_records = d->config.sync_every_records,
        .sync_interval_ms = d->config.sync_interval_ms,
        .signing_key = sk,
        .verify_keys = verify,
    };
    r = ferry_auditlog_open(&lo, &d->log, err, errlen);
    ferry_jwks_unref(verify);
    ferry_jwk_unref(sk);
    return r;
}

static void apply_log_target(const ferryd_config *c)
{
    if (c->log_target == FERRYD_LOG_SYSLOG)
        ferryd_log_use_syslog(c->log_facility, c->log_ident);
    else
        ferryd_log_use_stderr();
}

/* SIGHUP: re-read the configuration file, the policies and the keys. The new configuration
 * and policy set are checked completely before anything changes: a bad file, a policy with a
 * problem or an issuer the trust store refuses keeps the old configuration, policies and
 * issuers, and is logged. Then, in this order: issuers (ferry_oidc_reload_config: one atomic
 * swap, replay cache kept), policies (one atomic swap), rate limits, log target; settings
 * that need a restart are named in warnings. The signing keys are reloaded last, in every
 * case. */
static void reload(ferryd *d, const cmdline *cl)
{
    ferry_policy_problems *problems = NULL;
    ferry_policy_set *set = NULL;
    ferryd_config nc;
    bool nc_ok;
    char err[512];
    int r;

    r = build_config(&nc, cl, err, sizeof(err));
    nc_ok = r == 0;
    if (r < 0) {
        ferryd_log("error", "reload: configuration not loaded (%s); keeping the old set of "
                   "settings, issuers and policies", err);
        goto keys;
    }
    r = ferry_policy_problems_new(&problems);
    if (r == 0)
        r = ferry_policy_load_dir(nc.policies_dir, &set, problems);
    if (r < 0) {
        ferryd_log("error", "reload: policies in %s not loaded (%s); keeping the old set of "
                   "settings, issuers and policies", nc.policies_dir, ferry_strerror(r));
        if (problems)
            log_problems("reload", problems);
        goto keys;
    }
    r = ferry_oidc_reload_config(d->oidc, nc.trust, err, sizeof(err));
    if (r < 0) {
        ferryd_log("error", "reload: issuers not reloaded (%s); keeping the old set of "
                   "settings, issuers and policies", err);
        goto keys;
    }
    ferry_policy_store_swap(d->policies, set);
    ferryd_log("info", "reload: %zu issuers, %zu policies from %s",
               ferry_oidc_issuer_count(d->oidc), ferry_policy_set_count(set), nc.policies_dir);
    warn_restart_only(&d->config, &nc);

    /* Only this thread reads these members while serving, so they are moved in place. */
    SWAP_TWO(d->config.trust, nc.trust);
    SWAP_TWO(d->config.policies_dir, nc.policies_dir);
    d->config.per_address = nc.per_address;
    d->config.per_identity = nc.per_identity;
    d->config.max_tracked = nc.max_tracked;
    if (ferryd_apply_rate_limits(d, err, sizeof(err)) < 0)
        ferryd_log("error", "reload: %s; keeping the old rate limits", err);
    if (nc.log_target != d->config.log_target || nc.log_facility != d->config.log_facility ||
        str_differs(nc.log_ident, d->config.log_ident)) {
        d->config.log_target = nc.log_target;
        d->config.log_facility = nc.log_facility;
        SWAP_TWO(d->config.log_ident, nc.log_ident);
        apply_log_target(&d->config);
        ferryd_log("info", "reload: logging to %s",
                   d->config.log_target == FERRYD_LOG_SYSLOG ? "syslog" : "stderr");
    }
    /* Issuers added by the reload: load their keys now; /readyz waits until they are. */
    r = ferry_oidc_prefetch(d->oidc, err, sizeof(err));
    atomic_store(&d->issuers_ready, r == 0);
    if (r < 0)
        ferryd_log("warning", "reload: issuer keys not loaded yet: %s", err);

keys:
    /* The signing keys live in the state directory, not in the configuration: they are
     * reloaded whatever became of the rest (e.g. after `ferry keys rotate`). */
    r = ferry_mint_reload(d->mint, err, sizeof(err));
    if (r < 0) {
        ferryd_log("error", "reload: keys not reloaded (%s); keeping the old keys", err);
    } else {
        ferry_jwk *sk = ferry_mint_signing_key(d->mint, NULL);
        if (sk && ferry_auditlog_set_signing_key(d->log, sk) < 0)
            ferryd_log("error", "reload: the audit log keeps its old checkpoint key");
        ferry_jwk_unref(sk);
        if (ferryd_refresh_documents(d) < 0)
            ferryd_log("error", "reload: discovery and JWKS documents not refreshed");
        else
            ferryd_log("info", "reload: keys reloaded");
    }
    ferry_policy_set_unref(set);
    ferry_policy_problems_free(problems);
    if (nc_ok)
        ferryd_config_free(&nc);
}

static void teardown(ferryd *d)
{
    ferry_exchange_free(d->exchange);
    ferry_secrets_free(d->secrets);
    ferry_ratelimit_free(d->per_address);
    ferry_ratelimit_free(d->per_identity);
    if (d->log) {
        int r = ferry_auditlog_close(d->log);
        if (r < 0)
            ferryd_log("error", "audit log closed without its final checkpoint: %s",
                       ferry_strerror(r));
    }
    ferry_mint_free(d->mint);
    ferry_policy_store_free(d->policies);
    ferry_oidc_free(d->oidc);
    free(d->discovery);
    free(d->jwks);
    ferryd_stats_free(d->stats);
    pthread_mutex_destroy(&d->lock);
    ferryd_config_free(&d->config);
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'}, {"check-config", no_argument, NULL, 'C'},
        {"listen", required_argument, NULL, 'l'}, {"state-dir", required_argument, NULL, 's'},
        {"help", no_argument, NULL, 'h'},         {0},
    };
    cmdline cl = {0};
    bool check = false;
    ferryd d = {0};
    ferryd_httpd *httpd = NULL;
    char err[512];
    int c, r, ret = 1, sfd = -1;
    sigset_t mask;

    while ((c = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            cl.config_path = optarg;
            break;
        case 'C':
            check = true;
            break;
        case 'l':
            if (cl.n_listen == FERRYD_MAX_LISTEN) {
                fprintf(stderr, "ferryd: at most %d --listen\n", FERRYD_MAX_LISTEN);
                return EXIT_USAGE;
            }
            cl.listen[cl.n_listen++] = optarg;
            break;
        case 's':
            cl.state_dir = optarg;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return EXIT_USAGE;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "ferryd: unexpected argument \"%s\"\n", argv[optind]);
        return EXIT_USAGE;
    }
    if (check && !cl.config_path) {
        fprintf(stderr, "ferryd: --check-config needs -c FILE\n");
        return EXIT_USAGE;
    }

    /* Signals go to a signalfd read by the main thread once serving; they are blocked before
     * anything else happens, so every thread inherits the mask, and a SIGHUP or SIGTERM that
     * arrives while ferryd starts waits for the signal loop instead of killing the process. */
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGHUP);
    signal(SIGPIPE, SIG_IGN);
    if (pthread_sigmask(SIG_BLOCK, &mask, NULL) != 0) {
        fprintf(stderr, "ferryd: cannot block signals: %s\n", strerror(errno));
        return 1;
    }
    pthread_mutex_init(&d.lock, NULL);
    r = build_config(&d.config, &cl, err, sizeof(err));
    if (r < 0) {
        fprintf(stderr, "ferryd: %s\n", err);
        pthread_mutex_destroy(&d.lock);
        return r == -ENOMEM ? 1 : EXIT_USAGE;
    }
    if (load_trust(&d, err, sizeof(err)) < 0) {
        fprintf(stderr, "ferryd: %s: %s\n", cl.config_path ? cl.config_path : "issuers", err);
        ret = EXIT_USAGE;
        goto out;
    }
    if (check) {
        /* The secrets section is checked member by member by the backends themselves. */
        if (d.config.secrets) {
            ferry_secrets *probe = NULL;
            ferry_secrets_env se = {
                .state_dir = d.config.state_dir,
                .web_identity_token = secrets_identity_token,
                .web_identity_userdata = &d,
            };
            r = ferry_secrets_new(d.config.secrets, &se, &probe, err, sizeof(err));
            ferry_secrets_free(probe);
            if (r < 0) {
                fprintf(stderr, "ferryd: %s: secrets: %s\n", cl.config_path, err);
                ret = EXIT_USAGE;
                goto out;
            }
        }
        printf("%s: ok (%zu issuers, %zu listen addresses)\n", cl.config_path,
               ferry_oidc_issuer_count(d.oidc), d.config.n_listen);
        ret = 0;
        goto out;
    }
    apply_log_target(&d.config);

    /* Policies: a set with problems is not served (fail closed). */
    {
        ferry_policy_problems *problems = NULL;
        ferry_policy_set *set = NULL;
        r = ferry_policy_problems_new(&problems);
        if (r == 0)
            r = ferry_policy_load_dir(d.config.policies_dir, &set, problems);
        if (r < 0) {
            ferryd_log("error", "policies in %s not loaded: %s", d.config.policies_dir,
                       ferry_strerror(r));
            log_problems("policies", problems);
            ferry_policy_problems_free(problems);
            ret = EXIT_USAGE;
            goto out;
        }
        ferry_policy_problems_free(problems);
        r = ferry_policy_store_new(set, &d.policies);
        ferry_policy_set_unref(set);
        if (r < 0)
            goto out;
    }
    {
        ferry_mint_options mo = {
            .issuer = d.config.issuer,
            .state_dir = d.config.state_dir,
            .alg = d.config.alg,
            .max_ttl = d.config.max_ttl,
        };
        r = ferry_mint_open(&mo, &d.mint, err, sizeof(err));
        if (r < 0) {
            ferryd_log("error", "keys: %s", err);
            goto out;
        }
    }
    if (open_audit(&d, err, sizeof(err)) < 0) {
        ferryd_log("error", "audit log %s: %s", d.config.audit_path, err);
        goto out;
    }
    if (ferryd_apply_rate_limits(&d, err, sizeof(err)) < 0) {
        ferryd_log("error", "%s", err);
        goto out;
    }
    {
        ferry_exchange_options eo = {
            .default_ttl = d.config.default_ttl,
            .max_ttl = d.config.max_ttl,
            .client_id = d.config.client_id,
            /* An fdatasync per record: no exchange may run on an event thread. */
            .flags = (d.config.one_time_subject ? FERRY_EXCHANGE_ONE_TIME_SUBJECT : 0) |
                     (d.config.sync == FERRY_AUDITLOG_SYNC_ALWAYS ? FERRY_EXCHANGE_AUDIT_BLOCKS
                                                                  : 0),
            .identity_limit = d.per_identity,
        };
        r = ferry_exchange_new(d.oidc, d.policies, d.mint, d.log, &eo, &d.exchange, err,
                               sizeof(err));
        if (r < 0) {
            ferryd_log("error", "exchange: %s", err);
            goto out;
        }
    }
    {
        ferry_secrets_env se = {
            .state_dir = d.config.state_dir,
            .web_identity_token = secrets_identity_token,
            .web_identity_userdata = &d,
        };
        /* No "secrets" section: the file backend under the state directory, when its key
         * was made (`ferry secret init`); without it ferryd serves no secrets (501). */
        char keyp[PATH_MAX];
        if (!d.config.secrets &&
            ((size_t)snprintf(keyp, sizeof(keyp), "%s/secrets.key", d.config.state_dir) >=
                 sizeof(keyp) ||
             access(keyp, F_OK) < 0)) {
            se.state_dir = NULL;
            ferryd_log("info", "secrets: no secrets section and no %s: no secret backend",
                       keyp);
        }
        r = ferry_secrets_new(d.config.secrets, &se, &d.secrets, err, sizeof(err));
        if (r < 0) {
            ferryd_log("error", "%s", err);
            ret = EXIT_USAGE;
            goto out;
        }
    }
    if (ferryd_refresh_documents(&d) < 0) {
        ferryd_log("error", "discovery and JWKS documents could not be built");
        goto out;
    }

    /* Signals blocked at the top of main wait here; from now on this thread reads them. */
    sfd = signalfd(-1, &mask, SFD_CLOEXEC);
    if (sfd < 0) {
        ferryd_log("error", "signalfd: %s", strerror(errno));
        goto out;
    }

    if (ferryd_stats_new(&d.stats, err, sizeof(err)) < 0) {
        ferryd_log("error", "metrics: %s", err);
        goto out;
    }
    ferryd_observer observer = ferryd_stats_observer(d.stats);
    r = ferryd_httpd_start((const char *const *)d.config.listen, d.config.n_listen,
                           &d.config.limits, ferryd_route, &d, &observer, &httpd, err,
                           sizeof(err));
    if (r < 0) {
        ferryd_log("error", "%s", err);
        goto out;
    }
    /* Read only by routes, which run on the server's threads: all of them have stopped before
     * ferryd_httpd_free frees it. */
    atomic_store(&d.httpd, httpd);
    {
        json_t *l = json_array();
        for (size_t i = 0; l && i < d.config.n_listen; i++)
            json_array_append_new(l, json_string(d.config.listen[i]));
        ferryd_log_json(json_pack("{s:s, s:s, s:s, s:o, s:s}", "level", "info", "msg",
                                  "ferryd started", "issuer", d.config.issuer, "listen",
                                  l ? l : json_null(), "state_dir", d.config.state_dir));
    }
    {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        atomic_store(&d.last_prefetch, (long long)ts.tv_sec); /* /readyz waits its turn */
    }
    r = ferry_oidc_prefetch(d.oidc, err, sizeof(err));
    if (r == 0)
        atomic_store(&d.issuers_ready, true);
    else
        ferryd_log("warning", "issuer keys not loaded yet: %s", err);

    for (;;) {
        struct signalfd_siginfo si;
        ssize_t n = read(sfd, &si, sizeof(si));
        if (n < 0 && errno == EINTR)
            continue;
        if (n != (ssize_t)sizeof(si)) {
            ferryd_log("error", "signalfd read: %s", n < 0 ? strerror(errno) : "short read");
            break;
        }
        if (si.ssi_signo == SIGHUP) {
            ferryd_log("info", "SIGHUP: reloading the configuration, policies and keys");
            reload(&d, &cl);
            continue;
        }
        ferryd_log("info", "%s: stopping", si.ssi_signo == SIGTERM ? "SIGTERM" : "SIGINT");
        ret = 0;
        break;
    }
    ferryd_httpd_quiesce(httpd);
    {
        unsigned left = ferryd_httpd_drain(httpd, d.config.drain_timeout_s * 1000u);
        if (left)
            ferryd_log("warning", "%u requests still running after the drain timeout", left);
    }
    atomic_store(&d.httpd, NULL);
    ferryd_httpd_free(httpd);
    httpd = NULL;
    ferryd_log("info", "ferryd stopped");

out:
    ferryd_httpd_free(httpd);
    if (sfd >= 0)
        close(sfd);
    teardown(&d);
    return ret;
}
