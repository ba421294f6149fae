/* ferry/token.c - `ferry token verify` and `ferry token inspect`.
 *
 * verify: builds a trust store (ferry_oidc) from --config FILE or from ad-hoc --issuer/--jwks
 * options, verifies one token (argument or stdin) or, with --batch, one token per stdin line,
 * and prints the verified identity or the precise reason for refusal as JSON.
 * inspect: decodes a token WITHOUT verifying it; every output line says so.
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "basic/b64.h"
#include "basic/buf.h"
#include "basic/macro.h"
#include "basic/mem.h"
#include "ferry/error.h"
#include "ferry/ferry.h"
#include "ferry/oidc.h"

/* Largest token line read; anything longer is refused as too_large without being kept. */
#define TOKEN_INPUT_MAX (64 * 1024)
/* At most this many ad-hoc issuers on one command line. */
#define ADHOC_MAX 64

/* jansson's own cleanup helper (json_auto_t) is json_decrefp. */
#define _cleanup_json_ _cleanup_(json_decrefp)

/* Read one line (without its "\n" or "\r\n") from f into b. Sets *ret_overlong when the line
 * exceeded the buffer's max (the rest of the line is consumed and dropped). Bytes are
 * gathered in a local chunk and appended a chunk at a time: --batch reads many lines.
 * Returns 1 when a line was read, 0 at EOF with nothing read, -errno on error. */
static int read_line(FILE *f, ferry_buf *b, bool *ret_overlong)
{
    char chunk[1024];
    size_t n = 0;
    bool any = false, over = false;
    int c;

    b->len = 0;
    if (b->data)
        b->data[0] = '\0';
    while ((c = getc_unlocked(f)) != EOF) {
        any = true;
        if (c == '\n')
            break;
        chunk[n++] = (char)c;
        if (n == sizeof(chunk)) {
            if (!over && ferry_buf_append(b, chunk, n) < 0)
                over = true;
            n = 0;
        }
    }
    if (n > 0 && !over && ferry_buf_append(b, chunk, n) < 0)
        over = true;
    ferry_wipe(chunk, sizeof(chunk));
    if (ferror(f))
        return -EIO;
    if (!any)
        return 0;
    if (!over && b->len > 0 && b->data[b->len - 1] == '\r')
        b->data[--b->len] = '\0';
    *ret_overlong = over;
    return 1;
}

static void usage_verify(FILE *f)
{
    fprintf(f,
            "usage: ferry token verify [OPTIONS] [TOKEN | -]\n"
            "\n"
            "Verify a token (from the argument, or stdin when absent or '-') against the\n"
            "trusted issuers and print the verified identity as JSON (exit 0), or the reason\n"
            "it was refused (exit 1). Exit 2 on usage or configuration errors.\n"
            "\n"
            "Trust, either from a file:\n"
            "  -c, --config FILE        issuer configuration ({\"issuers\": [...]})\n"
            "or ad hoc (repeat --issuer for several issuers; options after it apply to it):\n"
            "  --issuer URL             trusted issuer (exact 'iss' value)\n"
            "  --jwks FILE|URL          its key set: a JWKS file, or an https:// jwks_uri;\n"
            "                           without --jwks the key set comes from discovery\n"
            "  --audience AUD           accepted audience (repeatable; required)\n"
            "  --profile NAME           id_token (default), access_token, kubernetes,\n"
            "                           github_actions or ferry\n"
            "  --alg ALG                allowed algorithm (repeatable; default RS256)\n"
            "  --leeway SECONDS         clock leeway (default 60)\n"
            "  --max-lifetime SECONDS   longest accepted token lifetime (default 86400)\n"
            "  --ca-file FILE           extra trust anchors for fetching keys\n"
            "  --allow-http-loopback    allow http:// key URLs on 127.0.0.1 (tests only)\n"
            "Decision:\n"
            "  --now EPOCH              decide as if the clock said EPOCH (reproduce a decision)\n"
            "  --batch                  read one token per stdin line, print one JSON result\n"
            "                           per line; exit 1 when any token was refused\n"
            "  -h, --help               this text\n");
}

enum {
    OPT_ISSUER = 256,
    OPT_JWKS,
    OPT_AUDIENCE,
    OPT_PROFILE,
    OPT_ALG,
    OPT_LEEWAY,
    OPT_MAX_LIFETIME,
    OPT_NOW,
    OPT_BATCH,
    OPT_CA_FILE,
    OPT_ALLOW_HTTP_LOOPBACK,
};

