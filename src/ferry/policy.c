/* ferry/policy.c - `ferry policy lint` and `ferry policy explain`.
 *
 * lint: loads every given policy file or directory into one set (so duplicate ids across
 * files are found) and prints one "FILE:LINE: reason" line per problem (exit 1), or a summary
 * (exit 0).
 * explain: loads a policy directory, takes an identity either from a token verified through
 * the oidc module (--token with --config, the issuer configuration of `ferry token verify`)
 * or from a claims JSON taken as if verified (--claims; every output says UNVERIFIED), and
 * shows which policies matched, what each grants and the final grant or the exact refusal.
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "basic/buf.h"
#include "basic/macro.h"
#include "basic/mem.h"
#include "ferry/error.h"
#include "ferry/ferry.h"
#include "ferry/json.h"
#include "ferry/oidc.h"
#include "ferry/policy.h"

#define DEFAULT_POLICY_DIR FERRY_SYSCONFDIR "/policies"
#define CLAIMS_MAX (64 * 1024)
#define TOKEN_INPUT_MAX (64 * 1024)
#define REQ_MAX 256
#define STEP_UP_METHOD "totp"

#define _cleanup_json_ _cleanup_(json_decrefp)

static void problems_freep(ferry_policy_problems **p)
{
    ferry_policy_problems_free(*p);
}

static void builder_freep(ferry_policy_builder **b)
{
    ferry_policy_builder_free(*b);
}

static void set_unrefp(ferry_policy_set **s)
{
    ferry_policy_set_unref(*s);
}

/* Print the problems as "FILE:LINE: reason" (or "FILE: reason" without a line). */
static void print_problems(FILE *out, const ferry_policy_problems *pr)
{
    for (size_t i = 0; i < ferry_policy_problems_count(pr); i++) {
        const ferry_policy_problem *p = ferry_policy_problems_get(pr, i);
        if (p->line)
            fprintf(out, "%s:%u: %s\n", p->file, p->line, p->reason);
        else
            fprintf(out, "%s: %s\n", p->file, p->reason);
    }
}

/* ---- lint ----------------------------------------------------------------------------------- */

static void usage_lint(FILE *f)
{
    fprintf(f, "usage: ferry policy lint [DIR | FILE]...\n"
               "\n"
               "Load every policy file (each FILE, and the *.json files of each DIR; default\n"
               "%s) as one policy set and print one line per problem:\n"
               "  FILE:LINE: reason\n"
               "Exit 0 when there is no problem (a summary line is printed), 1 when there is\n"
               "any, 2 on usage errors.\n",
               DEFAULT_POLICY_DIR);
}

static int cmd_lint(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "help", no_argument, NULL, 'h' },
        {},
    };
    _cleanup_(problems_freep) ferry_policy_problems *pr = NULL;
    _cleanup_(builder_freep) ferry_policy_builder *b = NULL;
    _cleanup_(set_unrefp) ferry_policy_set *set = NULL;
    const char *def[] = { DEFAULT_POLICY_DIR };
    const char *const *paths;
    size_t n;
    int c, r;

    optind = 1;
    while ((c = getopt_long(argc, argv, "+h", longopts, NULL)) != -1) {
        switch (c) {
        case 'h':
            usage_lint(stdout);
            return FERRY_EXIT_OK;
        default:
            usage_lint(stderr);
            return FERRY_EXIT_USAGE;
        }
    }
    paths = argc > optind ? (const char *const *)argv + optind : def;
    n = argc > optind ? (size_t)(argc - optind) : 1;
    if (ferry_policy_problems_new(&pr) < 0 || ferry_policy_builder_new(&b) < 0) {
        fprintf(stderr, "ferry policy lint: out of memory\n");
        return FERRY_EXIT_USAGE;
    }
    for (size_t i = 0; i < n; i++) {
        struct stat st;
        /* a directory is read entry by entry; anything else is a file (add_file refuses a
         * symbolic link or a non-regular file with a problem line) */
        bool is_dir = stat(paths[i], &st) == 0 && S_ISDIR(st.st_mode);

        r = is_dir ? ferry_policy_builder_add_dir(b, paths[i], pr)
                   : ferry_policy_builder_add_file(b, paths[i], pr);
        if (r == -ENOMEM) {
            fprintf(stderr, "ferry policy lint: out of memory\n");
            return FERRY_EXIT_USAGE;
        }
        if (r == -FERRY_EFULL)
            break;
    }
    r = ferry_policy_builder_finish(b, &set, pr);
    if (r == -ENOMEM) {
        fprintf(stderr, "ferry policy lint: out of memory\n");
        return FERRY_EXIT_USAGE;
    }
    print_problems(stdout, pr);
    if (fflush(stdout) != 0)
        return FERRY_EXIT_USAGE;
    if (r < 0 || ferry_policy_problems_count(pr) > 0) {
        fprintf(stderr, "ferry policy lint: %zu problem%s\n", ferry_policy_problems_count(pr),
                ferry_policy_problems_count(pr) == 1 ? "" : "s");
        return FERRY_EXIT_REFUSED;
    }
    printf("ferry policy lint: %zu polic%s, no problems\n", ferry_policy_set_count(set),
           ferry_policy_set_count(set) == 1 ? "y" : "ies");
    return FERRY_EXIT_OK;
}

