/* audit/aws_live.c - `ferry audit aws --live`: the account the AWS credential chain names, read
 * through IAM's Query API and audited by the same loaders and rules as its exports.
 * docs/internals/audit.md, "AWS live mode".
 *
 * Design:
 * - Calls go through ferry_aws_query_call (lib/cloud/aws.c): SigV4 for us-east-1/iam, the one
 *   retry rule for throttling, 5xx and network failures, credentials from the standard chain.
 * - Answers are XML. audit_aws_xml_to_json converts one answer, as expat streams it, into the
 *   JSON the AWS CLI prints for that call (what the export loaders read): <member> lists become
 *   arrays, the typed leaves the loaders test (booleans, counts) JSON booleans and integers.
 *   Nothing an outsider sends is trusted: DOCTYPE, entity declarations, processing
 *   instructions, mixed content and repeated members are refused; depth, element count and
 *   text size are bounded, as is every answer's size.
 * - Each converted answer is handed to ferry_audit_add_input with its format named (aws-authz,
 *   aws-credreport-json, aws-last-accessed), so pages are merged and rules run exactly as for
 *   files. Memory: one page or one batch of usage data at a time, plus what the loaders keep.
 * - Service-last-accessed is asynchronous: up to usage_jobs jobs are outstanding at once and
 *   polled with a growing pause, all within usage_wait_s. An endpoint that does not implement
 *   the call (moto) leaves AWS-OP-011 as the info note, naming why.
 */
#include "config.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <expat.h>

#include "audit-internal.h"
#include "aws-live.h"
#include "basic/buf.h"
#include "basic/clock.h"
#include "basic/errbuf.h"
#include "basic/macro.h"
#include "ferry/cloud.h"
#include "ferry/error.h"

#define IAM_VERSION "2010-05-08"
#define IAM_REGION "us-east-1" /* IAM is global; the aws partition signs it for us-east-1 */
#define IAM_DEFAULT_ENDPOINT "https://iam.amazonaws.com"
#define LIVE_AUTHZ_MAX ((size_t)32 * 1024 * 1024) /* one GetAccountAuthorizationDetails page */
#define LIVE_ANSWER_MAX ((size_t)8 * 1024 * 1024) /* any other answer */
#define LIVE_MARKER_MAX 4096
#define LIVE_USAGE_BATCH 100    /* principals' usage data handed to the loader at once */
#define LIVE_USAGE_MAX_PAGES 20 /* pages of one GetServiceLastAccessedDetails */
#define LIVE_POLL_MIN_MS 200
#define LIVE_POLL_MAX_MS 2000
#define LIVE_TIMEOUT_MS 30000 /* one HTTP call */

/* ---- XML to JSON ------------------------------------------------------------------------ */

typedef struct xml_frame {
    char name[128];
    json_t *value; /* NULL until the first child element: then an object or an array */
    ferry_buf text;
} xml_frame;

typedef struct xml_ctx {
    XML_Parser parser;
    xml_frame stack[AUDIT_XML_MAX_DEPTH];
    int depth;
    size_t elements;
    json_t *root; /* the value of the closed root element */
    char root_name[160];
    int err;
    char *errbuf;
    size_t errlen;
} xml_ctx;

static void xml_fail(xml_ctx *x, int code, const char *fmt, ...) _printf_(3, 4);

/* Record the first error (at the parser's line) and stop the parser. */
static void xml_fail(xml_ctx *x, int code, const char *fmt, ...)
{
    char msg[256];
    va_list ap;

    if (x->err)
        return;
    x->err = code;
    va_start(ap, fmt);
    (void)vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    (void)ferry_errbuf_set(x->errbuf, x->errlen, code, "line %lu: %s",
                           (unsigned long)XML_GetCurrentLineNumber(x->parser), msg);
    XML_StopParser(x->parser, XML_FALSE);
}

static bool blank(const ferry_buf *b)
{
    for (size_t i = 0; i < b->len; i++)
        if (!strchr(" \t\r\n", b->data[i]))
            return false;
    return true;
}

