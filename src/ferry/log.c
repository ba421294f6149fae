/* ferry/log.c - `ferry log verify`: check the audit log's hash chain and signed checkpoints.
 *
 * Streams the log (bounded memory whatever its size) through ferry_auditlog_verify and prints
 * one line per problem, "line N (seq S): reason", on stdout. Exit 0 with the verified range,
 * 1 when the log has problems (or is not sealed, unless --live), 2 on usage errors or when the
 * log or the key set cannot be read.
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "basic/macro.h"
#include "ferry/auditlog.h"
#include "ferry/error.h"
#include "ferry/ferry.h"
#include "ferry/jose.h"

static void usage_log(FILE *f)
{
    fprintf(f,
            "usage: ferry log verify [OPTIONS] FILE --jwks JWKS_FILE\n"
            "\n"
            "Verify an audit log written by ferryd: every record's canonical form, sequence\n"
            "number, link to the previous record and hash, every checkpoint's signature (with\n"
            "the public keys in JWKS_FILE, as `ferry keys jwks --all` prints them), and that the\n"
            "log ends with a final checkpoint. Prints one line per problem naming the first\n"
            "broken record, \"line N (seq S): reason\", and exits 1; prints the verified range\n"
            "and exits 0 when the log verifies. Exit 2 on usage errors or unreadable files.\n"
            "\n"
            "  --jwks FILE        public keys of the checkpoint signers (required; - reads\n"
            "                     stdin)\n"
            "  --live             the log is still being written: the records after the last\n"
            "                     checkpoint are reported as an unsigned tail (a warning) and\n"
            "                     the signed range is printed\n"
            "  --max-problems N   list at most N problems (default 100)\n"
            "  --min-last-seq N   the log must reach seq N (the last seq of an earlier\n"
            "                     verification): catches a log cut back to an earlier\n"
            "                     checkpoint, which the file alone cannot show\n"
            "  -h, --help         this text\n");
}

static void print_problem(void *userdata, const ferry_auditlog_problem *p)
{
    (void)userdata;
    if (p->seq)
        printf("%sline %" PRIu64 " (seq %" PRIu64 "): %s\n", p->warning ? "warning: " : "", p->line,
               p->seq, p->reason);
    else
        printf("%sline %" PRIu64 ": %s\n", p->warning ? "warning: " : "", p->line, p->reason);
}

static int cmd_verify(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"jwks", required_argument, NULL, 'j'},
        {"live", no_argument, NULL, 'l'},
        {"max-problems", required_argument, NULL, 'm'},
        {"min-last-seq", required_argument, NULL, 's'},
        {"help", no_argument, NULL, 'h'},
        {},
    };
    ferry_auditlog_verify_options vo = {.on_problem = print_problem};
    ferry_auditlog_report rep;
    ferry_jwks *keys = NULL;
    _cleanup_free_ char *doc = NULL;
    const char *jwks_path = NULL, *path;
    size_t doc_len = 0, skipped = 0;
    int c, r;

    optind = 1;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case 'j':
            jwks_path = optarg;
            break;
        case 'l':
            vo.live = true;
            break;
        case 'm': {
            char *end = NULL;
            errno = 0;
            unsigned long v = strtoul(optarg, &end, 10);
            if (errno || !end || *end || optarg[0] < '0' || optarg[0] > '9' || v == 0 ||
                v > 1000000) {
                fprintf(stderr,
                        "ferry log verify: --max-problems: '%s' is not an integer "
                        "in 1..1000000\n",
                        optarg);
                return FERRY_EXIT_USAGE;
            }
            vo.max_problems = (unsigned)v;
            break;
        }
        case 's': {
            char *end = NULL;
            errno = 0;
            unsigned long long v = strtoull(optarg, &end, 10);
            if (errno || !end || *end || optarg[0] < '0' || optarg[0] > '9' || v == 0 ||
                v > INT64_MAX) {
                fprintf(stderr,
                        "ferry log verify: --min-last-seq: '%s' is not a positive integer\n",
                        optarg);
                return FERRY_EXIT_USAGE;
            }
            vo.min_last_seq = (uint64_t)v;
            break;
        }
        case 'h':
            usage_log(stdout);
            return FERRY_EXIT_OK;
        default:
            usage_log(stderr);
            return FERRY_EXIT_USAGE;
        }
    }
    if (optind != argc - 1) {
        fprintf(stderr, "ferry log verify: expected exactly one log FILE\n");
        usage_log(stderr);
        return FERRY_EXIT_USAGE;
    }
    path = argv[optind];
    if (!jwks_path) {
        fprintf(stderr, "ferry log verify: --jwks JWKS_FILE is required (the public keys "
                        "that sign checkpoints)\n");
        return FERRY_EXIT_USAGE;
    }
    r = ferry_cli_read_path(jwks_path, FERRY_JWKS_MAX_LEN, false, &doc, &doc_len);
    if (r < 0) {
        fprintf(stderr, "ferry log verify: --jwks %s: %s\n", jwks_path, ferry_strerror(r));
        return FERRY_EXIT_USAGE;
    }
    r = ferry_jwks_from_buffer(doc, doc_len, &keys, &skipped);
    if (r < 0) {
        fprintf(stderr, "ferry log verify: --jwks %s: not a usable JWK Set: %s\n", jwks_path,
                ferry_strerror(r));
        return FERRY_EXIT_USAGE;
    }
    if (skipped > 0)
        fprintf(stderr,
                "ferry log verify: --jwks %s: %zu key(s) skipped (unsupported or "
                "malformed)\n",
                jwks_path, skipped);
    if (ferry_jwks_count(keys) == 0) {
        fprintf(stderr, "ferry log verify: --jwks %s: no usable key\n", jwks_path);
        ferry_jwks_unref(keys);
        return FERRY_EXIT_USAGE;
    }
    r = ferry_auditlog_verify(path, keys, &vo, &rep);
    ferry_jwks_unref(keys);
    if (r < 0 && r != -FERRY_EREFUSED) {
        fprintf(stderr, "ferry log verify: %s: %s\n", path, ferry_strerror(r));
        return FERRY_EXIT_USAGE;
    }
    if (r == -FERRY_EREFUSED) {
        unsigned shown = vo.max_problems ? vo.max_problems : 100;
        if (rep.problems > shown)
            printf("... %" PRIu64 " more problem(s) not listed\n", rep.problems - shown);
        fprintf(stderr,
                "ferry log verify: %s: FAILED: %" PRIu64 " problem(s); first at line "
                "%" PRIu64 "\n",
                path, rep.problems, rep.first_bad_line);
        return FERRY_EXIT_REFUSED;
    }
    if (vo.live && rep.unsigned_records > 0)
        printf("verified: seq %" PRIu64 "..%" PRIu64 " signed (%" PRIu64 " records; %" PRIu64
               " more unsigned), %" PRIu64 " checkpoint(s), last checkpoint seq %" PRIu64 "%s\n",
               rep.first_seq, rep.last_checkpoint_seq, rep.records - rep.unsigned_records,
               rep.unsigned_records, rep.checkpoints, rep.last_checkpoint_seq,
               rep.last_checkpoint_final ? " (final)" : "");
    else
        printf("verified: seq %" PRIu64 "..%" PRIu64 " (%" PRIu64 " records), %" PRIu64
               " checkpoint(s), last checkpoint seq %" PRIu64 "%s\n",
               rep.first_seq, rep.last_seq, rep.records, rep.checkpoints, rep.last_checkpoint_seq,
               rep.sealed ? " (final: sealed)" : "");
    return FERRY_EXIT_OK;
}

int ferry_cmd_log(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage_log(argc < 2 ? stderr : stdout);
        return argc < 2 ? FERRY_EXIT_USAGE : FERRY_EXIT_OK;
    }
    if (strcmp(argv[1], "verify") == 0)
        return cmd_verify(argc - 1, argv + 1);
    fprintf(stderr, "ferry log: unknown subcommand '%s' (expected 'verify')\n", argv[1]);
    usage_log(stderr);
    return FERRY_EXIT_USAGE;
}