/* ---- explain -------------------------------------------------------------------------------- */

static void usage_explain(FILE *f)
{
    fprintf(f,
            "usage: ferry policy explain [OPTIONS] (--claims FILE | --token TOKEN --config FILE)\n"
            "\n"
            "Show how the policies decide a request: each policy of the identity's issuer,\n"
            "whether it matched (or exactly why not), what it grants, and the final grant or\n"
            "the refusal. Exit 0 when granted, 1 when refused, 2 on usage or policy errors.\n"
            "\n"
            "  -p, --policies DIR   policy directory (default %s)\n"
            "Identity, one of:\n"
            "  --claims FILE        a claims JSON object (iss, sub, aud, ...) taken AS IF\n"
            "                       VERIFIED ('-' = stdin); output is marked UNVERIFIED\n"
            "  --token TOKEN        a token ('-' = stdin) verified first with --config FILE\n"
            "                       (the issuer configuration of 'ferry token verify')\n"
            "  -c, --config FILE    issuer configuration for --token\n"
            "  --now EPOCH          verify the token as if the clock said EPOCH\n"
            "Request:\n"
            "  --audience AUD       requested target audience (repeatable)\n"
            "  --scope \"S1 S2\"      requested scopes, space-separated (repeatable)\n"
            "  --step-up totp       a TOTP step-up was done for this request\n"
            "Output:\n"
            "  --json               machine-readable JSON instead of text\n"
            "  -h, --help           this text\n",
            DEFAULT_POLICY_DIR);
}

enum {
    OPT_CLAIMS = 256,
    OPT_TOKEN,
    OPT_NOW,
    OPT_AUDIENCE,
    OPT_SCOPE,
    OPT_STEP_UP,
    OPT_JSON,
};

/* printf for the text output of explain: the strings come from claims, tokens and policy
 * files, so every control byte (an ESC sequence, a CR or a newline that would forge another
 * output line) is shown as \xNN. Only a newline that ends the format itself is written. */
_printf_(1, 2) static void tprintf(const char *fmt, ...)
{
    _cleanup_free_ char *s = NULL;
    size_t n, fmt_len = strlen(fmt);
    va_list ap;
    int len;

    va_start(ap, fmt);
    len = vasprintf(&s, fmt, ap);
    va_end(ap);
    if (len < 0)
        return;
    n = (size_t)len;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];

        if (c == '\n' && i == n - 1 && fmt_len > 0 && fmt[fmt_len - 1] == '\n')
            putchar('\n');
        else if (c < 0x20 || c == 0x7f)
            printf("\\x%02x", c);
        else
            putchar(c);
    }
}