/* Members the API types (the loaders test them as such); all others are strings. */
static const char *const xml_bools[] = {"IsTruncated", "IsDefaultVersion", "IsAttachable", NULL};
static const char *const xml_ints[] = {"AttachmentCount", "PermissionsBoundaryUsageCount",
                                       "TotalAuthenticatedEntities", "MaxSessionDuration", NULL};
/* Lists and objects as the CLI prints them when empty (<RolePolicyList/>). */
static const char *const xml_lists[] = {
    "Policies", "AttachedManagedPolicies", "Tags",
    "Roles",    "ServicesLastAccessed",    "TrackedActionsLastAccessed",
    NULL};
static const char *const xml_objects[] = {"RoleLastUsed", "PermissionsBoundary", NULL};

static bool name_in(const char *name, const char *const *list)
{
    for (size_t i = 0; list[i]; i++)
        if (strcmp(name, list[i]) == 0)
            return true;
    return false;
}

static bool list_name(const char *name)
{
    size_t n = strlen(name);
    return name_in(name, xml_lists) || (n > 4 && strcmp(name + n - 4, "List") == 0);
}

/* The JSON value of a closed leaf element. NULL with x->err set on a bad value. */
static json_t *leaf_value(xml_ctx *x, xml_frame *f)
{
    const char *t = f->text.data ? f->text.data : "";

    if (name_in(f->name, xml_bools)) {
        if (strcmp(t, "true") == 0 || strcmp(t, "false") == 0)
            return json_boolean(t[0] == 't');
        xml_fail(x, -FERRY_EMALFORMED, "<%s>: expected true or false", f->name);
        return NULL;
    }
    if (name_in(f->name, xml_ints)) {
        char *end = NULL;
        long long v;
        errno = 0;
        v = strtoll(t, &end, 10);
        if (*t && !errno && end && !*end && (t[0] == '-' || (t[0] >= '0' && t[0] <= '9')))
            return json_integer(v);
        xml_fail(x, -FERRY_EMALFORMED, "<%s>: expected an integer", f->name);
        return NULL;
    }
    if (blank(&f->text) && list_name(f->name))
        return json_array();
    if (blank(&f->text) && name_in(f->name, xml_objects))
        return json_object();
    return json_stringn(t, f->text.len);
}

static void XMLCALL xml_start(void *ud, const XML_Char *name, const XML_Char **attrs)
{
    xml_ctx *x = ud;
    xml_frame *parent = x->depth ? &x->stack[x->depth - 1] : NULL, *f;
    bool member = strcmp(name, "member") == 0;

    (void)attrs; /* xmlns only; nothing of IAM's answers is in an attribute */
    if (x->err)
        return;
    if (x->depth >= AUDIT_XML_MAX_DEPTH) {
        xml_fail(x, -FERRY_ETOOBIG, "elements nested deeper than %d", AUDIT_XML_MAX_DEPTH);
        return;
    }
    if (++x->elements > AUDIT_XML_MAX_ELEMENTS) {
        xml_fail(x, -FERRY_ETOOBIG, "more than %d elements", AUDIT_XML_MAX_ELEMENTS);
        return;
    }
    if (strlen(name) >= sizeof(f->name)) {
        xml_fail(x, -FERRY_EMALFORMED, "an element name longer than 127 bytes");
        return;
    }
    if (!parent && x->root) {
        xml_fail(x, -FERRY_EMALFORMED, "more than one root element");
        return;
    }
    if (parent) {
        if (!blank(&parent->text)) {
            xml_fail(x, -FERRY_EMALFORMED, "<%s>: text mixed with elements", parent->name);
            return;
        }
        if (!parent->value) {
            parent->value = member ? json_array() : json_object();
            if (!parent->value) {
                xml_fail(x, -ENOMEM, "out of memory");
                return;
            }
        }
        if (json_is_array(parent->value) != member) {
            xml_fail(x, -FERRY_EMALFORMED, "<%s>: <member> mixed with other elements",
                     parent->name);
            return;
        }
    }
    f = &x->stack[x->depth++];
    memcpy(f->name, name, strlen(name) + 1);
    f->value = NULL;
    ferry_buf_init(&f->text, AUDIT_XML_MAX_TEXT, false);
}