/* Parse a non-negative integer option; prints the error. */
static int parse_seconds(const char *opt, const char *val, long long min, long long *ret)
{
    long long v;

    if (ferry_parse_int64(val, &v) < 0 || v < min) {
        fprintf(stderr, "ferry token verify: %s: '%s' is not an integer >= %lld\n", opt, val,
                min);
        return -EINVAL;
    }
    *ret = v;
    return 0;
}

/* Build the ad-hoc issuer configuration objects from the collected options. */
static int build_adhoc(json_t *issuers, json_t *audiences, json_t *algs, const char *profile,
                       long long leeway, long long max_lifetime, const char *ca_file,
                       bool allow_http)
{
    size_t i;
    json_t *iss;

    json_array_foreach(issuers, i, iss) {
        if (json_array_size(audiences) == 0) {
            fprintf(stderr, "ferry token verify: --audience is required with --issuer\n");
            return -EINVAL;
        }
        if (json_object_set(iss, "audiences", audiences) < 0 ||
            (json_array_size(algs) > 0 && json_object_set(iss, "algorithms", algs) < 0) ||
            (profile && json_object_set_new(iss, "profile", json_string(profile)) < 0) ||
            (leeway >= 0 && json_object_set_new(iss, "leeway", json_integer(leeway)) < 0) ||
            (max_lifetime >= 0 &&
             json_object_set_new(iss, "max_lifetime", json_integer(max_lifetime)) < 0) ||
            (ca_file && json_object_set_new(iss, "ca_file", json_string(ca_file)) < 0) ||
            (allow_http && json_object_set_new(iss, "allow_http_loopback", json_true()) < 0))
            return -ENOMEM;
    }
    return 0;
}

/* Verify one token and print the result line. Returns FERRY_EXIT_OK or FERRY_EXIT_REFUSED,
 * or -errno on an output failure. */
static int verify_one(ferry_oidc *oidc, const char *tok, size_t len, bool overlong,
                      const ferry_verify_options *vo, bool batch, unsigned long lineno)
{
    ferry_identity *id = NULL;
    ferry_verify_result res = { 0 };
    _cleanup_json_ json_t *out = NULL;
    _cleanup_free_ char *text = NULL;
    int r;

    if (overlong) {
        res.reason = FERRY_REASON_TOO_LARGE;
        snprintf(res.detail, sizeof(res.detail), "token longer than %d bytes",
                 FERRY_JWS_MAX_LEN);
        r = -FERRY_EREFUSED;
    } else {
        r = ferry_oidc_verify(oidc, tok, len, vo, &id, &res);
    }
    if (r == 0) {
        r = ferry_identity_to_json(id, &out);
        ferry_identity_free(id);
        if (r < 0)
            return r;
    } else {
        out = json_pack("{s:b, s:s, s:s}", "verified", 0, "reason",
                        ferry_reason_name(res.reason), "detail", res.detail);
        if (!out)
            return -ENOMEM;
        if (!batch)
            fprintf(stderr, "ferry: token refused: %s: %s\n", ferry_reason_name(res.reason),
                    res.detail);
    }
    if (batch && json_object_set_new(out, "line", json_integer((json_int_t)lineno)) < 0)
        return -ENOMEM;
    text = json_dumps(out, batch ? JSON_COMPACT | JSON_SORT_KEYS
                                 : JSON_INDENT(2) | JSON_SORT_KEYS);
    if (!text)
        return -ENOMEM;
    if (puts(text) == EOF)
        return -EIO;
    return r == 0 ? FERRY_EXIT_OK : FERRY_EXIT_REFUSED;
}