static void print_list(const char *label, json_t *arr)
{
    size_t i;
    json_t *v;

    tprintf("%s", label);
    if (json_array_size(arr) == 0)
        tprintf(" (none)");
    json_array_foreach(arr, i, v) {
        if (json_is_string(v))
            tprintf(" %s", json_string_value(v));
        else if (json_is_object(v) && json_object_get(v, "role_arn"))
            tprintf(" %s (session %lld s)", json_string_value(json_object_get(v, "role_arn")),
                   (long long)json_integer_value(json_object_get(v, "session_duration")));
        else if (json_is_object(v) && json_object_get(v, "tenant_id"))
            tprintf(" tenant %s client %s", json_string_value(json_object_get(v, "tenant_id")),
                   json_string_value(json_object_get(v, "client_id")));
        else if (json_is_object(v) && json_object_get(v, "service_account"))
            tprintf(" %s", json_string_value(json_object_get(v, "service_account")));
    }
    tprintf("\n");
}

static void print_grants(const char *indent, json_t *g, bool final)
{
    static const char *const keys[] = { "policies", "scopes", "audiences", "secrets", "aws",
                                        "azure", "gcp" };
    char label[64];

    for (size_t i = 0; i < ARRAY_SIZE(keys); i++) {
        json_t *v = json_object_get(g, keys[i]);
        if (!v && !final)
            continue;
        snprintf(label, sizeof(label), "%s%s:", indent, keys[i]);
        print_list(label, v);
    }
    if (final) {
        tprintf("%sttl: %lld s\n", indent, (long long)json_integer_value(json_object_get(g, "ttl")));
        tprintf("%sstep_up: %s\n", indent,
               json_is_true(json_object_get(g, "step_up")) ? "totp (done)" : "no");
    } else {
        tprintf("%smax_ttl: %lld s\n", indent,
               (long long)json_integer_value(json_object_get(g, "max_ttl")));
    }
}

static void print_human(json_t *ex, const ferry_policy_request *req, bool unverified,
                        const char *source)
{
    const char *pre = unverified ? "UNVERIFIED " : "";
    json_t *cons = json_object_get(ex, "considered");
    size_t i;
    json_t *e;

    if (unverified)
        tprintf("UNVERIFIED: the claims in %s were NOT verified; they are taken as if a token "
               "carrying them had been\n",
               source);
    tprintf("%sidentity: issuer %s\n", pre, req->issuer);
    tprintf("%sidentity: subject %s\n", pre, req->subject);
    tprintf("request: audiences");
    for (size_t k = 0; k < req->n_audiences; k++)
        tprintf(" %s", req->audiences[k]);
    tprintf("%s\n", req->n_audiences ? "" : " (none)");
    tprintf("request: scopes");
    for (size_t k = 0; k < req->n_scopes; k++)
        tprintf(" %s", req->scopes[k]);
    tprintf("%s\n", req->n_scopes ? "" : " (none)");
    tprintf("request: step-up %s\n", req->step_up_totp ? "totp done" : "none");
    tprintf("policies for this issuer: %lld\n",
           (long long)json_integer_value(json_object_get(ex, "issuer_policies")));
    if (json_object_get(ex, "known_issuers")) {
        tprintf("no policy names this issuer; issuers with policies:\n");
        json_array_foreach(json_object_get(ex, "known_issuers"), i, e)
            tprintf("  %s\n", json_string_value(e));
    }
    json_array_foreach(cons, i, e) {
        const char *id = json_string_value(json_object_get(e, "id"));
        const char *file = json_string_value(json_object_get(e, "file"));
        long long line = (long long)json_integer_value(json_object_get(e, "line"));

        if (json_is_true(json_object_get(e, "matched"))) {
            tprintf("  MATCHED  %s (%s:%lld)%s\n", id, file, line,
                   json_is_true(json_object_get(e, "contributed")) ? ", contributed"
                                                                   : ", contributed nothing "
                                                                     "requested");
            print_grants("           grants ", json_object_get(e, "grants"), false);
        } else {
            tprintf("  no       %s (%s:%lld): %s: %s\n", id, file, line,
                   json_string_value(json_object_get(e, "failed")),
                   json_string_value(json_object_get(e, "detail")));
        }
    }
    if (json_is_true(json_object_get(ex, "considered_truncated")))
        tprintf("  ... (more policies not shown)\n");
    if (json_object_get(ex, "grant")) {
        tprintf("%sdecision: granted\n", pre);
        print_grants("  ", json_object_get(ex, "grant"), true);
    } else {
        tprintf("%sdecision: refused: %s: %s\n", pre,
               json_string_value(json_object_get(ex, "decision")),
               json_string_value(json_object_get(ex, "reason")));
    }
}