static void XMLCALL xml_end(void *ud, const XML_Char *name)
{
    xml_ctx *x = ud;
    xml_frame *f, *parent;
    json_t *v;

    (void)name; /* expat checks that it matches */
    if (x->err || x->depth == 0)
        return;
    f = &x->stack[x->depth - 1];
    if (f->value && !blank(&f->text)) {
        xml_fail(x, -FERRY_EMALFORMED, "<%s>: text mixed with elements", f->name);
        return;
    }
    v = f->value ? f->value : leaf_value(x, f);
    f->value = NULL;
    ferry_buf_release(&f->text);
    x->depth--;
    if (!v) {
        if (!x->err)
            xml_fail(x, -ENOMEM, "out of memory");
        return;
    }
    if (x->depth == 0) {
        x->root = v;
        (void)snprintf(x->root_name, sizeof(x->root_name), "%s", f->name);
        return;
    }
    parent = &x->stack[x->depth - 1];
    if (json_is_array(parent->value)) {
        if (json_array_append_new(parent->value, v) < 0)
            xml_fail(x, -ENOMEM, "out of memory");
        return;
    }
    if (json_object_get(parent->value, f->name)) {
        json_decref(v);
        {
            xml_fail(x, -FERRY_EMALFORMED, "<%s> repeated", f->name);
            return;
        }
    }
    if (json_object_set_new(parent->value, f->name, v) < 0)
        xml_fail(x, -ENOMEM, "out of memory");
}

static void XMLCALL xml_text(void *ud, const XML_Char *s, int len)
{
    xml_ctx *x = ud;
    int r;

    if (x->err || x->depth == 0 || len <= 0)
        return;
    r = ferry_buf_append(&x->stack[x->depth - 1].text, s, (size_t)len);
    if (r == -E2BIG)
        xml_fail(x, -FERRY_ETOOBIG, "<%s>: text over %u bytes", x->stack[x->depth - 1].name,
                 AUDIT_XML_MAX_TEXT);
    else if (r < 0)
        xml_fail(x, -ENOMEM, "out of memory");
}

static void XMLCALL xml_doctype(void *ud, const XML_Char *name, const XML_Char *sysid,
                                const XML_Char *pubid, int has_internal_subset)
{
    (void)name;
    (void)sysid;
    (void)pubid;
    (void)has_internal_subset;
    xml_fail(ud, -FERRY_EMALFORMED, "a DOCTYPE is refused");
}

static void XMLCALL xml_entity_decl(void *ud, const XML_Char *name, int is_param,
                                    const XML_Char *value, int value_length, const XML_Char *base,
                                    const XML_Char *sysid, const XML_Char *pubid,
                                    const XML_Char *notation)
{
    (void)name;
    (void)is_param;
    (void)value;
    (void)value_length;
    (void)base;
    (void)sysid;
    (void)pubid;
    (void)notation;
    xml_fail(ud, -FERRY_EMALFORMED, "an entity declaration is refused");
}

static void XMLCALL xml_skipped_entity(void *ud, const XML_Char *name, int is_param)
{
    (void)name;
    (void)is_param;
    xml_fail(ud, -FERRY_EMALFORMED, "an entity reference is refused");
}

static void XMLCALL xml_pi(void *ud, const XML_Char *target, const XML_Char *data)
{
    (void)target;
    (void)data;
    xml_fail(ud, -FERRY_EMALFORMED, "a processing instruction is refused");
}

