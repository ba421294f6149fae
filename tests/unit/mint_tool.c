/* tests/unit/mint_tool.c - test-only front end of the mint module for the integration tests.
 *
 * ferry deliberately has no `ferry token mint`: tokens come from ferryd after a verified
 * exchange. The integration tests still need tokens minted from outside the library, with a
 * chosen clock, so this tool (built by `make check` only, never installed) does that:
 *
 *   mint_tool mint --state-dir D --issuer URL --sub S --aud A [--aud A ...] --client-id C
 *             --src-iss I --src-sub S [--scope S] [--act JSON] [--ttl N] [--count N]
 *             [--max-ttl N] [--now T]       one token per line on stdout
 *   mint_tool jwks --state-dir D [--all] [--max-ttl N] [--now T]
 *   mint_tool discovery --state-dir D --issuer URL [--now T]
 *
 * --now fixes the mint's clock (opening the store at that time also prunes expired keys).
 * Exit 0 on success, 1 when the library refused, 2 on usage errors.
 */
#include "config.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "basic/mem.h"
#include "ferry/error.h"
#include "ferry/json.h"
#include "ferry/mint.h"

#define MAX_AUD 32

static int64_t fixed_clock(void *data)
{
    return *(const int64_t *)data;
}

static int parse_num(const char *s, long long lo, long long hi, long long *ret)
{
    long long v;

    if (ferry_parse_int64(s, &v) < 0 || v < lo || v > hi) {
        fprintf(stderr, "mint_tool: bad number '%s'\n", s);
        return -1;
    }
    *ret = v;
    return 0;
}

int main(int argc, char **argv)
{
    enum { O_STATE = 256, O_ISS, O_SUB, O_AUD, O_CID, O_SIS, O_SSU, O_SCOPE, O_ACT, O_TTL,
           O_COUNT, O_MAXTTL, O_NOW, O_ALL };
    static const struct option opts[] = {
        {"state-dir", required_argument, NULL, O_STATE}, {"issuer", required_argument, NULL, O_ISS},
        {"sub", required_argument, NULL, O_SUB},         {"aud", required_argument, NULL, O_AUD},
        {"client-id", required_argument, NULL, O_CID},   {"src-iss", required_argument, NULL, O_SIS},
        {"src-sub", required_argument, NULL, O_SSU},     {"scope", required_argument, NULL, O_SCOPE},
        {"act", required_argument, NULL, O_ACT},         {"ttl", required_argument, NULL, O_TTL},
        {"count", required_argument, NULL, O_COUNT},     {"max-ttl", required_argument, NULL, O_MAXTTL},
        {"now", required_argument, NULL, O_NOW},         {"all", no_argument, NULL, O_ALL},
        {NULL, 0, NULL, 0},
    };
    ferry_mint_options mo = {.flags = FERRY_MINT_NO_GENERATE};
    ferry_mint_request req = {.ttl = 300};
    const char *aud[MAX_AUD];
    size_t n_aud = 0;
    long long v, count = 1;
    int64_t now = 0;
    json_t *act = NULL, *doc = NULL;
    ferry_mint *m = NULL;
    bool all = false;
    char err[512] = "";
    const char *cmd;
    int c, r, rc = 2;

    if (argc < 2)
        goto usage;
    cmd = argv[1];
    optind = 2;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case O_STATE: mo.state_dir = optarg; break;
        case O_ISS: mo.issuer = optarg; break;
        case O_SUB: req.subject = optarg; break;
        case O_AUD:
            if (n_aud == MAX_AUD)
                goto usage;
            aud[n_aud++] = optarg;
            break;
        case O_CID: req.client_id = optarg; break;
        case O_SIS: req.src_iss = optarg; break;
        case O_SSU: req.src_sub = optarg; break;
        case O_SCOPE: req.scope = optarg; break;
        case O_ACT:
            json_decref(act);
            act = NULL;
            if (ferry_json_parse(optarg, strlen(optarg), 4096, 8, &act, NULL, 0) < 0)
                goto usage;
            break;
        case O_TTL:
            if (parse_num(optarg, -1000000, 1000000, &v) < 0)
                goto usage;
            req.ttl = v;
            break;
        case O_COUNT:
            if (parse_num(optarg, 1, 1000000, &count) < 0)
                goto usage;
            break;
        case O_MAXTTL:
            if (parse_num(optarg, 1, FERRY_MINT_MAX_TTL_LIMIT, &v) < 0)
                goto usage;
            mo.max_ttl = v;
            break;
        case O_NOW:
            if (parse_num(optarg, 1, INT64_MAX / 2, &v) < 0)
                goto usage;
            now = v;
            mo.clock = fixed_clock;
            mo.clock_data = &now;
            break;
        case O_ALL: all = true; break;
        default: goto usage;
        }
    }
    if (optind != argc)
        goto usage;
    r = ferry_mint_open(&mo, &m, err, sizeof(err));
    if (r < 0) {
        fprintf(stderr, "mint_tool: %s\n", err[0] ? err : ferry_strerror(r));
        goto out;
    }
    rc = 1;
    if (strcmp(cmd, "mint") == 0) {
        req.audience = aud;
        req.n_audience = n_aud;
        req.act = act;
        for (long long i = 0; i < count; i++) {
            char *tok = NULL;
            r = ferry_mint_token(m, &req, &tok, NULL, NULL);
            if (r < 0) {
                fprintf(stderr, "mint_tool: mint refused: %s\n", ferry_strerror(r));
                goto out;
            }
            puts(tok);
            ferry_free_secret_str(tok);
        }
    } else if (strcmp(cmd, "jwks") == 0 || strcmp(cmd, "discovery") == 0) {
        char *text;
        r = cmd[0] == 'j' ? ferry_mint_jwks(m, all, &doc) : ferry_mint_discovery(m, &doc);
        if (r < 0) {
            fprintf(stderr, "mint_tool: %s\n", ferry_strerror(r));
            goto out;
        }
        text = json_dumps(doc, JSON_COMPACT);
        if (!text)
            goto out;
        puts(text);
        free(text);
    } else {
        rc = 2;
        goto usage;
    }
    rc = 0;
    goto out;
usage:
    fprintf(stderr, "usage: mint_tool mint|jwks|discovery --state-dir DIR [OPTIONS]\n");
out:
    json_decref(act);
    json_decref(doc);
    ferry_mint_free(m);
    return rc;
}
