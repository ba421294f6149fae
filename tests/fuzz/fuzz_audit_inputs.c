/* tests/fuzz/fuzz_audit_inputs.c - libFuzzer target: every input `ferry audit` reads.
 *
 * The first byte chooses what the rest is:
 *   sel & 3 == 0   an input file, format detected by content (ferry_audit_add_input, NULL);
 *   sel & 3 == 1   an input file read as the loader format number sel >> 2 (modulo the number
 *                  of loaders, from the loaders' own table: audit_loader_format);
 *   sel & 3 == 2   a suppression file (ferry_audit_add_suppressions), then a small fixed
 *                  export is audited so that entries can match;
 *   sel & 3 == 3   a baseline report (ferry_audit_set_baseline), then the same export.
 * The run is then finished and rendered in every output. The target abort()s when:
 *   - a refusal returns a code the API does not document, or has an empty message;
 *   - a finished run fails to render (other than -ENOMEM), or a JSON/SARIF report is not
 *     JSON, an NDJSON report is not one JSON object per finding plus the summary line, or a
 *     CSV report does not start with its header;
 *   - the exit count (ferry_audit_count_at_least) exceeds the number of findings.
 * Sanitizers catch the rest.
 *
 * Built and run by tests/fuzz/run.sh, which compiles every source of src/basic and src/lib
 * with it (seeds: tests/fuzz/corpus/fuzz_audit_inputs/, small fixtures of tests/audit with a
 * selector byte in front): tests/fuzz/run.sh BUILDDIR SECONDS.
 */
#include "config.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "ferry/audit.h"
#include "ferry/error.h"
#include "lib/audit/audit-internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define NOW INT64_C(1790000000)

/* Two full-admin users and an unused role: findings every suppression field can name. */
static const char EXPORT[] =
    "{\"UserDetailList\": [{\"UserName\": \"alice\", \"Arn\": "
    "\"arn:aws:iam::111122223333:user/alice\", \"CreateDate\": \"2020-01-01T00:00:00Z\", "
    "\"UserPolicyList\": [{\"PolicyName\": \"p\", \"PolicyDocument\": {\"Statement\": "
    "{\"Effect\": \"Allow\", \"Action\": \"*\", \"Resource\": \"*\"}}}]}], "
    "\"RoleDetailList\": [{\"RoleName\": \"old\", \"Arn\": \"arn:aws:iam::111122223333:role/old\", "
    "\"CreateDate\": \"2020-01-01T00:00:00Z\", \"AssumeRolePolicyDocument\": {\"Statement\": "
    "[{\"Effect\": \"Allow\", \"Principal\": {\"AWS\": \"*\"}, \"Action\": "
    "\"sts:AssumeRole\"}]}}]}";

static void die(const char *why, int r, const char *msg)
{
    fprintf(stderr, "fuzz_audit_inputs: %s (r=%d, %s)\n", why, r, msg ? msg : "");
    abort();
}

static void check_refusal(int r, const char *err)
{
    if (r != -FERRY_EMALFORMED && r != -FERRY_EUNSUPPORTED && r != -FERRY_ETOOBIG && r != -EINVAL &&
        r != -ENOMEM && r != -ERANGE)
        die("undocumented error code", r, err);
    if (r != -ENOMEM && !err[0])
        die("refusal without a message", r, err);
}

static void check_json(const char *s, size_t len)
{
    json_error_t e;
    json_t *j = json_loadb(s, len, JSON_REJECT_DUPLICATES, &e);
    if (!j)
        die("report is not JSON", 0, e.text);
    json_decref(j);
}

static void render_all(ferry_audit *a)
{
    static const ferry_audit_output outs[] = {FERRY_AUDIT_OUT_TABLE, FERRY_AUDIT_OUT_JSON,
                                              FERRY_AUDIT_OUT_SARIF, FERRY_AUDIT_OUT_NDJSON,
                                              FERRY_AUDIT_OUT_CSV};
    size_t n = ferry_audit_findings(a, NULL);

    if (ferry_audit_count_at_least(a, FERRY_AUDIT_INFO) > n)
        die("exit count above the number of findings", 0, NULL);
    for (size_t i = 0; i < sizeof(outs) / sizeof(outs[0]); i++) {
        char *s = NULL;
        size_t len = 0;
        int r = ferry_audit_render(a, outs[i], &s, &len);
        if (r == -ENOMEM)
            continue;
        if (r < 0 || !s || strlen(s) != len)
            die("render failed", r, NULL);
        if (outs[i] == FERRY_AUDIT_OUT_JSON || outs[i] == FERRY_AUDIT_OUT_SARIF) {
            check_json(s, len);
        } else if (outs[i] == FERRY_AUDIT_OUT_NDJSON) {
            size_t lines = 0;
            for (const char *p = s; p && *p; lines++) {
                const char *nl = strchr(p, '\n');
                check_json(p, nl ? (size_t)(nl - p) : strlen(p));
                p = nl ? nl + 1 : NULL;
            }
            if (lines != n + 1)
                die("NDJSON: not one line per finding plus the summary", (int)lines, NULL);
        } else if (outs[i] == FERRY_AUDIT_OUT_CSV) {
            if (strncmp(s, "\"record\",\"fingerprint\",", 23) != 0)
                die("CSV without its header", 0, NULL);
        }
        free(s);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ferry_audit_options o = {.now = NOW, .max_input = 1024 * 1024};
    ferry_audit *a = NULL;
    char err[1024] = "";
    const char *format = NULL;
    size_t n_formats = 0;
    int r;

    if (size < 1)
        return 0;
    if (ferry_audit_new(&o, &a) < 0)
        return 0;
    uint8_t sel = data[0];
    data++;
    size--;
    switch (sel & 3) {
    case 0:
    case 1:
        if (sel & 1) {
            while (audit_loader_format(n_formats))
                n_formats++;
            format = audit_loader_format((size_t)(sel >> 2) % n_formats);
            if (!ferry_audit_format_known(format))
                die("a loader format is not known", 0, format);
        }
        r = ferry_audit_add_input(a, "fuzz.in", data, size, format, err, sizeof(err));
        if (r < 0) {
            check_refusal(r, err);
            goto out;
        }
        break;
    case 2:
        r = ferry_audit_add_suppressions(a, "fuzz.yaml", data, size, err, sizeof(err));
        if (r < 0) {
            check_refusal(r, err);
            goto out;
        }
        break;
    default:
        r = ferry_audit_set_baseline(a, "fuzz.json", data, size, err, sizeof(err));
        if (r < 0) {
            check_refusal(r, err);
            goto out;
        }
        break;
    }
    if ((sel & 3) >= 2 &&
        ferry_audit_add_input(a, "export.json", EXPORT, strlen(EXPORT), NULL, err, sizeof(err)) < 0)
        die("the fixed export was refused", 0, err);
    err[0] = '\0';
    r = ferry_audit_finish(a, err, sizeof(err));
    if (r < 0) {
        check_refusal(r, err);
        goto out;
    }
    render_all(a);
out:
    ferry_audit_free(a);
    return 0;
}
