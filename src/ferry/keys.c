/* ferry/keys.c - `ferry keys init | rotate | jwks | discovery | list`: ferry's signing keys.
 *
 * Every subcommand opens the key store in the state directory through ferry_mint_open (which
 * validates it as hostile input; init and rotate also wipe private keys whose overlap has
 * passed, while jwks, list and discovery open it read-only and change nothing) and prints
 * JSON on stdout. Nothing here mints tokens: that is ferryd's job.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "basic/fileio.h"
#include "basic/macro.h"
#include "basic/mem.h"
#include "ferry/error.h"
#include "ferry/ferry.h"
#include "ferry/mint.h"

#ifndef FERRY_STATEDIR
#define FERRY_STATEDIR "/var/lib/ferry"
#endif

#define PEM_INPUT_MAX (64 * 1024)

static void mint_freep(ferry_mint **m)
{
    ferry_mint_free(*m);
}

struct keys_args {
    const char *state_dir;
    const char *issuer;
    const char *import;
    ferry_alg alg;
    unsigned rsa_bits;
    long long max_ttl;
    bool all;
};

static void usage(FILE *f)
{
    fprintf(f,
            "usage: ferry keys init      [--alg ALG] [--rsa-bits N] [--import PEM] [COMMON]\n"
            "       ferry keys rotate    [--alg ALG] [--rsa-bits N] [--import PEM] [COMMON]\n"
            "       ferry keys jwks      [--all] [COMMON]\n"
            "       ferry keys discovery --issuer URL [COMMON]\n"
            "       ferry keys list      [COMMON]\n"
            "\n"
            "Manage the keys ferry signs its tokens with (docs/internals/mint.md).\n"
            "  init       create the first signing key (generated, or --import PEM)\n"
            "  rotate     make a new key active; the old one stays published until its\n"
            "             tokens have expired (retired_at + max TTL), then its private key\n"
            "             is wiped\n"
            "  jwks       print the published JWK Set (--all: every key ever used, for\n"
            "             verifying old audit-log checkpoints)\n"
            "  discovery  print the OpenID Connect discovery document for --issuer\n"
            "  list       print every key with its state and times\n"
            "\n"
            "Options:\n"
            "  --state-dir DIR   state directory (default " FERRY_STATEDIR ")\n"
            "  --alg ALG         ES256 (default), EdDSA or RS256\n"
            "  --rsa-bits N      size of a generated RS256 key (default 3072, at least 2048)\n"
            "  --import PEM      use this PEM private key instead of generating one\n"
            "  --max-ttl SECONDS longest token lifetime, as configured for ferryd\n"
            "                    (default %d); sets how long a retired key stays published\n"
            "  --issuer URL      ferry's issuer URL (discovery)\n"
            "  --all             jwks: every key ever used, not only the published ones\n"
            "\n"
            "jwks, list and discovery only read the store: they create, prune and wipe\n"
            "nothing (a retired key past its overlap is left out, and wiped by the next\n"
            "init, rotate or ferryd reload).\n"
            "\n"
            "Exit status: 0 success, 1 refused (e.g. init on an initialised store),\n"
            "2 usage or state-directory errors (also a missing or empty key store).\n",
            FERRY_MINT_DEFAULT_TTL);
}

/* Parse the options of one subcommand (argv[0] is its name). Returns -1 on a usage error,
 * 1 when --help was printed, 0 otherwise. */