int audit_aws_xml_to_json(const char *xml, size_t len, const char *action, json_t **ret,
                          char *errbuf, size_t errlen)
{
    xml_ctx x = {.errbuf = errbuf, .errlen = errlen};
    char want[160];
    json_t *res;
    int r = 0;

    if (!xml || !action || !ret || strlen(action) > 128)
        return -EINVAL;
    x.parser = XML_ParserCreate(NULL);
    if (!x.parser)
        return -ENOMEM;
    XML_SetUserData(x.parser, &x);
    XML_SetElementHandler(x.parser, xml_start, xml_end);
    XML_SetCharacterDataHandler(x.parser, xml_text);
    XML_SetStartDoctypeDeclHandler(x.parser, xml_doctype);
    XML_SetEntityDeclHandler(x.parser, xml_entity_decl);
    XML_SetSkippedEntityHandler(x.parser, xml_skipped_entity);
    XML_SetProcessingInstructionHandler(x.parser, xml_pi);
    (void)XML_SetParamEntityParsing(x.parser, XML_PARAM_ENTITY_PARSING_NEVER);
    /* Fed in slices, as a stream: expat keeps only what one unfinished token needs. */
    for (size_t off = 0; !x.err;) {
        size_t n = len - off < 65536 ? len - off : 65536;
        bool final = off + n == len;
        if (XML_Parse(x.parser, xml + off, (int)n, final) == XML_STATUS_ERROR) {
            if (!x.err) {
                enum XML_Error e = XML_GetErrorCode(x.parser);
                x.err = e == XML_ERROR_NO_MEMORY ? -ENOMEM : -FERRY_EMALFORMED;
                (void)ferry_errbuf_set(errbuf, errlen, x.err, "line %lu: malformed XML: %s",
                                       (unsigned long)XML_GetCurrentLineNumber(x.parser),
                                       XML_ErrorString(e));
            }
            break;
        }
        off += n;
        if (final)
            break;
    }
    r = x.err;
    if (r == 0 && !x.root)
        r = ferry_errbuf_set(errbuf, errlen, -FERRY_EMALFORMED, "no document element");
    (void)snprintf(want, sizeof(want), "%sResponse", action);
    if (r == 0 && (strcmp(x.root_name, want) != 0 || !json_is_object(x.root)))
        r = ferry_errbuf_set(errbuf, errlen, -FERRY_EMALFORMED,
                             "expected a <%s> document, got <%.60s>", want, x.root_name);
    (void)snprintf(want, sizeof(want), "%sResult", action);
    res = r == 0 ? json_object_get(x.root, want) : NULL;
    if (r == 0 && !json_is_object(res))
        r = ferry_errbuf_set(errbuf, errlen, -FERRY_EMALFORMED, "<%sResponse> has no <%s>", action,
                             want);
    if (r == 0)
        *ret = json_incref(res);
    for (int i = 0; i < x.depth; i++) {
        json_decref(x.stack[i].value);
        ferry_buf_release(&x.stack[i].text);
    }
    json_decref(x.root);
    XML_ParserFree(x.parser);
    return r;
}

/* ---- the live run ----------------------------------------------------------------------- */

typedef struct live {
    ferry_audit *a;
    ferry_aws_provider *p;
    const char *endpoint;
    char host[300]; /* for the inputs' names */
    ferry_audit_aws_live_options o;
    json_t *principals; /* ARNs of the roles and users, for service-last-accessed */
    char *errbuf;
    size_t errlen;
} live;

/* One Query call: form pairs (name, value; NULL-terminated), its answer converted. When
 * ret_resp is given, an HTTP error answer is handed back there (the caller releases it). */
static int live_call(live *l, const char *action, const char *const *pairs, size_t max,
                     json_t **ret, ferry_http_response *ret_err)
{
    ferry_http_response resp = {0};
    ferry_buf form;
    char why[256];
    int r;

    ferry_buf_init(&form, 64 * 1024, false);
    r = ferry_buf_append_form(&form, "Action", action);
    if (r == 0)
        r = ferry_buf_append_form(&form, "Version", IAM_VERSION);
    for (size_t i = 0; r == 0 && pairs && pairs[i]; i += 2)
        r = ferry_buf_append_form(&form, pairs[i], pairs[i + 1]);
    if (r < 0) {
        ferry_buf_release(&form);
        return r == -E2BIG ? ferry_errbuf_set(l->errbuf, l->errlen, -FERRY_ETOOBIG,
                                              "IAM %s: request too large", action)
                           : -ENOMEM;
    }
    r = ferry_aws_query_call(l->p, l->endpoint, IAM_REGION, "iam", action, form.data, form.len, max,
                             &resp, l->errbuf, l->errlen);
    ferry_buf_release(&form);
    if (r < 0) {
        if (ret_err && resp.status)
            *ret_err = resp;
        else
            ferry_http_response_release(&resp);
        return r;
    }
    r = audit_aws_xml_to_json(resp.body, resp.body_len, action, ret, why, sizeof(why));
    ferry_http_response_release(&resp);
    if (r < 0 && r != -ENOMEM)
        r = ferry_errbuf_set(l->errbuf, l->errlen, r, "IAM %s: answer: %s", action, why);
    return r;
}

