/* tests/fuzz/fuzz_audit_xml.c - libFuzzer target: the XML answers `ferry audit aws --live`
 * converts (audit_aws_xml_to_json, src/lib/audit/aws_live.c).
 *
 * The first byte chooses the IAM action the answer is read as (GetAccountAuthorizationDetails,
 * GetCredentialReport, GenerateCredentialReport, GenerateServiceLastAccessedDetails,
 * GetServiceLastAccessedDetails); the rest is the answer. The target abort()s when:
 *   - a refusal returns a code the function does not document, or has an empty reason;
 *   - a success gives no JSON object;
 * and a converted authorization-details page or service-last-accessed answer is then handed to
 * its loader as live mode does (aws-authz; aws-last-accessed with an Arn), then the run is
 * finished and rendered: loader refusals are fine, crashes and leaks are not (sanitizers).
 *
 * Built and run by tests/fuzz/run.sh (seeds: tests/fuzz/corpus/fuzz_audit_xml/, answers as
 * moto and IAM give them, with the selector byte in front): tests/fuzz/run.sh BUILDDIR SECONDS.
 */
#include "config.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "ferry/audit.h"
#include "ferry/error.h"
#include "lib/audit/audit-internal.h"
#include "lib/audit/aws-live.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const actions[] = {
    "GetAccountAuthorizationDetails", "GetCredentialReport", "GenerateCredentialReport",
    "GenerateServiceLastAccessedDetails", "GetServiceLastAccessedDetails"};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *action, *format = NULL;
    ferry_audit_options o = {.now = INT64_C(1790000000)};
    ferry_audit *a = NULL;
    json_t *j = NULL;
    char err[512] = "";
    char *text, *out = NULL;
    int r;

    if (size < 1)
        return 0;
    action = actions[data[0] % (sizeof(actions) / sizeof(actions[0]))];
    r = audit_aws_xml_to_json((const char *)data + 1, size - 1, action, &j, err, sizeof(err));
    if (r < 0) {
        if (r != -FERRY_EMALFORMED && r != -FERRY_ETOOBIG && r != -ENOMEM)
            abort();
        if (r != -ENOMEM && !err[0])
            abort();
        if (j)
            abort();
        return 0;
    }
    if (!json_is_object(j))
        abort();
    if (data[0] % 5 == 0)
        format = "aws-authz";
    else if (data[0] % 5 == 4) {
        format = "aws-last-accessed";
        (void)json_object_set_new(j, "Arn", json_string("arn:aws:iam::111122223333:role/f"));
    }
    if (format && ferry_audit_new(&o, &a) == 0) {
        text = json_dumps(j, JSON_COMPACT);
        if (text &&
            ferry_audit_add_input(a, "live", text, strlen(text), format, err, sizeof(err)) == 0 &&
            ferry_audit_finish(a, err, sizeof(err)) == 0 &&
            ferry_audit_render(a, FERRY_AUDIT_OUT_JSON, &out, NULL) == 0 && !out)
            abort();
        free(out);
        free(text);
        ferry_audit_free(a);
    }
    json_decref(j);
    return 0;
}
