/* ferry/audit.c - `ferry audit`: over-permissioned and shadow service identities from cloud IAM
 * exports (docs/internals/audit.md).
 *
 * Reads and audits every input before printing anything, so an unreadable input gives one
 * error line on stderr, exit 2 and no report. Exit 1 when findings at or above --fail-on
 * remain, 0 otherwise.
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "basic/fileio.h"
#include "basic/macro.h"
#include "ferry/audit.h"
#include "ferry/error.h"
#include "ferry/ferry.h"
#include "ferry/json.h"

#define PROG "ferry audit"
/* Largest --known-accounts file. */
#define KNOWN_ACCOUNTS_MAX (16 * 1024 * 1024)

DEFINE_TRIVIAL_CLEANUP_FUNC(ferry_audit *, ferry_audit_free);

static void usage_audit(FILE *f)
{
    fprintf(f,
            "usage: ferry audit [OPTIONS] FILE...\n"
            "\n"
            "Audit cloud IAM exports for over-permissioned and shadow service identities,\n"
            "with the rule catalogue of docs/internals/audit.md. Each FILE (- reads stdin) is\n"
            "recognised by its content:\n"
            "  aws-authz            aws iam get-account-authorization-details (one page, the\n"
            "                       CLI's merged output, or a JSON array of pages; pages with\n"
            "                       IsTruncated continue in the next FILE)\n"
            "  aws-credreport       the credential report CSV\n"
            "  aws-credreport-json  aws iam get-credential-report (Content base64 or decoded)\n"
            "\n"
            "  --format FORMAT         read every FILE as FORMAT (one of the above)\n"
            "  --output-format FMT     table (default), json (schema ferry.audit/v1) or sarif\n"
            "                          (SARIF 2.1.0)\n"
            "  --fail-on SEVERITY      exit 1 when a finding is at or above SEVERITY: critical,\n"
            "                          high, medium, low (default) or info; none: always 0\n"
            "  --known-accounts FILE   12-digit AWS account ids, one per line (# comments), or\n"
            "                          aws organizations list-accounts JSON: enables\n"
            "                          AWS-TR-003 (trust to unknown accounts)\n"
            "  --unused-days N         unused roles (AWS-SH-001); default 90\n"
            "  --key-unused-days N     unused access keys (AWS-SH-002); default 90 (cis: 45)\n"
            "  --key-max-age-days N    access keys not rotated (AWS-SH-004); default 90\n"
            "  --grace-days N          skip roles and keys younger than N days; default 7\n"
            "  --profile cis           CIS thresholds (--key-unused-days 45)\n"
            "  --now EPOCH             the clock for dated rules (seconds since 1970)\n"
            "  --max-input-size MIB    largest input file, in MiB; default 512\n"
            "  -h, --help              this text\n"
            "\n"
            "Exit status: 0 no finding at or above --fail-on, 1 findings, 2 usage or input\n"
            "error (nothing is printed on stdout then).\n");
}

static int parse_uint(const char *opt, const char *s, unsigned long long max,
                      unsigned long long *ret)
{
    char *end = NULL;
    unsigned long long v;

    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno || !end || *end || s[0] < '0' || s[0] > '9' || v > max) {
        fprintf(stderr, PROG ": %s: '%s' is not an integer in 0..%llu\n", opt, s, max);
        return -EINVAL;
    }
    *ret = v;
    return 0;
}

static int read_input(const char *path, size_t max, char **ret, size_t *ret_len)
{
    if (strcmp(path, "-") == 0)
        return ferry_cli_read_stream(stdin, max, false, ret, ret_len);
    return ferry_read_regular_file(path, max, ret, ret_len);
}

/* `aws organizations list-accounts` output ({"Accounts": [{"Id": ...}]}) or a JSON array of
 * ids or of such objects. */
static int known_accounts_json(ferry_audit *a, const char *path, const char *buf, size_t len)
{
    _cleanup_(json_decrefp) json_t *doc = NULL;
    ferry_json_locs *locs = NULL;
    json_t *list, *v;
    unsigned line = 0;
    char err[128];
    size_t i;
    int r;

    r = ferry_json_parse_located(buf, len, KNOWN_ACCOUNTS_MAX, 16, &doc, &locs, &line, err,
                                 sizeof(err));
    if (r < 0) {
        fprintf(stderr, PROG ": --known-accounts %s:%u: %s\n", path, line, err);
        return r;
    }
    list = json_is_object(doc) ? json_object_get(doc, "Accounts") : doc;
    if (!json_is_array(list)) {
        fprintf(stderr,
                PROG ": --known-accounts %s: expected {\"Accounts\": [...]} (aws organizations "
                     "list-accounts) or an array of account ids\n",
                path);
        ferry_json_locs_free(locs);
        return -EINVAL;
    }
    json_array_foreach(list, i, v)
    {
        const char *id =
            json_is_string(v) ? json_string_value(v) : json_string_value(json_object_get(v, "Id"));
        if (!id || ferry_audit_add_known_account(a, id) < 0) {
            fprintf(stderr,
                    PROG ": --known-accounts %s:%u: element %zu: expected a 12-digit account id "
                         "(a string, or an object with Id)\n",
                    path, ferry_json_locs_line_index(locs, list, i), i);
            ferry_json_locs_free(locs);
            return -EINVAL;
        }
    }
    ferry_json_locs_free(locs);
    return 0;
}