/* Split s on spaces into new strings appended to list. */
static int add_scopes(json_t *list, const char *s)
{
    while (*s) {
        const char *e;
        while (*s == ' ')
            s++;
        if (!*s)
            break;
        e = strchr(s, ' ');
        if (!e)
            e = s + strlen(s);
        if (json_array_size(list) >= REQ_MAX)
            return -FERRY_ETOOBIG;
        if (json_array_append_new(list, json_stringn(s, (size_t)(e - s))) < 0)
            return -EINVAL; /* not UTF-8, or out of memory */
        s = e;
    }
    return 0;
}

static int cmd_explain(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "policies", required_argument, NULL, 'p' },
        { "claims", required_argument, NULL, OPT_CLAIMS },
        { "token", required_argument, NULL, OPT_TOKEN },
        { "config", required_argument, NULL, 'c' },
        { "now", required_argument, NULL, OPT_NOW },
        { "audience", required_argument, NULL, OPT_AUDIENCE },
        { "scope", required_argument, NULL, OPT_SCOPE },
        { "step-up", required_argument, NULL, OPT_STEP_UP },
        { "json", no_argument, NULL, OPT_JSON },
        { "help", no_argument, NULL, 'h' },
        {},
    };
    _cleanup_(problems_freep) ferry_policy_problems *pr = NULL;
    _cleanup_(set_unrefp) ferry_policy_set *set = NULL;
    _cleanup_(ferry_oidc_freep) ferry_oidc *oidc = NULL;
    _cleanup_(ferry_identity_freep) ferry_identity *id = NULL;
    _cleanup_json_ json_t *auds = json_array(), *scopes = json_array(), *claims = NULL,
                          *ex = NULL;
    _cleanup_free_ const char **aud_v = NULL, **scope_v = NULL;
    _cleanup_free_ char *input = NULL;
    const char *dir = DEFAULT_POLICY_DIR, *claims_path = NULL, *token = NULL, *config = NULL;
    const char *source = NULL;
    bool json_out = false, step_up = false;
    ferry_policy_request req = { 0 };
    long long now = 0;
    size_t len;
    int c, r;

    if (!auds || !scopes) {
        fprintf(stderr, "ferry policy explain: out of memory\n");
        return FERRY_EXIT_USAGE;
    }
    optind = 1;
    while ((c = getopt_long(argc, argv, "+p:c:h", longopts, NULL)) != -1) {
        switch (c) {
        case 'p':
            dir = optarg;
            break;
        case OPT_CLAIMS:
            claims_path = optarg;
            break;
        case OPT_TOKEN:
            token = optarg;
            break;
        case 'c':
            config = optarg;
            break;
        case OPT_NOW:
            if (ferry_parse_int64(optarg, &now) < 0 || now < 1) {
                fprintf(stderr, "ferry policy explain: --now: '%s' is not an integer >= 1\n",
                        optarg);
                return FERRY_EXIT_USAGE;
            }
            break;
        case OPT_AUDIENCE:
            if (json_array_size(auds) >= REQ_MAX || !optarg[0] ||
                json_array_append_new(auds, json_string(optarg)) < 0) {
                fprintf(stderr, "ferry policy explain: --audience: empty, not UTF-8, or more "
                                "than %d\n", REQ_MAX);
                return FERRY_EXIT_USAGE;
            }
            break;
        case OPT_SCOPE:
            if (add_scopes(scopes, optarg) < 0) {
                fprintf(stderr, "ferry policy explain: --scope: not UTF-8, or more than %d "
                                "scopes\n", REQ_MAX);
                return FERRY_EXIT_USAGE;
            }
            break;
        case OPT_STEP_UP:
            if (strcmp(optarg, STEP_UP_METHOD) != 0) { /* a keyword, not a secret */
                fprintf(stderr, "ferry policy explain: --step-up: the only step-up is 'totp'\n");
                return FERRY_EXIT_USAGE;
            }
            step_up = true;
            break;
        case OPT_JSON:
            json_out = true;
            break;
        case 'h':
            usage_explain(stdout);
            return FERRY_EXIT_OK;
        default:
            usage_explain(stderr);
            return FERRY_EXIT_USAGE;
        }
    }
    if (argc > optind) {
        fprintf(stderr, "ferry policy explain: unexpected argument '%s'\n", argv[optind]);
        return FERRY_EXIT_USAGE;
    }
    if (!!claims_path == !!token) {
        fprintf(stderr, "ferry policy explain: give exactly one of --claims FILE or --token\n");
        return FERRY_EXIT_USAGE;
    }
    if (token && !config) {
        fprintf(stderr, "ferry policy explain: --token needs --config FILE (issuer "
                        "configuration) to verify it\n");
        return FERRY_EXIT_USAGE;
    }
    if (claims_path && (config || now)) {
        fprintf(stderr, "ferry policy explain: --config and --now apply to --token only\n");
        return FERRY_EXIT_USAGE;
    }

    /* the policies */
    if (ferry_policy_problems_new(&pr) < 0) {
        fprintf(stderr, "ferry policy explain: out of memory\n");
        return FERRY_EXIT_USAGE;
    }
    r = ferry_policy_load_dir(dir, &set, pr);
    if (r < 0) {
        print_problems(stderr, pr);
        fprintf(stderr, "ferry policy explain: %s: the policies do not load (%s); run 'ferry "
                        "policy lint'\n", dir, ferry_strerror(r));
        return FERRY_EXIT_USAGE;
    }

    /* the identity */
    if (claims_path) {
        char err[FERRY_JSON_ERR_LEN];
        r = ferry_cli_read_path(claims_path, CLAIMS_MAX, false, &input, &len);
        if (r < 0) {
            fprintf(stderr, "ferry policy explain: %s: %s\n", claims_path,
                    r == -FERRY_ETOOBIG ? "larger than 64 KiB" : ferry_strerror(r));
            return FERRY_EXIT_USAGE;
        }
        r = ferry_json_parse(input, len, CLAIMS_MAX, 16, &claims, err, sizeof(err));
        if (r < 0 || !json_is_object(claims)) {
            fprintf(stderr, "ferry policy explain: %s: %s\n", claims_path,
                    r < 0 ? err : "not a JSON object");
            return FERRY_EXIT_USAGE;
        }
        req.issuer = json_string_value(json_object_get(claims, "iss"));
        req.subject = json_string_value(json_object_get(claims, "sub"));
        req.audience = json_object_get(claims, "aud");
        req.claims = claims;
        if (!req.issuer || !req.subject) {
            fprintf(stderr, "ferry policy explain: %s: the claims need string \"iss\" and "
                            "\"sub\" members\n", claims_path);
            return FERRY_EXIT_USAGE;
        }
        source = strcmp(claims_path, "-") == 0 ? "stdin" : claims_path;
    } else {
        ferry_verify_options vo = { .now = now };
        ferry_verify_result res = { 0 };

        r = ferry_oidc_new(NULL, &oidc);
        if (r < 0) {
            fprintf(stderr, "ferry policy explain: %s\n", ferry_strerror(r));
            return FERRY_EXIT_USAGE;
        }
        if (ferry_cli_load_trust("ferry policy explain", config, oidc) < 0)
            return FERRY_EXIT_USAGE;
        if (strcmp(token, "-") == 0) {
            r = ferry_cli_read_stream(stdin, TOKEN_INPUT_MAX, true, &input, &len);
            if (r < 0) {
                fprintf(stderr, "ferry policy explain: reading the token: %s\n",
                        r == -FERRY_ETOOBIG ? "longer than 64 KiB" : ferry_strerror(r));
                return FERRY_EXIT_USAGE;
            }
            while (len > 0 && (input[len - 1] == '\n' || input[len - 1] == '\r'))
                input[--len] = '\0';
            token = input;
        } else {
            len = strnlen(token, TOKEN_INPUT_MAX + 1);
        }
        r = ferry_oidc_verify(oidc, token, len, &vo, &id, &res);
        if (input)
            ferry_wipe(input, len);
        if (r < 0) {
            if (json_out) {
                _cleanup_json_ json_t *o = json_pack("{s:b, s:s, s:s}", "verified", 0, "reason",
                                                     ferry_reason_name(res.reason), "detail",
                                                     res.detail);
                _cleanup_free_ char *t = o ? json_dumps(o, JSON_INDENT(2)) : NULL;
                if (t)
                    puts(t);
            } else {
                printf("token refused: %s: %s\n", ferry_reason_name(res.reason), res.detail);
                printf("decision: refused: access_denied: the token did not verify\n");
            }
            return FERRY_EXIT_REFUSED;
        }
        req.issuer = id->issuer;
        req.subject = id->subject;
        req.audience = id->audience;
        req.claims = id->claims;
        source = "token";
    }

    /* the request */
    aud_v = calloc(json_array_size(auds) + 1, sizeof(*aud_v));
    scope_v = calloc(json_array_size(scopes) + 1, sizeof(*scope_v));
    if (!aud_v || !scope_v) {
        fprintf(stderr, "ferry policy explain: out of memory\n");
        return FERRY_EXIT_USAGE;
    }
    for (size_t i = 0; i < json_array_size(auds); i++)
        aud_v[i] = json_string_value(json_array_get(auds, i));
    for (size_t i = 0; i < json_array_size(scopes); i++)
        scope_v[i] = json_string_value(json_array_get(scopes, i));
    req.audiences = aud_v;
    req.n_audiences = json_array_size(auds);
    req.scopes = scope_v;
    req.n_scopes = json_array_size(scopes);
    req.step_up_totp = step_up;

    r = ferry_policy_explain(set, &req, &ex);
    if (r < 0) {
        fprintf(stderr, "ferry policy explain: %s\n", ferry_strerror(r));
        return FERRY_EXIT_USAGE;
    }
    if (json_out) {
        _cleanup_free_ char *t = NULL;
        if (json_object_set_new(ex, "verified", json_boolean(!claims_path)) < 0 ||
            json_object_set_new(ex, "identity",
                                json_pack("{s:s, s:s}", "issuer", req.issuer, "subject",
                                          req.subject)) < 0 ||
            !(t = json_dumps(ex, JSON_INDENT(2) | JSON_PRESERVE_ORDER))) {
            fprintf(stderr, "ferry policy explain: out of memory\n");
            return FERRY_EXIT_USAGE;
        }
        puts(t);
    } else {
        print_human(ex, &req, claims_path != NULL, source);
    }
    if (fflush(stdout) != 0)
        return FERRY_EXIT_USAGE;
    return json_object_get(ex, "grant") ? FERRY_EXIT_OK : FERRY_EXIT_REFUSED;
}

int ferry_cmd_policy(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        FILE *f = argc < 2 ? stderr : stdout;
        fprintf(f, "usage: ferry policy lint [DIR | FILE]...\n"
                   "       ferry policy explain [OPTIONS] (--claims FILE | --token TOKEN "
                   "--config FILE)\n");
        return argc < 2 ? FERRY_EXIT_USAGE : FERRY_EXIT_OK;
    }
    if (strcmp(argv[1], "lint") == 0)
        return cmd_lint(argc - 1, argv + 1);
    if (strcmp(argv[1], "explain") == 0)
        return cmd_explain(argc - 1, argv + 1);
    fprintf(stderr, "ferry policy: unknown subcommand '%s'\n", argv[1]);
    return FERRY_EXIT_USAGE;
}