/* Hand a converted answer to the loader of format, as the input named name. */
static int live_add(live *l, const char *name, const json_t *doc, const char *format)
{
    char *text = audit_json_dumps(doc, JSON_COMPACT);
    char label[400], why[1024];
    int r;

    if (!text)
        return -ENOMEM;
    (void)snprintf(label, sizeof(label), "aws-live:%s/%s", l->host, name);
    r = ferry_audit_add_input(l->a, label, text, strlen(text), format, why, sizeof(why));
    free(text);
    if (r < 0 && r != -ENOMEM)
        r = ferry_errbuf_set(l->errbuf, l->errlen, r, "%s", why);
    return r;
}

static void pause_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

/* Roles (but service-linked ones, which no rule looks at) and users of one page. */
static int collect_principals(live *l, const json_t *page)
{
    static const char *const lists[] = {"UserDetailList", "RoleDetailList"};
    for (size_t k = 0; k < ARRAY_SIZE(lists); k++) {
        json_t *v;
        size_t i;
        json_array_foreach(json_object_get(page, lists[k]), i, v)
        {
            const char *arn = json_string_value(json_object_get(v, "Arn"));
            const char *path = json_string_value(json_object_get(v, "Path"));
            const char *name = json_string_value(json_object_get(v, "RoleName"));
            if (!arn || (path && strstr(path, "/aws-service-role/")) ||
                (name && strncmp(name, "AWSServiceRoleFor", 17) == 0))
                continue;
            if (json_array_append_new(l->principals, json_string(arn)) < 0)
                return -ENOMEM;
        }
    }
    return 0;
}

static int live_authz(live *l)
{
    char marker[LIVE_MARKER_MAX + 1] = "";
    unsigned page;
    int r = 0;

    for (page = 1; page <= l->o.max_pages; page++) {
        const char *pairs[] = {"MaxItems", "1000", marker[0] ? "Marker" : NULL, marker, NULL};
        char name[64];
        json_t *doc = NULL;
        bool more;

        r = live_call(l, "GetAccountAuthorizationDetails", pairs, LIVE_AUTHZ_MAX, &doc, NULL);
        if (r < 0)
            return r;
        more = json_is_true(json_object_get(doc, "IsTruncated"));
        if (more) {
            const char *m = json_string_value(json_object_get(doc, "Marker"));
            if (!m || !*m || strlen(m) > LIVE_MARKER_MAX || strcmp(m, marker) == 0) {
                json_decref(doc);
                return ferry_errbuf_set(l->errbuf, l->errlen, -FERRY_EMALFORMED,
                                        "IAM GetAccountAuthorizationDetails: page %u says more "
                                        "follow but gives no new Marker",
                                        page);
            }
            memcpy(marker, m, strlen(m) + 1);
        }
        (void)snprintf(name, sizeof(name), "GetAccountAuthorizationDetails/%u", page);
        r = collect_principals(l, doc);
        if (r == 0)
            r = live_add(l, name, doc, "aws-authz");
        json_decref(doc);
        if (r < 0 || !more)
            return r;
    }
    return ferry_errbuf_set(l->errbuf, l->errlen, -FERRY_ETOOBIG,
                            "IAM GetAccountAuthorizationDetails: more than %u pages",
                            l->o.max_pages);
}