static int load_known_accounts(ferry_audit *a, const char *path)
{
    _cleanup_free_ char *buf = NULL;
    char *line, *next;
    size_t len = 0, lineno = 0;
    int r;

    r = read_input(path, KNOWN_ACCOUNTS_MAX, &buf, &len);
    if (r < 0) {
        fprintf(stderr, PROG ": --known-accounts %s: %s\n", path,
                r == -EFBIG || r == -FERRY_ETOOBIG ? "larger than 16 MiB" : ferry_strerror(r));
        return r;
    }
    if (memchr(buf, '\0', len)) {
        fprintf(stderr, PROG ": --known-accounts %s: NUL byte in the file\n", path);
        return -EINVAL;
    }
    if (buf[strspn(buf, " \t\r\n")] == '{' || buf[strspn(buf, " \t\r\n")] == '[')
        return known_accounts_json(a, path, buf, len);
    next = buf;
    while ((line = strsep(&next, "\n")) != NULL) {
        char *end;
        lineno++;
        line += strspn(line, " \t\r");
        end = line + strcspn(line, "#");
        while (end > line && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\r'))
            end--;
        *end = '\0';
        if (!*line)
            continue;
        r = ferry_audit_add_known_account(a, line);
        if (r < 0) {
            fprintf(stderr,
                    PROG ": --known-accounts %s:%zu: expected a 12-digit account id, "
                         "got '%.40s'\n",
                    path, lineno, line);
            return r;
        }
    }
    return 0;
}

int ferry_cmd_audit(int argc, char **argv)
{
    enum {
        O_FORMAT = 256,
        O_OUTFMT,
        O_FAILON,
        O_KNOWN,
        O_UNUSED,
        O_KEYUNUSED,
        O_KEYAGE,
        O_GRACE,
        O_PROFILE,
        O_NOW,
        O_MAXIN,
    };
    static const struct option longopts[] = {
        {"format", required_argument, NULL, O_FORMAT},
        {"output-format", required_argument, NULL, O_OUTFMT},
        {"fail-on", required_argument, NULL, O_FAILON},
        {"known-accounts", required_argument, NULL, O_KNOWN},
        {"unused-days", required_argument, NULL, O_UNUSED},
        {"key-unused-days", required_argument, NULL, O_KEYUNUSED},
        {"key-max-age-days", required_argument, NULL, O_KEYAGE},
        {"grace-days", required_argument, NULL, O_GRACE},
        {"profile", required_argument, NULL, O_PROFILE},
        {"now", required_argument, NULL, O_NOW},
        {"max-input-size", required_argument, NULL, O_MAXIN},
        {"help", no_argument, NULL, 'h'},
        {},
    };
    _cleanup_(ferry_audit_freep) ferry_audit *a = NULL;
    _cleanup_free_ char *report = NULL;
    ferry_audit_options opts = {0};
    ferry_audit_output out = FERRY_AUDIT_OUT_TABLE;
    ferry_audit_severity fail_on = FERRY_AUDIT_LOW;
    bool fail_never = false, cis = false, key_unused_set = false;
    const char *format = NULL, *known = NULL;
    unsigned long long v;
    char err[1024];
    size_t report_len = 0;
    int c, r;

    optind = 1;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case O_FORMAT:
            if (!ferry_audit_format_known(optarg)) {
                fprintf(stderr,
                        PROG ": --format: unknown format '%s' (aws-authz, aws-credreport, "
                             "aws-credreport-json)\n",
                        optarg);
                return FERRY_EXIT_USAGE;
            }
            format = optarg;
            break;
        case O_OUTFMT:
            if (strcmp(optarg, "table") == 0)
                out = FERRY_AUDIT_OUT_TABLE;
            else if (strcmp(optarg, "json") == 0)
                out = FERRY_AUDIT_OUT_JSON;
            else if (strcmp(optarg, "sarif") == 0)
                out = FERRY_AUDIT_OUT_SARIF;
            else {
                fprintf(stderr, PROG ": --output-format: '%s' is not table, json or sarif\n",
                        optarg);
                return FERRY_EXIT_USAGE;
            }
            break;
        case O_FAILON:
            if (strcmp(optarg, "none") == 0) {
                fail_never = true;
            } else if (ferry_audit_severity_from_name(optarg, &fail_on) < 0) {
                fprintf(stderr,
                        PROG ": --fail-on: '%s' is not critical, high, medium, low, info or "
                             "none\n",
                        optarg);
                return FERRY_EXIT_USAGE;
            } else {
                fail_never = false;
            }
            break;
        case O_KNOWN:
            known = optarg;
            break;
        case O_UNUSED:
        case O_KEYUNUSED:
        case O_KEYAGE:
        case O_GRACE:
            if (parse_uint(longopts[c - O_FORMAT].name, optarg, 36500, &v) < 0)
                return FERRY_EXIT_USAGE;
            if (c != O_GRACE && v == 0) {
                fprintf(stderr, PROG ": --%s: must be at least 1\n", longopts[c - O_FORMAT].name);
                return FERRY_EXIT_USAGE;
            }
            if (c == O_UNUSED)
                opts.unused_days = (unsigned)v;
            else if (c == O_KEYUNUSED) {
                opts.key_unused_days = (unsigned)v;
                key_unused_set = true;
            } else if (c == O_KEYAGE)
                opts.key_max_age_days = (unsigned)v;
            else {
                opts.grace_days = (unsigned)v;
                opts.grace_days_set = true;
            }
            break;
        case O_PROFILE:
            if (strcmp(optarg, "cis") != 0) {
                fprintf(stderr, PROG ": --profile: '%s' is not a known profile (cis)\n", optarg);
                return FERRY_EXIT_USAGE;
            }
            cis = true;
            break;
        case O_NOW:
            if (parse_uint("--now", optarg, (unsigned long long)INT64_MAX / 2, &v) < 0 || v == 0)
                return FERRY_EXIT_USAGE;
            opts.now = (int64_t)v;
            break;
        case O_MAXIN:
            if (parse_uint("--max-input-size", optarg, 16384, &v) < 0 || v == 0)
                return FERRY_EXIT_USAGE;
            opts.max_input = (size_t)v * 1024 * 1024;
            break;
        case 'h':
            usage_audit(stdout);
            return FERRY_EXIT_OK;
        default:
            usage_audit(stderr);
            return FERRY_EXIT_USAGE;
        }
    }
    if (cis && !key_unused_set)
        opts.key_unused_days = 45;
    if (optind >= argc) {
        fprintf(stderr, PROG ": expected at least one input FILE\n");
        usage_audit(stderr);
        return FERRY_EXIT_USAGE;
    }
    r = ferry_audit_new(&opts, &a);
    if (r < 0) {
        fprintf(stderr, PROG ": %s\n", ferry_strerror(r));
        return FERRY_EXIT_USAGE;
    }
    if (known && load_known_accounts(a, known) < 0)
        return FERRY_EXIT_USAGE;
    /* A progress line for runs over several inputs, only for a person watching. */
    bool progress = argc - optind > 1 && isatty(STDERR_FILENO);
    for (int i = optind; i < argc; i++) {
        _cleanup_free_ char *buf = NULL;
        size_t len = 0;
        const char *path = argv[i];
        size_t max = opts.max_input ? opts.max_input : FERRY_AUDIT_DEFAULT_MAX_INPUT;

        if (progress)
            fprintf(stderr, "\r\033[K" PROG ": [%d/%d] %.60s", i - optind + 1, argc - optind, path);

        r = read_input(path, max, &buf, &len);
        if (r < 0) {
            if (progress)
                fputs("\r\033[K", stderr);
            fprintf(stderr, PROG ": %s: %s\n", path,
                    r == -EFBIG || r == -FERRY_ETOOBIG
                        ? "larger than the input size limit (--max-input-size)"
                    : r == -EINVAL ? "not a regular file"
                                   : ferry_strerror(r));
            return FERRY_EXIT_USAGE;
        }
        r = ferry_audit_add_input(a, path, buf, len, format, err, sizeof(err));
        if (r < 0) {
            if (progress)
                fputs("\r\033[K", stderr);
            fprintf(stderr, PROG ": %s\n", err);
            return FERRY_EXIT_USAGE;
        }
    }
    if (progress)
        fputs("\r\033[K", stderr);
    r = ferry_audit_finish(a, err, sizeof(err));
    if (r < 0) {
        fprintf(stderr, PROG ": %s\n", err);
        return FERRY_EXIT_USAGE;
    }
    r = ferry_audit_render(a, out, &report, &report_len);
    if (r < 0) {
        fprintf(stderr, PROG ": rendering the report: %s\n", ferry_strerror(r));
        return FERRY_EXIT_USAGE;
    }
    if (fwrite(report, 1, report_len, stdout) != report_len ||
        (out != FERRY_AUDIT_OUT_TABLE && fputc('\n', stdout) == EOF) || fflush(stdout) != 0) {
        fprintf(stderr, PROG ": writing the report: %s\n", strerror(errno));
        return FERRY_EXIT_USAGE;
    }
    if (!fail_never && ferry_audit_count_at_least(a, fail_on) > 0)
        return FERRY_EXIT_REFUSED;
    return FERRY_EXIT_OK;
}