static int parse_args(int argc, char **argv, struct keys_args *a)
{
    enum { OPT_STATE = 256, OPT_ALG, OPT_RSA, OPT_IMPORT, OPT_MAXTTL, OPT_ISSUER, OPT_ALL };
    static const struct option opts[] = {
        {"state-dir", required_argument, NULL, OPT_STATE},
        {"alg", required_argument, NULL, OPT_ALG},
        {"rsa-bits", required_argument, NULL, OPT_RSA},
        {"import", required_argument, NULL, OPT_IMPORT},
        {"max-ttl", required_argument, NULL, OPT_MAXTTL},
        {"issuer", required_argument, NULL, OPT_ISSUER},
        {"all", no_argument, NULL, OPT_ALL},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    long long v;
    int c;

    *a = (struct keys_args){.state_dir = FERRY_STATEDIR, .alg = FERRY_ALG_UNKNOWN};
    optind = 1;
    opterr = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case OPT_STATE:
            a->state_dir = optarg;
            break;
        case OPT_ALG:
            a->alg = ferry_alg_from_name(optarg);
            if (a->alg != FERRY_ALG_ES256 && a->alg != FERRY_ALG_EDDSA &&
                a->alg != FERRY_ALG_RS256) {
                fprintf(stderr, "ferry keys: --alg must be ES256, EdDSA or RS256\n");
                return -1;
            }
            break;
        case OPT_RSA:
            if (ferry_parse_int64(optarg, &v) < 0 || v < 2048 || v > 8192) {
                fprintf(stderr, "ferry keys: --rsa-bits must be 2048..8192\n");
                return -1;
            }
            a->rsa_bits = (unsigned)v;
            break;
        case OPT_IMPORT:
            a->import = optarg;
            break;
        case OPT_MAXTTL:
            if (ferry_parse_int64(optarg, &v) < 0 || v < 1 || v > FERRY_MINT_MAX_TTL_LIMIT) {
                fprintf(stderr, "ferry keys: --max-ttl must be 1..%d seconds\n",
                        FERRY_MINT_MAX_TTL_LIMIT);
                return -1;
            }
            a->max_ttl = v;
            break;
        case OPT_ISSUER:
            a->issuer = optarg;
            break;
        case OPT_ALL:
            a->all = true;
            break;
        case 'h':
            usage(stdout);
            return 1;
        default:
            return -1;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "ferry keys %s: unexpected argument '%s'\n", argv[0], argv[optind]);
        return -1;
    }
    return 0;
}

/* init and rotate open the store for writing (creating it when missing; init adds a key only
 * to a store that holds none, checked under the store's lock); jwks, list and discovery read
 * it only: they create, prune and wipe nothing. */
static int open_store(const struct keys_args *a, const char *cmd, ferry_mint **ret)
{
    bool read_only = strcmp(cmd, "init") != 0 && strcmp(cmd, "rotate") != 0;
    ferry_mint_options o = {
        .issuer = a->issuer,
        .state_dir = a->state_dir,
        .alg = a->alg,
        .rsa_bits = a->rsa_bits,
        .max_ttl = a->max_ttl,
        .flags = FERRY_MINT_NO_GENERATE | (read_only ? FERRY_MINT_READ_ONLY : 0) |
                 (strcmp(cmd, "init") == 0 ? FERRY_MINT_INIT_ONLY : 0),
    };
    char err[512] = "";
    int r;

    r = ferry_mint_open(&o, ret, err, sizeof(err));
    if (r < 0) {
        fprintf(stderr, "ferry keys: %s%s\n", err[0] ? err : ferry_strerror(r),
                r == -ENOENT ? "; run 'ferry keys init'" : "");
        return FERRY_EXIT_USAGE;
    }
    return FERRY_EXIT_OK;
}

static int print_json(json_t *j)
{
    _cleanup_free_ char *text = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER);

    if (!text) {
        fprintf(stderr, "ferry keys: out of memory\n");
        return FERRY_EXIT_USAGE;
    }
    if (puts(text) == EOF || fflush(stdout) != 0) {
        fprintf(stderr, "ferry keys: cannot write to stdout\n");
        return FERRY_EXIT_USAGE;
    }
    return FERRY_EXIT_OK;
}

/* Print {"kid","alg","state",...} of every key, oldest first. */
static int print_keys(ferry_mint *m, bool only_active)
{
    _cleanup_(json_decrefp) json_t *arr = json_array();
    ferry_mint_key_info *info = NULL;
    size_t n = 0;
    int r;

    if (!arr || ferry_mint_list_keys(m, &info, &n) < 0) {
        fprintf(stderr, "ferry keys: out of memory\n");
        return FERRY_EXIT_USAGE;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *o;
        if (only_active && strcmp(info[i].state, "active") != 0)
            continue;
        o = json_pack("{s:s, s:s, s:s, s:I}", "kid", info[i].kid, "alg",
                      ferry_alg_name(info[i].alg), "state", info[i].state, "created",
                      (json_int_t)info[i].created);
        if (o && info[i].retired_at)
            (void)json_object_set_new(o, "retired_at", json_integer(info[i].retired_at));
        if (o && info[i].publish_until)
            (void)json_object_set_new(o, "publish_until", json_integer(info[i].publish_until));
        if (!o || json_array_append_new(arr, o) != 0) {
            free(info);
            fprintf(stderr, "ferry keys: out of memory\n");
            return FERRY_EXIT_USAGE;
        }
    }
    free(info);
    if (only_active && json_array_size(arr) == 1)
        return print_json(json_array_get(arr, 0));
    r = print_json(arr);
    return r;
}