static int live_credreport(live *l)
{
    int64_t deadline = ferry_mono_ms() + (int64_t)l->o.report_wait_s * 1000;
    long wait = LIVE_POLL_MIN_MS;
    json_t *doc = NULL, *out;
    int r;

    for (;;) {
        const char *state;
        r = live_call(l, "GenerateCredentialReport", NULL, LIVE_ANSWER_MAX, &doc, NULL);
        if (r < 0)
            return r;
        state = json_string_value(json_object_get(doc, "State"));
        if (state && strcmp(state, "COMPLETE") == 0)
            break;
        bool running = state && (strcmp(state, "STARTED") == 0 || strcmp(state, "INPROGRESS") == 0);
        json_decref(doc);
        doc = NULL;
        if (!running)
            return ferry_errbuf_set(l->errbuf, l->errlen, -FERRY_EMALFORMED,
                                    "IAM GenerateCredentialReport: State is not STARTED, "
                                    "INPROGRESS or COMPLETE");
        if (ferry_mono_ms() + wait > deadline)
            return ferry_errbuf_set(l->errbuf, l->errlen, -ETIMEDOUT,
                                    "IAM GenerateCredentialReport: the report was not ready "
                                    "within %u s",
                                    l->o.report_wait_s);
        pause_ms(wait);
        wait = wait * 2 > LIVE_POLL_MAX_MS ? LIVE_POLL_MAX_MS : wait * 2;
    }
    json_decref(doc);
    r = live_call(l, "GetCredentialReport", NULL, LIVE_ANSWER_MAX, &out, NULL);
    if (r < 0)
        return r;
    r = live_add(l, "GetCredentialReport", out, "aws-credreport-json");
    json_decref(out);
    return r;
}

/* An answer saying the endpoint has no such call (an emulator): HTTP 501, an InvalidAction /
 * NotImplemented error, or a 404/5xx that is not an AWS error document at all. */
static bool not_implemented(const ferry_http_response *resp)
{
    const char *b = resp->body ? resp->body : "";
    bool aws_error = strstr(b, "<ErrorResponse") || strstr(b, "<Error>");

    if (resp->status == 501)
        return true;
    if (aws_error)
        return strstr(b, "<Code>InvalidAction</Code>") || strstr(b, "<Code>NotImplemented</Code>");
    return resp->status == 404 || resp->status >= 500;
}

typedef struct usage_job {
    const char *arn; /* borrowed from l->principals */
    char job_id[128];
} usage_job;

/* Every page of one completed job's details, as {"Arn": arn, ...details} appended to batch.
 * *ret_done false while the job runs. */
static int usage_poll(live *l, const usage_job *j, json_t *batch, bool *ret_done)
{
    json_t *all = NULL, *doc = NULL;
    char marker[LIVE_MARKER_MAX + 1] = "";
    int r = 0;

    *ret_done = false;
    for (unsigned page = 1;; page++) {
        const char *pairs[] = {"JobId", j->job_id, "MaxItems", "1000", marker[0] ? "Marker" : NULL,
                               marker,  NULL};
        const char *status, *m;
        r = live_call(l, "GetServiceLastAccessedDetails", pairs, LIVE_ANSWER_MAX, &doc, NULL);
        if (r < 0)
            break;
        status = json_string_value(json_object_get(doc, "JobStatus"));
        if (status && strcmp(status, "IN_PROGRESS") == 0 && page == 1) {
            json_decref(doc);
            return 0;
        }
        if (!status || strcmp(status, "COMPLETED") != 0) {
            r = ferry_errbuf_set(l->errbuf, l->errlen, -FERRY_EFETCH,
                                 "IAM GetServiceLastAccessedDetails: the job for %s ended %s",
                                 j->arn, status && strlen(status) < 20 ? status : "unexpectedly");
            break;
        }
        if (!all) {
            all = json_incref(doc);
            if (json_object_set_new(all, "Arn", json_string(j->arn)) < 0) {
                r = -ENOMEM;
                break;
            }
        } else if (json_array_extend(json_object_get(all, "ServicesLastAccessed"),
                                     json_object_get(doc, "ServicesLastAccessed")) < 0) {
            r = ferry_errbuf_set(l->errbuf, l->errlen, -FERRY_EMALFORMED,
                                 "IAM GetServiceLastAccessedDetails: page %u for %s has no "
                                 "ServicesLastAccessed list",
                                 page, j->arn);
            break;
        }
        m = json_string_value(json_object_get(doc, "Marker"));
        if (!json_is_true(json_object_get(doc, "IsTruncated")))
            break;
        if (!m || !*m || strlen(m) > LIVE_MARKER_MAX || strcmp(m, marker) == 0 ||
            page >= LIVE_USAGE_MAX_PAGES) {
            r = ferry_errbuf_set(l->errbuf, l->errlen, -FERRY_EMALFORMED,
                                 "IAM GetServiceLastAccessedDetails: %s: more than %d pages or "
                                 "no new Marker",
                                 j->arn, LIVE_USAGE_MAX_PAGES);
            break;
        }
        memcpy(marker, m, strlen(m) + 1);
        json_decref(doc);
        doc = NULL;
    }
    json_decref(doc);
    if (r == 0) {
        json_object_del(all, "IsTruncated");
        json_object_del(all, "Marker");
        if (json_array_append(batch, all) < 0)
            r = -ENOMEM;
        *ret_done = r == 0;
    }
    json_decref(all);
    return r;
}