static int cmd_verify(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "config", required_argument, NULL, 'c' },
        { "issuer", required_argument, NULL, OPT_ISSUER },
        { "jwks", required_argument, NULL, OPT_JWKS },
        { "audience", required_argument, NULL, OPT_AUDIENCE },
        { "profile", required_argument, NULL, OPT_PROFILE },
        { "alg", required_argument, NULL, OPT_ALG },
        { "leeway", required_argument, NULL, OPT_LEEWAY },
        { "max-lifetime", required_argument, NULL, OPT_MAX_LIFETIME },
        { "now", required_argument, NULL, OPT_NOW },
        { "batch", no_argument, NULL, OPT_BATCH },
        { "ca-file", required_argument, NULL, OPT_CA_FILE },
        { "allow-http-loopback", no_argument, NULL, OPT_ALLOW_HTTP_LOOPBACK },
        { "help", no_argument, NULL, 'h' },
        {},
    };
    _cleanup_json_ json_t *issuers = json_array(), *audiences = json_array(),
                          *algs = json_array();
    _cleanup_(ferry_oidc_freep) ferry_oidc *oidc = NULL;
    const char *config = NULL, *profile = NULL, *ca_file = NULL;
    long long leeway = -1, max_lifetime = -1, now = 0;
    bool batch = false, allow_http = false;
    ferry_verify_options vo = { 0 };
    char err[512] = "";
    int c, r;

    if (!issuers || !audiences || !algs) {
        fprintf(stderr, "ferry token verify: out of memory\n");
        return FERRY_EXIT_USAGE;
    }
    optind = 1;
    while ((c = getopt_long(argc, argv, "+c:h", longopts, NULL)) != -1) {
        json_t *last = json_array_size(issuers)
                           ? json_array_get(issuers, json_array_size(issuers) - 1)
                           : NULL;
        switch (c) {
        case 'c':
            config = optarg;
            break;
        case OPT_ISSUER:
            if (json_array_size(issuers) >= ADHOC_MAX) {
                fprintf(stderr, "ferry token verify: at most %d --issuer options\n",
                        ADHOC_MAX);
                return FERRY_EXIT_USAGE;
            }
            if (json_array_append_new(issuers, json_pack("{s:s}", "issuer", optarg)) < 0)
                return FERRY_EXIT_USAGE;
            break;
        case OPT_JWKS: {
            bool url = strncmp(optarg, "https://", 8) == 0 || strncmp(optarg, "http://", 7) == 0;
            if (!last) {
                fprintf(stderr, "ferry token verify: --jwks must follow an --issuer\n");
                return FERRY_EXIT_USAGE;
            }
            if (json_object_get(last, "jwks_uri") || json_object_get(last, "jwks_file")) {
                fprintf(stderr, "ferry token verify: one --jwks per --issuer\n");
                return FERRY_EXIT_USAGE;
            }
            if (json_object_set_new(last, url ? "jwks_uri" : "jwks_file", json_string(optarg)) <
                0)
                return FERRY_EXIT_USAGE;
            break;
        }
        case OPT_AUDIENCE:
            if (json_array_append_new(audiences, json_string(optarg)) < 0)
                return FERRY_EXIT_USAGE;
            break;
        case OPT_PROFILE:
            profile = optarg;
            break;
        case OPT_ALG:
            if (json_array_append_new(algs, json_string(optarg)) < 0)
                return FERRY_EXIT_USAGE;
            break;
        case OPT_LEEWAY:
            if (parse_seconds("--leeway", optarg, 0, &leeway) < 0)
                return FERRY_EXIT_USAGE;
            break;
        case OPT_MAX_LIFETIME:
            if (parse_seconds("--max-lifetime", optarg, 1, &max_lifetime) < 0)
                return FERRY_EXIT_USAGE;
            break;
        case OPT_NOW:
            if (parse_seconds("--now", optarg, 1, &now) < 0)
                return FERRY_EXIT_USAGE;
            break;
        case OPT_BATCH:
            batch = true;
            break;
        case OPT_CA_FILE:
            ca_file = optarg;
            break;
        case OPT_ALLOW_HTTP_LOOPBACK:
            allow_http = true;
            break;
        case 'h':
            usage_verify(stdout);
            return FERRY_EXIT_OK;
        default:
            usage_verify(stderr);
            return FERRY_EXIT_USAGE;
        }
    }
    if (!config && json_array_size(issuers) == 0) {
        fprintf(stderr, "ferry token verify: give --config FILE or at least one --issuer\n");
        return FERRY_EXIT_USAGE;
    }
    if (config && json_array_size(issuers) > 0) {
        fprintf(stderr, "ferry token verify: --config and --issuer cannot be combined\n");
        return FERRY_EXIT_USAGE;
    }
    if (config && (json_array_size(audiences) || json_array_size(algs) || profile ||
                   leeway >= 0 || max_lifetime >= 0 || ca_file || allow_http)) {
        fprintf(stderr, "ferry token verify: with --config, trust options come from the file\n");
        return FERRY_EXIT_USAGE;
    }
    if (argc - optind > 1 || (batch && argc - optind == 1 && strcmp(argv[optind], "-") != 0)) {
        fprintf(stderr, "ferry token verify: %s\n",
                batch ? "--batch reads tokens from stdin only" : "give at most one token");
        return FERRY_EXIT_USAGE;
    }

    r = ferry_oidc_new(NULL, &oidc);
    if (r < 0) {
        fprintf(stderr, "ferry token verify: %s\n", ferry_strerror(r));
        return FERRY_EXIT_USAGE;
    }
    if (config) {
        if (ferry_cli_load_trust("ferry token verify", config, oidc) < 0)
            return FERRY_EXIT_USAGE;
    } else {
        size_t i;
        json_t *iss;

        r = build_adhoc(issuers, audiences, algs, profile, leeway, max_lifetime, ca_file,
                        allow_http);
        if (r < 0)
            return FERRY_EXIT_USAGE;
        json_array_foreach(issuers, i, iss) {
            r = ferry_oidc_add_issuer(oidc, iss, err, sizeof(err));
            if (r < 0)
                break;
        }
        if (r < 0) {
            fprintf(stderr, "ferry token verify: configuration: %s\n",
                    err[0] ? err : ferry_strerror(r));
            return FERRY_EXIT_USAGE;
        }
    }
    vo.now = now;

    if (!batch && argc - optind == 1 && strcmp(argv[optind], "-") != 0) {
        const char *tok = argv[optind];
        size_t len = strnlen(tok, TOKEN_INPUT_MAX + 1);
        r = verify_one(oidc, tok, len, len > TOKEN_INPUT_MAX, &vo, false, 0);
        return r < 0 ? FERRY_EXIT_USAGE : r;
    }

    {
        ferry_buf line;
        unsigned long lineno = 0;
        bool any_refused = false, overlong = false, got = false;
        int result = FERRY_EXIT_OK;

        ferry_buf_init(&line, TOKEN_INPUT_MAX, true);
        for (;;) {
            r = read_line(stdin, &line, &overlong);
            if (r < 0) {
                fprintf(stderr, "ferry token verify: reading stdin: %s\n", ferry_strerror(r));
                result = FERRY_EXIT_USAGE;
                break;
            }
            if (r == 0)
                break;
            lineno++;
            got = true;
            /* Single mode takes exactly one token: refuse more input before deciding (from a
             * pipe or file; on a terminal the line typed is the token). */
            if (!batch && !isatty(STDIN_FILENO) && getc(stdin) != EOF) {
                fprintf(stderr, "ferry token verify: more than one line on stdin; "
                                "use --batch\n");
                result = FERRY_EXIT_USAGE;
                break;
            }
            r = verify_one(oidc, line.data ? line.data : "", line.len, overlong, &vo, batch,
                           lineno);
            if (r < 0) {
                fprintf(stderr, "ferry token verify: %s\n", ferry_strerror(r));
                result = FERRY_EXIT_USAGE;
                break;
            }
            if (r == FERRY_EXIT_REFUSED)
                any_refused = true;
            if (!batch)
                break;
        }
        ferry_buf_release(&line);
        if (result != FERRY_EXIT_OK)
            return result;
        if (!got) {
            fprintf(stderr, "ferry token verify: no token on stdin\n");
            return FERRY_EXIT_USAGE;
        }
        if (fflush(stdout) != 0)
            return FERRY_EXIT_USAGE;
        return any_refused ? FERRY_EXIT_REFUSED : FERRY_EXIT_OK;
    }
}