static int add_key(ferry_mint *m, const struct keys_args *a, const char *cmd)
{
    char err[512] = "";
    int r;

    if (a->import) {
        char *pem = NULL;
        size_t len = 0;

        r = ferry_read_regular_file(a->import, PEM_INPUT_MAX, &pem, &len);
        if (r < 0) {
            fprintf(stderr, "ferry keys %s: %s: %s\n", cmd, a->import, ferry_strerror(r));
            return FERRY_EXIT_USAGE;
        }
        r = ferry_mint_import_pem(m, pem, len, a->alg, err, sizeof(err));
        ferry_wipe(pem, len);
        free(pem);
    } else {
        r = ferry_mint_rotate(m, a->alg, err, sizeof(err));
    }
    if (r < 0) {
        fprintf(stderr, "ferry keys %s: %s\n", cmd, err[0] ? err : ferry_strerror(r));
        return r == -FERRY_EDUPLICATE || r == -FERRY_EFULL || r == -EEXIST
                   ? FERRY_EXIT_REFUSED
                   : FERRY_EXIT_USAGE;
    }
    return FERRY_EXIT_OK;
}

int ferry_cmd_keys(int argc, char **argv)
{
    _cleanup_(mint_freep) ferry_mint *m = NULL;
    _cleanup_(json_decrefp) json_t *doc = NULL;
    struct keys_args a;
    const char *cmd;
    size_t n = 0;
    ferry_mint_key_info *info = NULL;
    int r;

    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? FERRY_EXIT_USAGE : FERRY_EXIT_OK;
    }
    cmd = argv[1];
    if (strcmp(cmd, "init") != 0 && strcmp(cmd, "rotate") != 0 && strcmp(cmd, "jwks") != 0 &&
        strcmp(cmd, "discovery") != 0 && strcmp(cmd, "list") != 0) {
        fprintf(stderr, "ferry keys: unknown subcommand '%s'\n", cmd);
        return FERRY_EXIT_USAGE;
    }
    r = parse_args(argc - 1, argv + 1, &a);
    if (r != 0)
        return r > 0 ? FERRY_EXIT_OK : FERRY_EXIT_USAGE;
    if ((a.import || a.alg != FERRY_ALG_UNKNOWN || a.rsa_bits) && strcmp(cmd, "init") != 0 &&
        strcmp(cmd, "rotate") != 0) {
        fprintf(stderr, "ferry keys %s: --alg, --rsa-bits and --import belong to init and "
                        "rotate\n", cmd);
        return FERRY_EXIT_USAGE;
    }
    if (a.all && strcmp(cmd, "jwks") != 0) {
        fprintf(stderr, "ferry keys %s: --all belongs to jwks\n", cmd);
        return FERRY_EXIT_USAGE;
    }
    if (strcmp(cmd, "discovery") == 0 && !a.issuer) {
        fprintf(stderr, "ferry keys discovery: --issuer URL is required\n");
        return FERRY_EXIT_USAGE;
    }
    r = open_store(&a, cmd, &m);
    if (r != FERRY_EXIT_OK)
        return r;
    if (ferry_mint_list_keys(m, &info, &n) < 0) {
        fprintf(stderr, "ferry keys: out of memory\n");
        return FERRY_EXIT_USAGE;
    }
    free(info);

    if (strcmp(cmd, "init") == 0 || strcmp(cmd, "rotate") == 0) {
        if (strcmp(cmd, "init") == 0 && n > 0) {
            fprintf(stderr, "ferry keys init: %s already holds keys; use 'ferry keys "
                            "rotate'\n", a.state_dir);
            return FERRY_EXIT_REFUSED;
        }
        r = add_key(m, &a, cmd);
        if (r != FERRY_EXIT_OK)
            return r;
        return print_keys(m, strcmp(cmd, "init") == 0);
    }
    if (n == 0) {
        fprintf(stderr, "ferry keys %s: %s holds no keys; run 'ferry keys init'\n", cmd,
                a.state_dir);
        return FERRY_EXIT_USAGE;
    }
    if (strcmp(cmd, "list") == 0)
        return print_keys(m, false);
    r = strcmp(cmd, "jwks") == 0 ? ferry_mint_jwks(m, a.all, &doc)
                                 : ferry_mint_discovery(m, &doc);
    if (r < 0) {
        fprintf(stderr, "ferry keys %s: %s\n", cmd, ferry_strerror(r));
        return FERRY_EXIT_USAGE;
    }
    return print_json(doc);
}