static int usage_flush(live *l, json_t *batch, unsigned *n_batches)
{
    char name[64];
    int r;

    if (json_array_size(batch) == 0)
        return 0;
    (void)snprintf(name, sizeof(name), "GetServiceLastAccessedDetails/%u", ++*n_batches);
    r = live_add(l, name, batch, "aws-last-accessed");
    json_array_clear(batch);
    return r;
}

static int live_usage(live *l)
{
    size_t n = json_array_size(l->principals), next = 0, running = 0;
    int64_t deadline = ferry_mono_ms() + (int64_t)l->o.usage_wait_s * 1000;
    usage_job *jobs = NULL;
    json_t *batch = NULL;
    unsigned batches = 0;
    long wait = LIVE_POLL_MIN_MS;
    char reason[160];
    int r = 0;

    if (n == 0)
        return 0;
    if (n > l->o.max_principals) {
        (void)snprintf(reason, sizeof(reason),
                       "%zu roles and users, more than the %u service-last-accessed is fetched "
                       "for",
                       n, l->o.max_principals);
        return audit_aws_usage_unavailable(l->a, reason);
    }
    jobs = calloc(l->o.usage_jobs, sizeof(*jobs));
    batch = json_array();
    if (!jobs || !batch) {
        r = -ENOMEM;
        goto out;
    }
    while (r == 0 && (next < n || running > 0)) {
        /* Start jobs up to the bound. */
        while (next < n && running < l->o.usage_jobs) {
            const char *arn = json_string_value(json_array_get(l->principals, next));
            const char *pairs[] = {"Arn", arn, NULL};
            ferry_http_response err = {0};
            json_t *doc = NULL;
            const char *id;
            r = live_call(l, "GenerateServiceLastAccessedDetails", pairs, LIVE_ANSWER_MAX, &doc,
                          &err);
            if (r < 0 && next == 0 && err.status && not_implemented(&err)) {
                ferry_http_response_release(&err);
                r = audit_aws_usage_unavailable(
                    l->a, "the IAM endpoint does not implement GenerateServiceLastAccessedDetails");
                goto out;
            }
            ferry_http_response_release(&err);
            if (r < 0)
                goto out;
            id = json_string_value(json_object_get(doc, "JobId"));
            if (!id || !*id || strlen(id) >= sizeof(jobs[0].job_id)) {
                json_decref(doc);
                r = ferry_errbuf_set(l->errbuf, l->errlen, -FERRY_EMALFORMED,
                                     "IAM GenerateServiceLastAccessedDetails: no JobId for %s",
                                     arn);
                goto out;
            }
            jobs[running].arn = arn;
            memcpy(jobs[running].job_id, id, strlen(id) + 1);
            json_decref(doc);
            running++;
            next++;
        }
        /* Poll every running job once; keep those still in progress. */
        size_t kept = 0, done_now = 0;
        for (size_t i = 0; i < running; i++) {
            bool done = false;
            r = usage_poll(l, &jobs[i], batch, &done);
            if (r < 0)
                goto out;
            if (!done)
                jobs[kept++] = jobs[i];
            else
                done_now++;
        }
        running = kept;
        if (json_array_size(batch) >= LIVE_USAGE_BATCH) {
            r = usage_flush(l, batch, &batches);
            if (r < 0)
                goto out;
        }
        if (running == 0 || done_now > 0) {
            wait = LIVE_POLL_MIN_MS;
            continue;
        }
        if (ferry_mono_ms() + wait > deadline) {
            r = ferry_errbuf_set(l->errbuf, l->errlen, -ETIMEDOUT,
                                 "IAM GetServiceLastAccessedDetails: %zu jobs not completed "
                                 "within %u s",
                                 running + (n - next), l->o.usage_wait_s);
            goto out;
        }
        pause_ms(wait);
        wait = wait * 2 > LIVE_POLL_MAX_MS ? LIVE_POLL_MAX_MS : wait * 2;
    }
    r = usage_flush(l, batch, &batches);
out:
    free(jobs);
    json_decref(batch);
    return r;
}