/* ---- inspect ------------------------------------------------------------------------------ */

static void print_unverified_json(const char *label, const unsigned char *p, size_t n)
{
    _cleanup_json_ json_t *j = NULL;
    _cleanup_free_ char *text = NULL;
    json_error_t jerr;

    j = json_loadb((const char *)p, n, JSON_REJECT_DUPLICATES, &jerr);
    if (!j) {
        /* jansson quotes the offending input raw ("near '\x1b'"): keep it off the terminal. */
        for (char *c = jerr.text; *c; c++)
            if ((unsigned char)*c < 0x20 || (unsigned char)*c >= 0x7f)
                *c = '?';
        printf("UNVERIFIED %s: not JSON (%zu bytes; %s)\n", label, n, jerr.text);
        return;
    }
    text = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_ENCODE_ANY);
    if (!text) {
        printf("UNVERIFIED %s: (out of memory)\n", label);
        return;
    }
    printf("UNVERIFIED %s:\n", label);
    for (char *s = text, *nl; s && *s; s = nl ? nl + 1 : NULL) {
        nl = strchr(s, '\n');
        printf("UNVERIFIED   %.*s\n", nl ? (int)(nl - s) : (int)strlen(s), s);
    }
    if (json_is_object(j)) {
        static const char *const times[] = { "exp", "nbf", "iat" };
        for (size_t i = 0; i < ARRAY_SIZE(times); i++) {
            json_t *v = json_object_get(j, times[i]);
            char when[64];
            struct tm tm;
            time_t t;

            if (!json_is_integer(v))
                continue;
            t = (time_t)json_integer_value(v);
            if (!gmtime_r(&t, &tm) || !strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm))
                continue;
            printf("UNVERIFIED %s %s = %s\n", label, times[i], when);
        }
    }
}