static const char *env_region(void)
{
    const char *r = secure_getenv("AWS_REGION");
    if (!r || !*r)
        r = secure_getenv("AWS_DEFAULT_REGION");
    return r && *r ? r : "us-east-1";
}

FERRY_EXPORT int ferry_audit_aws_live(ferry_audit *a, const ferry_audit_aws_live_options *opts,
                                      char *errbuf, size_t errlen)
{
    live l = {.a = a, .errbuf = errbuf, .errlen = errlen};
    ferry_aws_config cfg = {0};
    const char *h, *end, *sts;
    int r;

    if (!a)
        return -EINVAL;
    if (opts)
        l.o = *opts;
    if (!l.o.max_pages)
        l.o.max_pages = 1000;
    if (!l.o.report_wait_s)
        l.o.report_wait_s = 120;
    if (!l.o.usage_wait_s)
        l.o.usage_wait_s = 600;
    if (!l.o.usage_jobs)
        l.o.usage_jobs = 8;
    if (!l.o.max_principals)
        l.o.max_principals = 10000;
    l.endpoint = l.o.endpoint_url ? l.o.endpoint_url : IAM_DEFAULT_ENDPOINT;
    h = strstr(l.endpoint, "://");
    h = h ? h + 3 : l.endpoint;
    end = h + strcspn(h, "/?#");
    (void)snprintf(l.host, sizeof(l.host), "%.*s", (int)(end - h < 256 ? end - h : 256), h);

    cfg.region = l.o.region ? l.o.region : env_region();
    /* STS (web identity credentials) at the SDKs' service-specific endpoint variable. */
    sts = secure_getenv("AWS_ENDPOINT_URL_STS");
    cfg.sts_endpoint = sts && *sts ? sts : NULL;
    cfg.http.total_timeout_ms = LIVE_TIMEOUT_MS;
    /* Plain http only to a loopback emulator the caller named (ferry_http_check_url refuses
     * any other host). */
    cfg.http.allow_http_loopback =
        (l.o.endpoint_url && strncmp(l.endpoint, "http://", 7) == 0) ||
        (cfg.sts_endpoint && strncmp(cfg.sts_endpoint, "http://", 7) == 0);
    r = ferry_aws_provider_new(&cfg, &l.p, errbuf, errlen);
    if (r < 0)
        return r;
    l.principals = json_array();
    if (!l.principals) {
        r = -ENOMEM;
        goto out;
    }
    r = live_authz(&l);
    if (r == 0)
        r = live_credreport(&l);
    if (r == 0)
        r = live_usage(&l);
out:
    json_decref(l.principals);
    ferry_aws_provider_free(l.p);
    return r;
}