static int cmd_inspect(int argc, char **argv)
{
    _cleanup_free_ char *input = NULL;
    const char *tok;
    const char *seg[3];
    size_t seglen[3], len, nseg = 0;

    if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        printf("usage: ferry token inspect [TOKEN | -]\n\n"
               "Decode a compact JWS WITHOUT verifying it. Nothing printed is trustworthy;\n"
               "every line says UNVERIFIED. Use 'ferry token verify' to decide.\n");
        return FERRY_EXIT_OK;
    }
    if (argc > 2) {
        fprintf(stderr, "ferry token inspect: give at most one token\n");
        return FERRY_EXIT_USAGE;
    }
    if (argc == 2 && strcmp(argv[1], "-") != 0) {
        tok = argv[1];
        len = strnlen(tok, TOKEN_INPUT_MAX + 1);
    } else {
        ferry_buf b;
        bool over = false;
        int r;

        ferry_buf_init(&b, TOKEN_INPUT_MAX, true);
        r = read_line(stdin, &b, &over);
        if (r <= 0) {
            ferry_buf_release(&b);
            fprintf(stderr, "ferry token inspect: no token on stdin\n");
            return FERRY_EXIT_USAGE;
        }
        len = b.len + (over ? 1 : 0);
        input = ferry_buf_steal(&b, NULL);
        tok = input ? input : "";
    }
    if (len > TOKEN_INPUT_MAX) {
        fprintf(stderr, "ferry token inspect: token longer than %d bytes\n", TOKEN_INPUT_MAX);
        return FERRY_EXIT_REFUSED;
    }
    for (const char *s = tok, *dot;; s = dot + 1) {
        dot = memchr(s, '.', len - (size_t)(s - tok));
        if (nseg == 3) {
            nseg++;
            break;
        }
        seg[nseg] = s;
        seglen[nseg] = dot ? (size_t)(dot - s) : len - (size_t)(s - tok);
        nseg++;
        if (!dot)
            break;
    }
    if (nseg != 3) {
        printf("UNVERIFIED token: not a compact JWS (%s three dot-separated segments)\n",
               nseg > 3 ? "more than" : "fewer than");
        return FERRY_EXIT_REFUSED;
    }
    static const char *const names[] = { "header", "payload", "signature" };
    for (size_t i = 0; i < 3; i++) {
        _cleanup_free_ unsigned char *dec = NULL;
        size_t dlen;

        if (ferry_b64url_decode_alloc(seg[i], seglen[i], &dec, &dlen) < 0) {
            printf("UNVERIFIED %s: not strict base64url (%zu characters)\n", names[i],
                   seglen[i]);
            continue;
        }
        if (i < 2)
            print_unverified_json(names[i], dec, dlen);
        else
            printf("UNVERIFIED signature: %zu bytes (not checked)\n", dlen);
    }
    printf("UNVERIFIED: this token was decoded, not verified; run 'ferry token verify'\n");
    return FERRY_EXIT_OK;
}

int ferry_cmd_token(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        FILE *f = argc < 2 ? stderr : stdout;
        fprintf(f, "usage: ferry token verify [OPTIONS] [TOKEN | -]\n"
                   "       ferry token inspect [TOKEN | -]\n");
        return argc < 2 ? FERRY_EXIT_USAGE : FERRY_EXIT_OK;
    }
    if (strcmp(argv[1], "verify") == 0)
        return cmd_verify(argc - 1, argv + 1);
    if (strcmp(argv[1], "inspect") == 0)
        return cmd_inspect(argc - 1, argv + 1);
    fprintf(stderr, "ferry token: unknown subcommand '%s'\n", argv[1]);
    return FERRY_EXIT_USAGE;
}
