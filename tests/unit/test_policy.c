/* tests/unit/test_policy.c - unit tests of the policy module (include/ferry/policy.h).
 *
 * Covers: the glob language; every example policy in policies/ (loads, grants to a matching
 * identity, refuses a near miss); deny by default; matching by issuer, subject (exact, glob),
 * audience and claims (exact, glob, one-of, nested, arrays, typed); downscoping and
 * invalid_scope / invalid_target; union of grants with the smallest TTL; TOTP step-up;
 * the index against a linear scan over thousands of random policies; every kind of broken
 * policy file with file and line; directory rules; reload keeping the previous set; explain;
 * concurrent decisions during swaps.
 *
 * Policy documents are written with ' for " (J() swaps them) and '\n' where lines matter.
 */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "ferry/error.h"
#include "ferry/policy.h"
#include "testutil.h"

/* ---- helpers ------------------------------------------------------------------------------- */

/* A new copy of s with every ' replaced by ". */
static char *J(const char *s)
{
    char *o = strdup(s);
    cr_assert_not_null(o);
    for (char *p = o; *p; p++)
        if (*p == '\'')
            *p = '"';
    return o;
}

static ferry_policy_set *load_docs(const char *const *docs, size_t n)
{
    ferry_policy_problems *pr = NULL;
    ferry_policy_builder *b = NULL;
    ferry_policy_set *set = NULL;
    int r;

    cr_assert_eq(ferry_policy_problems_new(&pr), 0);
    cr_assert_eq(ferry_policy_builder_new(&b), 0);
    for (size_t i = 0; i < n; i++) {
        char name[32], *d = J(docs[i]);
        snprintf(name, sizeof(name), "doc%zu.json", i);
        r = ferry_policy_builder_add_buffer(b, name, d, strlen(d), pr);
        free(d);
        if (r != 0) {
            const ferry_policy_problem *p = ferry_policy_problems_get(pr, 0);
            cr_assert_fail("doc %zu refused (%d): %s:%u: %s", i, r, p ? p->file : "?",
                           p ? p->line : 0, p ? p->reason : "?");
        }
    }
    r = ferry_policy_builder_finish(b, &set, pr);
    cr_assert_eq(r, 0, "finish: %d", r);
    cr_assert_eq(ferry_policy_problems_count(pr), 0);
    ferry_policy_builder_free(b);
    ferry_policy_problems_free(pr);
    return set;
}

static ferry_policy_set *load1(const char *doc)
{
    return load_docs(&doc, 1);
}

/* Load one document that must be refused; returns the problems (caller frees). */
static ferry_policy_problems *refuse_docs(const char *const *docs, size_t n)
{
    ferry_policy_problems *pr = NULL;
    ferry_policy_builder *b = NULL;
    ferry_policy_set *set = NULL;
    int r;

    cr_assert_eq(ferry_policy_problems_new(&pr), 0);
    cr_assert_eq(ferry_policy_builder_new(&b), 0);
    for (size_t i = 0; i < n; i++) {
        char name[32], *d = J(docs[i]);
        snprintf(name, sizeof(name), "doc%zu.json", i);
        (void)ferry_policy_builder_add_buffer(b, name, d, strlen(d), pr);
        free(d);
    }
    r = ferry_policy_builder_finish(b, &set, pr);
    cr_assert_eq(r, -FERRY_ECONFIG, "a broken document was accepted");
    cr_assert_null(set);
    cr_assert_gt(ferry_policy_problems_count(pr), 0);
    ferry_policy_builder_free(b);
    return pr;
}

/* The document must be refused with a problem at line naming needle (and file doc0.json). */
static void expect_problem(const char *doc, unsigned line, const char *needle)
{
    ferry_policy_problems *pr = refuse_docs(&doc, 1);
    bool found = false;
    char all[4096] = "";

    for (size_t i = 0; i < ferry_policy_problems_count(pr); i++) {
        const ferry_policy_problem *p = ferry_policy_problems_get(pr, i);
        size_t l = strlen(all);
        snprintf(all + l, sizeof(all) - l, "\n  %s:%u: %s", p->file, p->line, p->reason);
        if (p->line == line && strstr(p->reason, needle) && strcmp(p->file, "doc0.json") == 0)
            found = true;
    }
    cr_assert(found, "no problem at line %u containing '%s'; got:%s", line, needle, all);
    ferry_policy_problems_free(pr);
}

/* A request built from compact strings: claims as a JSON text with ' quotes (or NULL),
 * audience of the token (one string or NULL), scopes and audiences space-separated. */
struct rq {
    ferry_policy_request req;
    json_t *claims, *aud;
    char *sbuf, *abuf;
    const char *sv[32], *av[32];
};

static size_t split(char *s, const char **v, size_t max)
{
    char *save = NULL;
    size_t n = 0;

    for (char *t = strtok_r(s, " ", &save); t && n < max; t = strtok_r(NULL, " ", &save))
        v[n++] = t;
    return n;
}

static void rq_init(struct rq *q, const char *iss, const char *sub, const char *tok_aud,
                    const char *claims, const char *scopes, const char *auds, bool step_up)
{
    memset(q, 0, sizeof(*q));
    if (claims) {
        char *c = J(claims);
        json_error_t e;
        q->claims = json_loads(c, 0, &e);
        cr_assert_not_null(q->claims, "test claims: %s", e.text);
        free(c);
    }
    if (tok_aud)
        q->aud = json_pack("[s]", tok_aud);
    q->sbuf = strdup(scopes ? scopes : "");
    q->abuf = strdup(auds ? auds : "");
    q->req.issuer = iss;
    q->req.subject = sub;
    q->req.audience = q->aud;
    q->req.claims = q->claims;
    q->req.scopes = q->sv;
    q->req.n_scopes = split(q->sbuf, q->sv, 32);
    q->req.audiences = q->av;
    q->req.n_audiences = split(q->abuf, q->av, 32);
    q->req.step_up_totp = step_up;
}

static void rq_release(struct rq *q)
{
    json_decref(q->claims);
    json_decref(q->aud);
    free(q->sbuf);
    free(q->abuf);
}

/* Decide; returns the error code; *ret_grant set when granted (else NULL). */
static ferry_policy_error decide(const ferry_policy_set *set, struct rq *q,
                                 ferry_policy_grant **ret_grant, char *reason, size_t rlen)
{
    ferry_policy_grant *g = NULL;
    ferry_policy_refusal ref;
    int r = ferry_policy_decide(set, &q->req, &g, &ref);

    if (r == 0) {
        cr_assert_not_null(g);
        cr_assert_eq(ref.error, FERRY_POLICY_GRANTED);
    } else {
        cr_assert_eq(r, -FERRY_EREFUSED, "decide: %d", r);
        cr_assert_null(g);
        cr_assert_neq(ref.error, FERRY_POLICY_GRANTED);
        cr_assert(ref.reason[0], "a refusal has a reason");
    }
    if (reason)
        snprintf(reason, rlen, "%s", ref.reason);
    if (ret_grant)
        *ret_grant = g;
    else
        ferry_policy_grant_free(g);
    return ref.error;
}

static bool has(const char *const *v, size_t n, const char *s)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(v[i], s) == 0)
            return true;
    return false;
}

#define HDR "{'version':1,'policies':["
#define END "]}"
#define ISS "https://idp.test"

/* ---- glob ----------------------------------------------------------------------------------- */

Test(policy_glob, check)
{
    static const char *const good[] = { "*", "a*", "repo:org/*:ref:refs/heads/main", "a?c",
                                        "\\*literal\\?", "x\\[y\\]", "é*", "a*b*c" };
    static const char *const bad[] = { "", "abc\\", "a\\b", "a**", "[abc]", "a{b,c}", "a]",
                                       "tab\there", "\xff*" };
    char err[128];

    for (size_t i = 0; i < sizeof(good) / sizeof(*good); i++)
        cr_assert_eq(ferry_policy_glob_check(good[i], err, sizeof(err)), 0, "%s: %s", good[i],
                     err);
    for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
        cr_assert_eq(ferry_policy_glob_check(bad[i], err, sizeof(err)), -FERRY_EMALFORMED,
                     "accepted bad glob #%zu", i);
        cr_assert(err[0], "reason for bad glob #%zu", i);
    }
}

Test(policy_glob, match)
{
    static const struct {
        const char *p, *t;
        bool m;
    } cases[] = {
        { "*", "", true },
        { "*", "anything/at:all", true },
        { "a*", "a", true },
        { "a*", "ba", false },
        { "*b", "aab", true },
        { "*b", "aba", false },
        { "a?c", "abc", true },
        { "a?c", "ac", false },
        { "a?c", "aéc", true }, /* ? is one character, not one byte */
        { "a??c", "aéc", false },
        { "repo:org/*:ref:refs/heads/main", "repo:org/x:ref:refs/heads/main", true },
        { "repo:org/*:ref:refs/heads/main", "repo:org/x:ref:refs/heads/main2", false },
        { "repo:org/*:ref:refs/heads/main", "repo:org2/x:ref:refs/heads/main", false },
        { "\\*", "*", true },
        { "\\*", "a", false },
        { "a\\?", "a?", true },
        { "a\\?", "ab", false },
        { "*a*a*a*a*b", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", false },
        { "*x*", "abcxdef", true },
        { "a*b*c", "abbbbc", true },
        { "a*b*c", "acb", false },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(*cases); i++)
        cr_assert_eq(ferry_policy_glob_match(cases[i].p, cases[i].t), cases[i].m,
                     "'%s' vs '%s'", cases[i].p, cases[i].t);
}

/* ---- example policies ----------------------------------------------------------------------- */

static ferry_policy_set *load_examples(void)
{
    char *dir = tu_src_path("policies");
    ferry_policy_problems *pr = NULL;
    ferry_policy_set *set = NULL;
    int r;

    cr_assert_eq(ferry_policy_problems_new(&pr), 0);
    r = ferry_policy_load_dir(dir, &set, pr);
    if (r != 0) {
        const ferry_policy_problem *p = ferry_policy_problems_get(pr, 0);
        cr_assert_fail("policies/ does not load (%d): %s:%u: %s", r, p ? p->file : "?",
                       p ? p->line : 0, p ? p->reason : "?");
    }
    ferry_policy_problems_free(pr);
    free(dir);
    return set;
}

#define EKS "https://oidc.eks.us-west-2.amazonaws.com/id/5E3A1B0C7D2F4E6A8B9C0D1E2F3A4B5C"
#define FERRY_AUD "https://ferry.ml.example.com"
#define REGISTRY "https://registry.ml.example.com"

Test(policy_examples, all_load)
{
    ferry_policy_set *set = load_examples();
    cr_assert_eq(ferry_policy_set_count(set), 5, "policies/ holds 5 example policies");
    ferry_policy_set_unref(set);
}

Test(policy_examples, listed_with_set_get)
{
    ferry_policy_set *set = load_examples();
    ferry_policy_info p;
    bool trainer = false, inference = false;

    for (size_t i = 0; i < ferry_policy_set_count(set); i++) {
        cr_assert_eq(ferry_policy_set_get(set, i, &p), 0);
        cr_assert(p.id && p.file && p.line > 0 && p.issuer && p.subject);
        if (strcmp(p.id, "k8s-trainer") == 0) {
            trainer = true;
            cr_assert_str_eq(p.issuer, EKS);
            cr_assert_str_eq(p.subject, "system:serviceaccount:ml-training:trainer");
            cr_assert(!p.subject_glob);
            cr_assert(strstr(p.file, "k8s-training.json"), "%s", p.file);
            cr_assert_eq(p.n_aws, 1);
            cr_assert_str_eq(p.aws[0].role_arn, "arn:aws:iam::123456789012:role/ml/training-s3-rw");
            cr_assert_eq(p.n_secrets, 2);
            cr_assert_eq(p.n_gcp + p.n_azure, 0);
        } else if (strcmp(p.id, "inference-llm-server") == 0) {
            inference = true;
            cr_assert(p.subject_glob);
            cr_assert_str_eq(p.subject, "system:serviceaccount:inference:llm-server-*");
            cr_assert_eq(p.n_gcp, 1);
            cr_assert_str_eq(p.gcp[0], "llm-inference@ml-prod-417203.iam.gserviceaccount.com");
            cr_assert_eq(p.n_azure, 1);
            cr_assert_str_eq(p.azure[0].client_id, "9d4e8a27-1c3b-4f60-a5d2-7e81b0c4f9a6");
            cr_assert_str_eq(p.azure[0].tenant_id, "3f2b6c1e-9a4d-4e57-8c21-5d0e7b9a1f34");
        }
    }
    cr_assert(trainer && inference);
    cr_assert_eq(ferry_policy_set_get(set, ferry_policy_set_count(set), &p), -EINVAL);
    cr_assert_eq(ferry_policy_set_get(NULL, 0, &p), -EINVAL);
    cr_assert_eq(ferry_policy_set_get(set, 0, NULL), -EINVAL);
    ferry_policy_set_unref(set);
}

Test(policy_examples, kubernetes_training_job)
{
    ferry_policy_set *set = load_examples();
    const char *claims = "{'kubernetes.io':{'namespace':'ml-training','serviceaccount':"
                         "{'name':'trainer','uid':'3c1e'},'pod':{'name':'train-0'}}}";
    ferry_policy_grant *g;
    struct rq q;

    rq_init(&q, EKS, "system:serviceaccount:ml-training:trainer", FERRY_AUD, claims,
            "datasets:read checkpoints:write", NULL, false);
    cr_assert_eq(decide(set, &q, &g, NULL, 0), FERRY_POLICY_GRANTED);
    /* both policies match; the namespace-wide one contributes datasets:read and caps the TTL */
    cr_assert_eq(g->n_policies, 2);
    cr_assert_eq(g->ttl, 900);
    cr_assert_eq(g->n_audiences, 1);
    cr_assert_str_eq(g->audiences[0], REGISTRY);
    cr_assert_eq(g->n_aws, 1);
    cr_assert_str_eq(g->aws[0].role_arn, "arn:aws:iam::123456789012:role/ml/training-s3-rw");
    cr_assert_eq(g->n_secrets, 2);
    cr_assert(has(g->secrets, g->n_secrets, "vault:kv/data/ml-training/datasets/*"));
    cr_assert(has(g->scopes, g->n_scopes, "checkpoints:write"));
    ferry_policy_grant_free(g);
    rq_release(&q);

    /* another service account of the namespace: datasets:read only */
    rq_init(&q, EKS, "system:serviceaccount:ml-training:eval",  FERRY_AUD,
            "{'kubernetes.io':{'namespace':'ml-training','serviceaccount':{'name':'eval'}}}",
            "datasets:read checkpoints:write", NULL, false);
    cr_assert_eq(decide(set, &q, NULL, NULL, 0), FERRY_POLICY_INVALID_SCOPE);
    rq_release(&q);
    /* near miss: the namespace claim disagrees with the subject */
    rq_init(&q, EKS, "system:serviceaccount:ml-training:trainer", FERRY_AUD,
            "{'kubernetes.io':{'namespace':'default','serviceaccount':{'name':'trainer'}}}",
            "datasets:read", NULL, false);
    cr_assert_eq(decide(set, &q, NULL, NULL, 0), FERRY_POLICY_ACCESS_DENIED);
    rq_release(&q);
    ferry_policy_set_unref(set);
}

Test(policy_examples, inference_server)
{
    ferry_policy_set *set = load_examples();
    const char *iss = "https://kubernetes.default.svc.cluster.local";
    ferry_policy_grant *g;
    struct rq q;

    rq_init(&q, iss, "system:serviceaccount:inference:llm-server-7b", FERRY_AUD,
            "{'kubernetes.io':{'namespace':'inference','pod':{'name':'llm-server-7b-5d9f'}}}",
            "models:read", REGISTRY, false);
    cr_assert_eq(decide(set, &q, &g, NULL, 0), FERRY_POLICY_GRANTED);
    cr_assert_eq(g->ttl, 900);
    cr_assert_eq(g->n_gcp, 1);
    cr_assert_str_eq(g->gcp[0], "llm-inference@ml-prod-417203.iam.gserviceaccount.com");
    cr_assert_eq(g->n_azure, 1);
    ferry_policy_grant_free(g);
    rq_release(&q);
    /* asking for more than read is refused, never widened or cut */
    rq_init(&q, iss, "system:serviceaccount:inference:llm-server-7b", FERRY_AUD,
            "{'kubernetes.io':{'namespace':'inference','pod':{'name':'llm-server-7b-5d9f'}}}",
            "models:read models:publish", NULL, false);
    cr_assert_eq(decide(set, &q, NULL, NULL, 0), FERRY_POLICY_INVALID_SCOPE);
    rq_release(&q);
    /* a pod of another deployment */
    rq_init(&q, iss, "system:serviceaccount:inference:llm-server-7b", FERRY_AUD,
            "{'kubernetes.io':{'namespace':'inference','pod':{'name':'debug-shell'}}}",
            "models:read", NULL, false);
    cr_assert_eq(decide(set, &q, NULL, NULL, 0), FERRY_POLICY_ACCESS_DENIED);
    rq_release(&q);
    ferry_policy_set_unref(set);
}

Test(policy_examples, github_actions_pinned)
{
    ferry_policy_set *set = load_examples();
    const char *iss = "https://token.actions.githubusercontent.com";
    const char *good = "{'repository':'acme-ml/model-training','repository_owner':'acme-ml',"
                       "'ref':'refs/heads/main','event_name':'push','workflow_ref':"
                       "'acme-ml/model-training/.github/workflows/release.yml@refs/heads/main'}";
    const char *pr = "{'repository':'acme-ml/model-training','repository_owner':'acme-ml',"
                     "'ref':'refs/heads/main','event_name':'pull_request','workflow_ref':"
                     "'acme-ml/model-training/.github/workflows/release.yml@refs/heads/main'}";
    ferry_policy_grant *g;
    struct rq q;

    rq_init(&q, iss, "repo:acme-ml/model-training:ref:refs/heads/main", FERRY_AUD, good,
            "models:publish", NULL, false);
    cr_assert_eq(decide(set, &q, &g, NULL, 0), FERRY_POLICY_GRANTED);
    cr_assert_eq(g->n_scopes, 1);
    cr_assert_str_eq(g->scopes[0], "models:publish");
    cr_assert_eq(g->aws[0].session_duration, 900);
    ferry_policy_grant_free(g);
    rq_release(&q);
    /* another branch */
    rq_init(&q, iss, "repo:acme-ml/model-training:ref:refs/heads/dev", FERRY_AUD, good,
            "models:publish", NULL, false);
    cr_assert_eq(decide(set, &q, NULL, NULL, 0), FERRY_POLICY_ACCESS_DENIED);
    rq_release(&q);
    /* a pull_request event on main */
    rq_init(&q, iss, "repo:acme-ml/model-training:ref:refs/heads/main", FERRY_AUD, pr,
            "models:publish", NULL, false);
    cr_assert_eq(decide(set, &q, NULL, NULL, 0), FERRY_POLICY_ACCESS_DENIED);
    rq_release(&q);
    ferry_policy_set_unref(set);
}

Test(policy_examples, operator_needs_totp)
{
    ferry_policy_set *set = load_examples();
    const char *claims = "{'email':'ana@example.com','email_verified':true,"
                         "'groups':['staff','ml-platform-oncall']}";
    ferry_policy_grant *g;
    struct rq q;

    rq_init(&q, "https://login.example.com", "00u1ana", "ferry-cli", claims, "jobs:cancel",
            NULL, false);
    cr_assert_eq(decide(set, &q, NULL, NULL, 0), FERRY_POLICY_STEP_UP_REQUIRED);
    q.req.step_up_totp = true;
    cr_assert_eq(decide(set, &q, &g, NULL, 0), FERRY_POLICY_GRANTED);
    cr_assert(g->step_up);
    cr_assert_eq(g->ttl, 1800);
    ferry_policy_grant_free(g);
    rq_release(&q);
    /* not on call: denied even with the step-up */
    rq_init(&q, "https://login.example.com", "00u1bob", "ferry-cli",
            "{'email':'bob@example.com','email_verified':true,'groups':['staff']}",
            "jobs:cancel", NULL, true);
    cr_assert_eq(decide(set, &q, NULL, NULL, 0), FERRY_POLICY_ACCESS_DENIED);
    rq_release(&q);
    /* unverified e-mail: the boolean claim must be exactly true */
    rq_init(&q, "https://login.example.com", "00u1ana", "ferry-cli",
            "{'email':'ana@example.com','email_verified':'true','groups':['ml-platform-oncall']}",
            "jobs:cancel", NULL, true);
    cr_assert_eq(decide(set, &q, NULL, NULL, 0), FERRY_POLICY_ACCESS_DENIED);
    rq_release(&q);
    ferry_policy_set_unref(set);
}

/* ---- deny by default and matching ----------------------------------------------------------- */

static const char *basic_doc =
    HDR
    "{'id':'exact','match':{'issuer':'" ISS "','subject':'alice','audience':['ferry']},"
    " 'grant':{'scopes':['read'],'max_ttl':600}},"
    "{'id':'glob','match':{'issuer':'" ISS "','subject_glob':'svc-*'},"
    " 'grant':{'scopes':['read','write'],'audiences':['api'],'max_ttl':300}},"
    "{'id':'claims','match':{'issuer':'" ISS "','subject_glob':'*','claims':["
    "  {'claim':'team','exact':'ml'},"
    "  {'claim':['ctx','env'],'one_of':['prod','staging']},"
    "  {'claim':'repo','glob':'org/*'},"
    "  {'claim':'level','exact':3}]},"
    " 'grant':{'scopes':['deploy'],'max_ttl':120}}"
    END;

Test(policy_decide, deny_by_default)
{
    ferry_policy_set *set = load1(basic_doc);
    ferry_policy_grant *g = (ferry_policy_grant *)1;
    ferry_policy_refusal ref;
    struct rq q;

    /* unknown issuer */
    rq_init(&q, "https://other.test", "alice", "ferry", NULL, "read", NULL, false);
    cr_assert_eq(decide(set, &q, NULL, NULL, 0), FERRY_POLICY_ACCESS_DENIED);
    rq_release(&q);
    /* known issuer, nothing matches */
    rq_init(&q, ISS, "mallory", "ferry", NULL, "read", NULL, false);
    cr_assert_eq(decide(set, &q, NULL, NULL, 0), FERRY_POLICY_ACCESS_DENIED);
    /* an empty set (a store without policies) denies too */
    g = NULL;
    cr_assert_eq(ferry_policy_decide(NULL, &q.req, &g, &ref), -FERRY_EREFUSED);
    cr_assert_eq(ref.error, FERRY_POLICY_ACCESS_DENIED);
    cr_assert_null(g);
    /* invalid requests */
    q.req.subject = NULL;
    cr_assert_eq(ferry_policy_decide(set, &q.req, &g, &ref), -EINVAL);
    rq_release(&q);
    ferry_policy_set_unref(set);
}

Test(policy_decide, issuer_subject_audience)
{
    ferry_policy_set *set = load1(basic_doc);
    ferry_policy_grant *g;
    struct rq q;

    rq_init(&q, ISS, "alice", "ferry", NULL, "read", NULL, false);
    cr_assert_eq(decide(set, &q, &g, NULL, 0), FERRY_POLICY_GRANTED);
    cr_assert_eq(g->n_policies, 1);
    cr_assert_str_eq(g->policies[0], "exact");
    ferry_policy_grant_free(g);
    rq_release(&q);
    /* exact subject is exact: no prefix or case games */
    rq_init(&q, ISS, "alice2", "ferry", NULL, "read", NULL, false);
    cr_assert_eq(decide(set, &q, NULL, NULL, 0), FERRY_POLICY_ACCESS_DENIED);
    rq_release(&q);
    rq_init(&q, ISS, "Alice", "ferry", NULL, "read", NULL, false);
    cr_assert_eq(decide(set, &q, NULL, NULL, 0), FERRY_POLICY_ACCESS_DENIED);
    rq_release(&q);
    /* audience of the token must be one of the policy's */
    rq_init(&q, ISS, "alice", "other", NULL, "read", NULL, false);
    cr_assert_eq(decide(set, &q, NULL, NULL, 0), FERRY_POLICY_ACCESS_DENIED);
    rq_release(&q);
    rq_init(&q, ISS, "alice", NULL, NULL, "read", NULL, false);
    cr_assert_eq(decide(set, &q, NULL, NULL, 0), FERRY_POLICY_ACCESS_DENIED);
    rq_release(&q);
    /* the token audience as a plain string counts too */
    rq_init(&q, ISS, "alice", NULL, NULL, "read", NULL, false);
    q.aud = json_string("ferry");
    q.req.audience = q.aud;
    cr_assert_eq(decide(set, &q, NULL, NULL, 0), FERRY_POLICY_GRANTED);
    rq_release(&q);
    /* glob subject */
    rq_init(&q, ISS, "svc-batch", NULL, NULL, "write", "api", false);
    cr_assert_eq(decide(set, &q, NULL, NULL, 0), FERRY_POLICY_GRANTED);
    rq_release(&q);
    rq_init(&q, ISS, "xsvc-batch", NULL, NULL, "write", "api", false);
    cr_assert_eq(decide(set, &q, NULL, NULL, 0), FERRY_POLICY_ACCESS_DENIED);
    rq_release(&q);
    ferry_policy_set_unref(set);
}

Test(policy_decide, claims)
{
    ferry_policy_set *set = load1(basic_doc);
    static const struct {
        const char *claims;
        ferry_policy_error want;
    } cases[] = {
        { "{'team':'ml','ctx':{'env':'prod'},'repo':'org/x','level':3}", FERRY_POLICY_GRANTED },
        { "{'team':'ml','ctx':{'env':'staging'},'repo':'org/y/z','level':3}",
          FERRY_POLICY_GRANTED },
        /* an array claim matches when one element does */
        { "{'team':['web','ml'],'ctx':{'env':'prod'},'repo':'org/x','level':3}",
          FERRY_POLICY_GRANTED },
        { "{'team':'web','ctx':{'env':'prod'},'repo':'org/x','level':3}",
          FERRY_POLICY_ACCESS_DENIED },
        { "{'team':'ml','ctx':{'env':'dev'},'repo':'org/x','level':3}",
          FERRY_POLICY_ACCESS_DENIED },
        { "{'team':'ml','ctx':'prod','repo':'org/x','level':3}", FERRY_POLICY_ACCESS_DENIED },
        { "{'team':'ml','ctx':{'env':'prod'},'repo':'other/x','level':3}",
          FERRY_POLICY_ACCESS_DENIED },
        /* typed: 3 is not "3" and not 3.0 */
        { "{'team':'ml','ctx':{'env':'prod'},'repo':'org/x','level':'3'}",
          FERRY_POLICY_ACCESS_DENIED },
        { "{'team':'ml','ctx':{'env':'prod'},'repo':'org/x','level':3.0}",
          FERRY_POLICY_ACCESS_DENIED },
        /* missing claim */
        { "{'team':'ml','ctx':{'env':'prod'},'level':3}", FERRY_POLICY_ACCESS_DENIED },
        /* a glob never matches a non-string */
        { "{'team':'ml','ctx':{'env':'prod'},'repo':{'x':1},'level':3}",
          FERRY_POLICY_ACCESS_DENIED },
    };
    struct rq q;

    for (size_t i = 0; i < sizeof(cases) / sizeof(*cases); i++) {
        rq_init(&q, ISS, "anyone", NULL, cases[i].claims, "deploy", NULL, false);
        cr_assert_eq(decide(set, &q, NULL, NULL, 0), cases[i].want, "case %zu", i);
        rq_release(&q);
    }
    /* no claims at all */
    rq_init(&q, ISS, "anyone", NULL, NULL, "deploy", NULL, false);
    cr_assert_eq(decide(set, &q, NULL, NULL, 0), FERRY_POLICY_ACCESS_DENIED);
    rq_release(&q);
    ferry_policy_set_unref(set);
}

/* ---- downscoping ---------------------------------------------------------------------------- */

static const char *scope_doc =
    HDR
    "{'id':'a','match':{'issuer':'" ISS "','subject':'u'},"
    " 'grant':{'scopes':['read','write'],'audiences':['api1'],'max_ttl':600}},"
    "{'id':'b','match':{'issuer':'" ISS "','subject_glob':'u*'},"
    " 'grant':{'scopes':['admin'],'audiences':['api2'],'max_ttl':300}},"
    "{'id':'c','match':{'issuer':'" ISS "','subject_glob':'*'},"
    " 'grant':{'secrets':['vault:kv/shared/*'],"
    "  'aws':[{'role_arn':'arn:aws:iam::123456789012:role/r','session_duration':3600}],"
    "  'max_ttl':7200}},"
    "{'id':'d','match':{'issuer':'" ISS "','subject':'v'},"
    " 'grant':{'scopes':['read'],'audiences':['api1'],"
    "  'aws':[{'role_arn':'arn:aws:iam::123456789012:role/r','session_duration':900}],"
    "  'max_ttl':900}}"
    END;

Test(policy_decide, downscoping)
{
    ferry_policy_set *set = load1(scope_doc);
    ferry_policy_grant *g;
    char why[FERRY_POLICY_REASON_MAX];
    struct rq q;

    /* subset requested: exactly that granted */
    rq_init(&q, ISS, "u", NULL, NULL, "read read", "api1", false);
    cr_assert_eq(decide(set, &q, &g, NULL, 0), FERRY_POLICY_GRANTED);
    cr_assert_eq(g->n_scopes, 1, "duplicates granted once");
    cr_assert_str_eq(g->scopes[0], "read");
    cr_assert_eq(g->n_audiences, 1);
    cr_assert_str_eq(g->audiences[0], "api1");
    /* a (read) and c (secrets, aws) contribute; b (admin/api2) does not: ttl = min(600, 7200) */
    cr_assert_eq(g->n_policies, 2);
    cr_assert_str_eq(g->policies[0], "a");
    cr_assert_str_eq(g->policies[1], "c");
    cr_assert_eq(g->ttl, 600);
    cr_assert_eq(g->n_secrets, 1);
    /* c grants its role for 3600 s, but nothing in a grant outlives its TTL */
    cr_assert_eq(g->n_aws, 1);
    cr_assert_eq(g->aws[0].session_duration, 600);
    ferry_policy_grant_free(g);
    rq_release(&q);

    /* a scope nobody grants: invalid_scope naming it, nothing granted */
    rq_init(&q, ISS, "u", NULL, NULL, "read delete", "api1", false);
    cr_assert_eq(decide(set, &q, NULL, why, sizeof(why)), FERRY_POLICY_INVALID_SCOPE);
    cr_assert(strstr(why, "delete"), "%s", why);
    rq_release(&q);
    /* an audience nobody grants */
    rq_init(&q, ISS, "u", NULL, NULL, "read", "api3", false);
    cr_assert_eq(decide(set, &q, NULL, why, sizeof(why)), FERRY_POLICY_INVALID_TARGET);
    cr_assert(strstr(why, "api3"), "%s", why);
    rq_release(&q);
    /* no audience requested, two granted (api1, api2): invalid_target */
    rq_init(&q, ISS, "u", NULL, NULL, "read", NULL, false);
    cr_assert_eq(decide(set, &q, NULL, NULL, 0), FERRY_POLICY_INVALID_TARGET);
    rq_release(&q);
    /* no audience requested, exactly one granted: that one */
    rq_init(&q, ISS, "v", NULL, NULL, "read", NULL, false);
    cr_assert_eq(decide(set, &q, &g, NULL, 0), FERRY_POLICY_GRANTED);
    cr_assert_eq(g->n_audiences, 1);
    cr_assert_str_eq(g->audiences[0], "api1");
    /* union with c: the same AWS role at the shorter session; ttl = min(900, 7200) */
    cr_assert_eq(g->n_aws, 1);
    cr_assert_eq(g->aws[0].session_duration, 900);
    cr_assert_eq(g->ttl, 900);
    ferry_policy_grant_free(g);
    rq_release(&q);
    /* no scope requested: least privilege, no scope granted */
    rq_init(&q, ISS, "v", NULL, NULL, NULL, "api1", false);
    cr_assert_eq(decide(set, &q, &g, NULL, 0), FERRY_POLICY_GRANTED);
    cr_assert_eq(g->n_scopes, 0);
    ferry_policy_grant_free(g);
    rq_release(&q);
    /* union across policies: read (a) + admin (b), both audiences requested */
    rq_init(&q, ISS, "u", NULL, NULL, "read admin", "api1 api2", false);
    cr_assert_eq(decide(set, &q, &g, NULL, 0), FERRY_POLICY_GRANTED);
    cr_assert_eq(g->n_scopes, 2);
    cr_assert_eq(g->n_policies, 3);
    cr_assert_eq(g->ttl, 300);
    ferry_policy_grant_free(g);
    rq_release(&q);
    ferry_policy_set_unref(set);
}

Test(policy_decide, grant_outlives_set_and_to_json)
{
    ferry_policy_set *set = load1(scope_doc);
    ferry_policy_grant *g;
    json_t *j = NULL;
    struct rq q;

    rq_init(&q, ISS, "u", NULL, NULL, "write", "api1", false);
    cr_assert_eq(decide(set, &q, &g, NULL, 0), FERRY_POLICY_GRANTED);
    rq_release(&q); /* the request's strings are gone */
    ferry_policy_set_unref(set); /* and the caller's reference to the set */
    cr_assert_str_eq(g->scopes[0], "write");
    cr_assert_eq(ferry_policy_grant_to_json(g, &j), 0);
    cr_assert_str_eq(json_string_value(json_array_get(json_object_get(j, "scopes"), 0)),
                     "write");
    cr_assert_eq(json_integer_value(json_object_get(j, "ttl")), 600);
    cr_assert_str_eq(json_string_value(json_object_get(json_array_get(json_object_get(j, "aws"),
                                                                      0), "role_arn")),
                     "arn:aws:iam::123456789012:role/r");
    json_decref(j);
    ferry_policy_grant_free(g);
}

/* ---- step-up -------------------------------------------------------------------------------- */

Test(policy_decide, step_up)
{
    const char *doc =
        HDR
        "{'id':'base','match':{'issuer':'" ISS "','subject':'op'},"
        " 'grant':{'scopes':['read'],'max_ttl':3600}},"
        "{'id':'admin','match':{'issuer':'" ISS "','subject':'op'},'step_up':'totp',"
        " 'grant':{'scopes':['admin'],'max_ttl':600}},"
        "{'id':'only-totp','match':{'issuer':'" ISS "','subject':'root'},'step_up':'totp',"
        " 'grant':{'scopes':['admin'],'max_ttl':300}}"
        END;
    ferry_policy_set *set = load1(doc);
    ferry_policy_grant *g;
    struct rq q;

    /* read needs no step-up: the gated policy neither contributes nor shortens the TTL */
    rq_init(&q, ISS, "op", NULL, NULL, "read", NULL, false);
    cr_assert_eq(decide(set, &q, &g, NULL, 0), FERRY_POLICY_GRANTED);
    cr_assert_eq(g->ttl, 3600);
    cr_assert_not(g->step_up);
    ferry_policy_grant_free(g);
    rq_release(&q);
    /* admin needs it */
    rq_init(&q, ISS, "op", NULL, NULL, "read admin", NULL, false);
    cr_assert_eq(decide(set, &q, NULL, NULL, 0), FERRY_POLICY_STEP_UP_REQUIRED);
    q.req.step_up_totp = true;
    cr_assert_eq(decide(set, &q, &g, NULL, 0), FERRY_POLICY_GRANTED);
    cr_assert(g->step_up);
    cr_assert_eq(g->ttl, 600);
    ferry_policy_grant_free(g);
    rq_release(&q);
    /* only a gated policy matches */
    rq_init(&q, ISS, "root", NULL, NULL, "admin", NULL, false);
    cr_assert_eq(decide(set, &q, NULL, NULL, 0), FERRY_POLICY_STEP_UP_REQUIRED);
    rq_release(&q);
    /* ... and the step-up would not help: say what would not be granted */
    rq_init(&q, ISS, "root", NULL, NULL, "delete", NULL, false);
    cr_assert_eq(decide(set, &q, NULL, NULL, 0), FERRY_POLICY_INVALID_SCOPE);
    rq_release(&q);
    rq_init(&q, ISS, "op", NULL, NULL, "delete", NULL, false);
    cr_assert_eq(decide(set, &q, NULL, NULL, 0), FERRY_POLICY_INVALID_SCOPE);
    rq_release(&q);
    ferry_policy_set_unref(set);
}

/* ---- the index against a linear scan -------------------------------------------------------- */

struct gen_policy {
    int issuer;
    char subject[64];
    bool glob;
    int team; /* -1: no claim rule */
};

static unsigned rnd(unsigned *s)
{
    *s = *s * 1103515245u + 12345u;
    return (*s >> 16) & 0x7fff;
}

static void gen_subject(unsigned *s, char *out, size_t n, bool *glob)
{
    unsigned k = rnd(s) % 14;
    *glob = (k >= 4 && k <= 8) || (k >= 9 && k <= 12);
    switch (k) {
    case 0: snprintf(out, n, "user-%u", rnd(s) % 50); break;
    case 1:
        snprintf(out, n, "repo:org%u/app-%u:ref:refs/heads/main", rnd(s) % 5, rnd(s) % 5);
        break;
    case 2: snprintf(out, n, "system:serviceaccount:ns%u:sa%u", rnd(s) % 5, rnd(s) % 5); break;
    case 3: snprintf(out, n, "user-1%u", rnd(s) % 10); break;
    case 4: snprintf(out, n, "repo:org%u/*", rnd(s) % 5); break;
    case 5: snprintf(out, n, "repo:org%u/app-?:ref:*", rnd(s) % 5); break;
    case 6: snprintf(out, n, "system:serviceaccount:ns%u:*", rnd(s) % 5); break;
    case 7: snprintf(out, n, "user-1*"); break;
    case 8: snprintf(out, n, rnd(s) % 4 ? "*:ref:refs/heads/main" : "*"); break;
    /* escaped wildcards and backslashes in literal prefixes and suffixes, multi-byte UTF-8
     * next to '?' and '*' */
    case 9:
        snprintf(out, n, rnd(s) % 2 ? "esc\\*%u*\\?" : "esc\\?%u*\\*", rnd(s) % 3);
        break;
    case 10:
        snprintf(out, n, rnd(s) % 2 ? "*\\\\x%u" : "esc\\\\%u?*\\\\", rnd(s) % 3);
        break;
    case 11: snprintf(out, n, "\xc3\xa9?-%u*\xc3\xbc\\*", rnd(s) % 3); break;
    case 12:
        snprintf(out, n, rnd(s) % 2 ? "\xc3\xa9*\xe2\x82\xac%u" : "*\xf0\x9f\x94\x91?%u",
                 rnd(s) % 3);
        break;
    default: /* exact subjects with glob characters and multi-byte UTF-8 in them */
        snprintf(out, n, rnd(s) % 2 ? "esc*%u?" : "\xc3\xa9\\%u*", rnd(s) % 3);
        break;
    }
}

static void gen_identity(unsigned *s, char *out, size_t n)
{
    static const char *const mb[] = { "\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x94\x91", "e",
                                      "\xc3\xbc", "?", "*", "\\", "" };
    const char *a = mb[rnd(s) % (sizeof(mb) / sizeof(mb[0]))],
               *b = mb[rnd(s) % (sizeof(mb) / sizeof(mb[0]))];

    switch (rnd(s) % 8) {
    case 0: snprintf(out, n, "user-%u", rnd(s) % 60); break;
    case 1: snprintf(out, n, "repo:org%u/app-%u:ref:refs/heads/%s", rnd(s) % 6, rnd(s) % 12,
                     rnd(s) % 3 ? "main" : "dev"); break;
    case 2: snprintf(out, n, "system:serviceaccount:ns%u:sa%u", rnd(s) % 6, rnd(s) % 6); break;
    case 3: snprintf(out, n, "user-1%u", rnd(s) % 12); break;
    case 4: snprintf(out, n, "esc%s%u%s%s", a, rnd(s) % 4, b, rnd(s) % 2 ? a : ""); break;
    case 5:
        snprintf(out, n, "%s%s%s-%u%s%s*", rnd(s) % 2 ? "\xc3\xa9" : "esc\\", a, b, rnd(s) % 4,
                 b, rnd(s) % 3 ? "\xc3\xbc" : "");
        break;
    case 6:
        switch (rnd(s) % 3) {
        case 0: snprintf(out, n, "%s%s\\x%u", a, b, rnd(s) % 4); break;
        case 1: snprintf(out, n, "esc\\%u%s%s\\", rnd(s) % 4, a, b); break;
        default: snprintf(out, n, "\xc3\xa9\\%u%s", rnd(s) % 4, a); break;
        }
        break;
    default:
        snprintf(out, n, "%s%s%s%s%u", rnd(s) % 2 ? "\xc3\xa9" : "", a, b,
                 rnd(s) % 2 ? "\xe2\x82\xac" : "\xf0\x9f\x94\x91", rnd(s) % 4);
        break;
    }
}

/* s as the body of a JSON string (backslashes doubled). */
static void json_body(const char *s, char *out, size_t n)
{
    size_t o = 0;

    for (; *s && o + 2 < n; s++) {
        if (*s == '\\')
            out[o++] = '\\';
        out[o++] = *s;
    }
    out[o] = '\0';
}

Test(policy_index, matches_linear_scan, .timeout = 60)
{
    enum { N = 4000, PER_DOC = 500, IDS = 3000, ISSUERS = 4 };
    struct gen_policy *gp = calloc(N, sizeof(*gp));
    ferry_policy_builder *b = NULL;
    ferry_policy_problems *pr = NULL;
    ferry_policy_set *set = NULL;
    unsigned seed = 20240611;
    char *doc = malloc(PER_DOC * 400 + 64);
    size_t granted = 0, granted_special = 0;

    cr_assert(gp && doc);
    cr_assert_eq(ferry_policy_builder_new(&b), 0);
    cr_assert_eq(ferry_policy_problems_new(&pr), 0);
    for (size_t d = 0; d < N / PER_DOC; d++) {
        size_t off = (size_t)snprintf(doc, 64, "{\"version\":1,\"policies\":[");
        char name[32];
        for (size_t k = 0; k < PER_DOC; k++) {
            size_t i = d * PER_DOC + k;
            gp[i].issuer = (int)(rnd(&seed) % ISSUERS);
            gen_subject(&seed, gp[i].subject, sizeof(gp[i].subject), &gp[i].glob);
            gp[i].team = rnd(&seed) % 3 == 0 ? (int)(rnd(&seed) % 3) : -1;
            char body[128];
            json_body(gp[i].subject, body, sizeof(body));
            off += (size_t)snprintf(doc + off, 400,
                                    "%s{\"id\":\"p%zu\",\"match\":{\"issuer\":\"https://iss%d."
                                    "test\",\"%s\":\"%s\"%s%s%s},\"grant\":{\"secrets\":"
                                    "[\"file:s%zu\"],\"max_ttl\":%zu}}",
                                    k ? "," : "", i, gp[i].issuer,
                                    gp[i].glob ? "subject_glob" : "subject", body,
                                    gp[i].team >= 0 ? ",\"claims\":[{\"claim\":\"team\","
                                                      "\"exact\":\"t" : "",
                                    gp[i].team >= 0 ? (const char[]){ (char)('0' + gp[i].team), 0 }
                                                    : "",
                                    gp[i].team >= 0 ? "\"}]" : "", i, 60 + i);
        }
        off += (size_t)snprintf(doc + off, 8, "]}");
        snprintf(name, sizeof(name), "gen%zu.json", d);
        cr_assert_eq(ferry_policy_builder_add_buffer(b, name, doc, off, pr), 0, "%s:%u: %s",
                     ferry_policy_problems_count(pr) ? ferry_policy_problems_get(pr, 0)->file : "",
                     ferry_policy_problems_count(pr) ? ferry_policy_problems_get(pr, 0)->line : 0,
                     ferry_policy_problems_count(pr) ? ferry_policy_problems_get(pr, 0)->reason
                                                     : "");
    }
    cr_assert_eq(ferry_policy_builder_finish(b, &set, pr), 0);
    cr_assert_eq(ferry_policy_set_count(set), N);

    for (size_t t = 0; t < IDS; t++) {
        char iss[64], sub[96], claims[32];
        int issuer = (int)(rnd(&seed) % (ISSUERS + 1)), team = (int)(rnd(&seed) % 4);
        size_t want[N], nwant = 0;
        ferry_policy_grant *g = NULL;
        ferry_policy_refusal ref;
        json_t *cl;
        ferry_policy_request req = { 0 };
        int r;

        snprintf(iss, sizeof(iss), "https://iss%d.test", issuer);
        gen_identity(&seed, sub, sizeof(sub));
        snprintf(claims, sizeof(claims), "t%d", team);
        cl = json_pack("{s:s}", "team", claims);
        for (size_t i = 0; i < N; i++) {
            if (gp[i].issuer != issuer)
                continue;
            if (gp[i].glob ? !ferry_policy_glob_match(gp[i].subject, sub)
                           : strcmp(gp[i].subject, sub) != 0)
                continue;
            if (gp[i].team >= 0 && gp[i].team != team)
                continue;
            want[nwant++] = i;
        }
        req.issuer = iss;
        req.subject = sub;
        req.claims = cl;
        r = ferry_policy_decide(set, &req, &g, &ref);
        if (nwant == 0) {
            cr_assert_eq(r, -FERRY_EREFUSED, "%s %s: granted, linear scan finds nothing", iss,
                         sub);
            cr_assert_eq(ref.error, FERRY_POLICY_ACCESS_DENIED);
        } else {
            cr_assert_eq(r, 0, "%s %s: refused (%s), linear scan finds %zu", iss, sub,
                         ref.reason, nwant);
            cr_assert_eq(g->n_policies, nwant, "%s %s: %zu vs %zu", iss, sub, g->n_policies,
                         nwant);
            for (size_t k = 0; k < nwant; k++) {
                char id[16];
                snprintf(id, sizeof(id), "p%zu", want[k]);
                cr_assert_str_eq(g->policies[k], id);
            }
            cr_assert_eq(g->ttl, (int64_t)(60 + want[0]), "smallest TTL");
            granted++;
            for (size_t k = 0; k < nwant; k++)
                if (strpbrk(gp[want[k]].subject, "\\\xc3\xe2\xf0")) {
                    granted_special++; /* by a pattern with escapes or multi-byte UTF-8 */
                    break;
                }
        }
        ferry_policy_grant_free(g);
        json_decref(cl);
    }
    cr_assert_gt(granted, IDS / 10, "the random identities exercise matches (%zu)", granted);
    cr_assert_lt(granted, IDS, "and misses");
    cr_assert_gt(granted_special, IDS / 30,
                 "identities with escaped characters or multi-byte UTF-8 are granted too (%zu)",
                 granted_special);
    ferry_policy_set_unref(set);
    ferry_policy_builder_free(b);
    ferry_policy_problems_free(pr);
    free(gp);
    free(doc);
}

/* ---- broken policy files -------------------------------------------------------------------- */

#define L1 "{'version':1,'policies':[\n"
#define OKM "{'id':'p','match':{'issuer':'x','subject':'s'},\n"
#define OKG "'grant':{'scopes':['a'],'max_ttl':60}}\n"
#define L4 "]}\n"
#define M(m) "{'id':'p','match':{'issuer':'x'," m "},\n"
#define G(g) "'grant':{" g "}}\n"

Test(policy_load, hostile_documents)
{
    static const struct {
        const char *doc;
        unsigned line;
        const char *needle;
    } cases[] = {
        /* unknown members, at every level */
        { L1 OKM G("'scopes':['a'],'max_ttl':60,'scopez':1") L4, 3, "unknown member \"scopez\"" },
        { L1 M("'subject':'s','subjct':'t'") OKG L4, 2, "unknown member \"subjct\"" },
        { "{'version':1,'extra':true,\n'policies':[\n" OKM OKG L4, 1, "unknown member \"extra\"" },
        { L1 "{'id':'p','stepup':'totp','match':{'issuer':'x','subject':'s'},\n" OKG L4, 2,
          "unknown member \"stepup\"" },
        { L1 M("'subject_glob':'*','claims':[{'claim':'t','exact':'a','x':1}]") OKG L4, 2,
          "unknown member \"x\"" },
        { L1 OKM G("'aws':[{'role_arn':'arn:aws:iam::123456789012:role/r',\n"
                   "'session_duration':900,'region':'us-east-1'}],'max_ttl':900") L4, 4,
          "unknown member \"region\"" },
        /* duplicate member: refused by the parser, with its line */
        { L1 "{'id':'p',\n'id':'q','match':{'issuer':'x','subject':'s'},\n" OKG L4, 3,
          "duplicate" },
        /* bad globs */
        { L1 M("'subject_glob':'a*\\\\'") OKG L4, 2, "trailing backslash" },
        { L1 M("'subject_glob':'a**'") OKG L4, 2, "'**'" },
        { L1 M("'subject_glob':'a[0-9]*'") OKG L4, 2, "brackets" },
        { L1 M("'subject_glob':''") OKG L4, 2, "empty pattern" },
        { L1 M("'subject_glob':'a\\\\b*'") OKG L4, 2, "backslash may only escape" },
        { L1 M("'subject_glob':'plain'") OKG L4, 2, "no wildcard" },
        { L1 M("'subject':'s','claims':[{'claim':'t','glob':'x**'}]") OKG L4, 2, "bad glob" },
        { L1 M("'subject':'s','claims':[{'claim':'t','glob':'x'}]") OKG L4, 2, "use \"exact\"" },
        /* contradictions */
        { L1 M("'subject':'s','subject_glob':'s*'") OKG L4, 2, "both given" },
        { L1 M("'audience':['a']") OKG L4, 2, "needs \"subject\"" },
        { L1 M("'subject':'s','claims':[{'claim':'t','one_of':[]}]") OKG L4, 2,
          "matches nothing" },
        { L1 M("'subject':'s','claims':[{'claim':'t','one_of':['a','a']}]") OKG L4, 2,
          "twice" },
        { L1 M("'subject':'s','claims':[{'claim':'t','exact':'a','glob':'a*'}]") OKG L4, 2,
          "more than one given" },
        { L1 M("'subject':'s','claims':[{'claim':'t','exact':'a'},{'claim':'t','exact':'b'}]")
              OKG L4, 2, "two rules" },
        { L1 M("'subject':'s','claims':[{'claim':'sub','exact':'a'}]") OKG L4, 2,
          "match.subject" },
        { L1 OKM G("'scopes':['a'],'max_ttl':0") L4, 3, "outside 1..43200" },
        { L1 OKM G("'scopes':['a'],'max_ttl':-5") L4, 3, "outside 1..43200" },
        { L1 OKM G("'scopes':['a'],'max_ttl':50000") L4, 3, "global maximum" },
        { L1 OKM G("'scopes':['a']") L4, 3, "missing member \"max_ttl\"" },
        { L1 OKM G("'aws':[{'role_arn':'arn:aws:iam::123456789012:role/r','session_duration':899}],"
                   "'max_ttl':900") L4, 3, "outside 900..43200" },
        { L1 OKM G("'aws':[{'role_arn':'arn:aws:iam::123456789012:role/r','session_duration':"
                   "43201}],'max_ttl':900") L4, 3, "outside 900..43200" },
        { L1 OKM G("'aws':[{'role_arn':'arn:aws:iam::123456789012:role/r',"
                   "'session_duration':3600}],"
                   "'max_ttl':1000") L4, 3, "exceeds the policy's max_ttl" },
        { L1 OKM G("'aws':[{'role_arn':'arn:aws:iam::12345:role/r','session_duration':900}],"
                   "'max_ttl':900") L4, 3, "not an IAM role ARN" },
        { L1 OKM G("'aws':[{'role_arn':'arn:aws:s3:::bucket','session_duration':900}],"
                   "'max_ttl':900") L4, 3, "not an IAM role ARN" },
        { L1 OKM G("'gcp':[{'service_account':'someone@gmail.com'}],'max_ttl':60") L4, 3,
          "not a service account" },
        { L1 OKM G("'azure':[{'tenant_id':'not-a-guid','client_id':"
                   "'9d4e8a27-1c3b-4f60-a5d2-7e81b0c4f9a6'}],'max_ttl':60") L4, 3, "not a GUID" },
        { L1 OKM G("'azure':[{'tenant_id':'00000000-0000-0000-0000-000000000000','client_id':"
                   "'9d4e8a27-1c3b-4f60-a5d2-7e81b0c4f9a6'}],'max_ttl':60") L4, 3, "nil GUID" },
        { L1 OKM G("'max_ttl':60") L4, 3, "grants nothing" },
        { L1 "{'id':'p','step_up':'sms','match':{'issuer':'x','subject':'s'},\n" OKG L4, 2,
          "not supported" },
        { L1 OKM OKG ",\n" OKM OKG L4, 5, "duplicate policy id" },
        { L1 OKM G("'scopes':[],'max_ttl':60") L4, 3, "empty list" },
        { L1 OKM G("'scopes':['a','a'],'max_ttl':60") L4, 3, "twice" },
        { L1 OKM G("'scopes':['a b'],'max_ttl':60") L4, 3, "RFC 6749" },
        { L1 OKM G("'secrets':['ssm:/x'],'max_ttl':60") L4, 3, "backend name" },
        { L1 OKM G("'secrets':['vault:kv/**'],'max_ttl':60") L4, 3, "bad pattern" },
        /* file structure */
        { "{'policies':[\n" OKM OKG L4, 1, "missing member \"version\"" },
        { "{'version':2,\n'policies':[\n" OKM OKG L4, 1, "integer 1" },
        { "{'version':1,\n'policies':[]}\n", 2, "is empty" },
        { "[\n" OKM OKG "]\n", 1, "JSON object" },
        { L1 OKM "'grant':{'scopes':['a'],'max_ttl':60}\n\n  ,,]}\n", 5, "not valid JSON" },
        { L1 M("'subject':'s'") G("'scopes':['a'],'max_ttl':60,'x':[[[[[[[1]]]]]]]") L4, 3,
          "nested deeper" },
        /* wrong types */
        { L1 "{'id':'p','match':[],\n" OKG L4, 2, "must be an object" },
        { L1 "{'id':5,'match':{'issuer':'x','subject':'s'},\n" OKG L4, 2, "must be a string" },
        { L1 OKM G("'scopes':'a','max_ttl':60") L4, 3, "must be an array" },
        { L1 OKM G("'scopes':['a'],'max_ttl':'60'") L4, 3, "must be an integer" },
        { L1 OKM G("'scopes':[1],'max_ttl':60") L4, 3, "must be strings" },
        { L1 "{'id':'has space','match':{'issuer':'x','subject':'s'},\n" OKG L4, 2,
          "policy id" },
        { L1 M("'subject':'s','claims':[{'claim':['a','b','c','d','e','f','g','h','i'],"
               "'exact':1}]") OKG L4, 2, "1 to 8" },
        { L1 M("'subject':'s','claims':[{'claim':'t','exact':{'a':1}}]") OKG L4, 2,
          "must be a string, an integer or a boolean" },
        { L1 "7,\n" OKM OKG L4, 2, "must be an object" },
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(*cases); i++) {
        cr_log_info("case %zu", i);
        expect_problem(cases[i].doc, cases[i].line, cases[i].needle);
    }
}

Test(policy_load, limits)
{
    /* oversized file: refused before parsing, line 0 */
    size_t n = FERRY_POLICY_FILE_MAX + 1;
    char *big = malloc(n + 1);
    ferry_policy_problems *pr = NULL;
    ferry_policy_builder *b = NULL;
    size_t off = 0;

    cr_assert_not_null(big);
    memset(big, ' ', n);
    big[0] = '{';
    big[n - 1] = '}';
    big[n] = '\0';
    cr_assert_eq(ferry_policy_problems_new(&pr), 0);
    cr_assert_eq(ferry_policy_builder_new(&b), 0);
    cr_assert_eq(ferry_policy_builder_add_buffer(b, "big.json", big, n, pr), -FERRY_ECONFIG);
    cr_assert_eq(ferry_policy_problems_get(pr, 0)->line, 0);
    cr_assert(strstr(ferry_policy_problems_get(pr, 0)->reason, "larger than"));
    ferry_policy_builder_free(b);
    ferry_policy_problems_free(pr);
    free(big);

    /* 33 claim rules */
    {
        char doc[4096];
        off = (size_t)snprintf(doc, sizeof(doc),
                               L1 "{'id':'p','match':{'issuer':'x','subject':'s','claims':[");
        for (int i = 0; i < 33; i++)
            off += (size_t)snprintf(doc + off, sizeof(doc) - off,
                                    "%s{'claim':'c%d','exact':1}", i ? "," : "", i);
        snprintf(doc + off, sizeof(doc) - off, "]},\n" OKG L4);
        expect_problem(doc, 2, "more than 32 claim rules");
    }
}

Test(policy_load, every_problem_reported)
{
    const char *doc = L1 M("'subject_glob':'a**'") G("'scopes':['a'],'max_ttl':0") ",\n"
                      "{'id':'q','match':{'issuer':'x','subject':'s'},'grant':{'max_ttl':60}}\n"
                      L4;
    ferry_policy_problems *pr = refuse_docs(&doc, 1);
    unsigned lines[8] = { 0 };
    size_t n = ferry_policy_problems_count(pr);

    cr_assert_eq(n, 3, "three problems, all reported (got %zu)", n);
    for (size_t i = 0; i < n; i++)
        lines[i] = ferry_policy_problems_get(pr, i)->line;
    cr_assert_eq(lines[0], 2);
    cr_assert_eq(lines[1], 3);
    cr_assert_eq(lines[2], 5);
    cr_assert(strstr(ferry_policy_problems_get(pr, 2)->reason, "policy \"q\""));
    ferry_policy_problems_free(pr);
}

Test(policy_load, duplicate_id_across_files)
{
    const char *docs[] = { L1 OKM OKG L4, "{'version':1,\n\n'policies':[\n" OKM OKG L4 };
    ferry_policy_problems *pr = refuse_docs(docs, 2);
    const ferry_policy_problem *p = ferry_policy_problems_get(pr, 0);

    cr_assert_eq(ferry_policy_problems_count(pr), 1);
    cr_assert_str_eq(p->file, "doc1.json");
    cr_assert_eq(p->line, 4);
    cr_assert(strstr(p->reason, "duplicate policy id (first in doc0.json:2)"), "%s", p->reason);
    ferry_policy_problems_free(pr);
}

/* ---- directories, files, reload -------------------------------------------------------------- */

static char *mkdtemp_policy(void)
{
    char *d = strdup("/tmp/ferry-policy-test.XXXXXX");
    cr_assert_not_null(mkdtemp(d));
    return d;
}

static void write_text(const char *dir, const char *name, const char *text)
{
    char path[512], *t = J(text);
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs(t, f);
    fclose(f);
    free(t);
}

static void rm_rf(const char *dir)
{
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    cr_assert_eq(system(cmd), 0);
}

Test(policy_load, directory_rules)
{
    char *d = mkdtemp_policy(), path[512], target[512];
    ferry_policy_problems *pr = NULL;
    ferry_policy_set *set = NULL;
    const char *doc2 = L1 "{'id':'q','match':{'issuer':'x','subject':'s'},\n" OKG L4;

    write_text(d, "a.json", L1 OKM OKG L4);
    write_text(d, "README.md", "not a policy");           /* other names: ignored */
    write_text(d, ".hidden.json", "garbage");             /* dot files: ignored */
    write_text(d, "policy.schema.json", "{'$schema':1}"); /* the schema: skipped */
    write_text(d, "b.json.bak", "garbage");
    cr_assert_eq(ferry_policy_problems_new(&pr), 0);
    cr_assert_eq(ferry_policy_load_dir(d, &set, pr), 0);
    cr_assert_eq(ferry_policy_set_count(set), 1);
    ferry_policy_set_unref(set);
    set = NULL;

    /* a symbolic link named *.json is not followed */
    snprintf(target, sizeof(target), "%s/real.txt", d);
    write_text(d, "real.txt", doc2);
    snprintf(path, sizeof(path), "%s/link.json", d);
    cr_assert_eq(symlink(target, path), 0);
    cr_assert_eq(ferry_policy_load_dir(d, &set, pr), -FERRY_ECONFIG);
    cr_assert_null(set);
    cr_assert_eq(ferry_policy_problems_count(pr), 1);
    cr_assert_str_eq(ferry_policy_problems_get(pr, 0)->file, path);
    cr_assert(strstr(ferry_policy_problems_get(pr, 0)->reason, "symbolic link"));
    cr_assert_eq(unlink(path), 0);
    ferry_policy_problems_free(pr);

    /* a directory named *.json is a problem */
    snprintf(path, sizeof(path), "%s/sub.json", d);
    cr_assert_eq(mkdir(path, 0700), 0);
    cr_assert_eq(ferry_policy_problems_new(&pr), 0);
    cr_assert_eq(ferry_policy_load_dir(d, &set, pr), -FERRY_ECONFIG);
    cr_assert(strstr(ferry_policy_problems_get(pr, 0)->reason, "not a regular file"));
    ferry_policy_problems_free(pr);

    /* a missing directory */
    cr_assert_eq(ferry_policy_problems_new(&pr), 0);
    cr_assert_eq(ferry_policy_load_dir("/nonexistent/ferry-policies", &set, pr), -ENOENT);
    cr_assert_eq(ferry_policy_problems_count(pr), 1);
    ferry_policy_problems_free(pr);
    rm_rf(d);
    free(d);
}

Test(policy_store, reload_failure_keeps_previous_set)
{
    char *d = mkdtemp_policy();
    ferry_policy_problems *pr = NULL;
    ferry_policy_store *st = NULL;
    ferry_policy_set *s1, *s2;
    ferry_policy_grant *g;
    struct rq q;

    write_text(d, "a.json", L1 OKM OKG L4);
    cr_assert_eq(ferry_policy_store_new(NULL, &st), 0);
    cr_assert_null(ferry_policy_store_get(st));
    cr_assert_eq(ferry_policy_store_reload(st, d, NULL), 0);
    s1 = ferry_policy_store_get(st);
    cr_assert_not_null(s1);

    /* a broken edit: the reload fails, the old set stays and keeps deciding */
    write_text(d, "a.json", L1 OKM G("'scopes':['a','b'],'max_ttl':60,'oops':1") L4);
    cr_assert_eq(ferry_policy_problems_new(&pr), 0);
    cr_assert_eq(ferry_policy_store_reload(st, d, pr), -FERRY_ECONFIG);
    cr_assert_eq(ferry_policy_problems_get(pr, 0)->line, 3);
    ferry_policy_problems_free(pr);
    s2 = ferry_policy_store_get(st);
    cr_assert_eq(s2, s1, "the previous set is still installed");
    rq_init(&q, "x", "s", NULL, NULL, "a", NULL, false);
    cr_assert_eq(decide(s2, &q, NULL, NULL, 0), FERRY_POLICY_GRANTED);
    ferry_policy_set_unref(s2);

    /* a good edit: swapped; a grant taken from the old set stays valid */
    cr_assert_eq(decide(s1, &q, &g, NULL, 0), FERRY_POLICY_GRANTED);
    write_text(d, "a.json", L1 OKM G("'scopes':['b'],'max_ttl':60") L4);
    cr_assert_eq(ferry_policy_store_reload(st, d, NULL), 0);
    s2 = ferry_policy_store_get(st);
    cr_assert_neq(s2, s1);
    cr_assert_eq(decide(s2, &q, NULL, NULL, 0), FERRY_POLICY_INVALID_SCOPE);
    ferry_policy_set_unref(s2);
    ferry_policy_set_unref(s1);
    cr_assert_str_eq(g->scopes[0], "a");
    ferry_policy_grant_free(g);
    rq_release(&q);
    ferry_policy_store_free(st);
    rm_rf(d);
    free(d);
}

struct race {
    ferry_policy_store *st;
    ferry_policy_set *sets[2];
    volatile bool stop;
    unsigned decisions;
};

static void *race_reader(void *arg)
{
    struct race *rc = arg;
    const char *scopes[] = { "a" };
    ferry_policy_request req = { .issuer = "x", .subject = "s", .scopes = scopes, .n_scopes = 1 };

    while (!rc->stop) {
        ferry_policy_set *s = ferry_policy_store_get(rc->st);
        ferry_policy_grant *g = NULL;
        ferry_policy_refusal ref;
        int r = ferry_policy_decide(s, &req, &g, &ref);
        /* either set grants a; the grant must be readable after the set is dropped */
        ferry_policy_set_unref(s);
        if (r != 0 || strcmp(g->scopes[0], "a") != 0)
            abort();
        ferry_policy_grant_free(g);
        __atomic_fetch_add(&rc->decisions, 1, __ATOMIC_RELAXED);
    }
    return NULL;
}

Test(policy_store, concurrent_decide_and_swap, .timeout = 60)
{
    struct race rc = { 0 };
    pthread_t th[3];

    rc.sets[0] = load1(L1 OKM OKG L4);
    rc.sets[1] = load1(L1 OKM G("'scopes':['a','b'],'max_ttl':30") L4);
    cr_assert_eq(ferry_policy_store_new(rc.sets[0], &rc.st), 0);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(pthread_create(&th[i], NULL, race_reader, &rc), 0);
    /* keep swapping until the readers have decided a good number of times */
    for (unsigned i = 0; i < 20000 || __atomic_load_n(&rc.decisions, __ATOMIC_RELAXED) < 20000;
         i++)
        ferry_policy_store_swap(rc.st, rc.sets[i & 1]);
    rc.stop = true;
    for (int i = 0; i < 3; i++)
        pthread_join(th[i], NULL);
    cr_assert_gt(rc.decisions, 0);
    ferry_policy_store_free(rc.st);
    ferry_policy_set_unref(rc.sets[0]);
    ferry_policy_set_unref(rc.sets[1]);
}

/* ---- explain -------------------------------------------------------------------------------- */

static json_t *find_considered(json_t *ex, const char *id)
{
    size_t i;
    json_t *e;

    json_array_foreach(json_object_get(ex, "considered"), i, e)
        if (strcmp(json_string_value(json_object_get(e, "id")), id) == 0)
            return e;
    return NULL;
}

Test(policy_explain, says_why)
{
    ferry_policy_set *set = load1(basic_doc);
    json_t *ex = NULL, *e;
    struct rq q;

    rq_init(&q, ISS, "alice", "other", "{'team':'ml','ctx':{'env':'dev'}}", "read", NULL, false);
    cr_assert_eq(ferry_policy_explain(set, &q.req, &ex), 0);
    cr_assert_str_eq(json_string_value(json_object_get(ex, "decision")), "access_denied");
    cr_assert_eq(json_integer_value(json_object_get(ex, "issuer_policies")), 3);
    e = find_considered(ex, "exact");
    cr_assert_str_eq(json_string_value(json_object_get(e, "failed")), "audience");
    cr_assert_eq(json_integer_value(json_object_get(e, "line")), 1);
    cr_assert_str_eq(json_string_value(json_object_get(e, "file")), "doc0.json");
    e = find_considered(ex, "glob");
    cr_assert_str_eq(json_string_value(json_object_get(e, "failed")), "subject");
    e = find_considered(ex, "claims");
    cr_assert_str_eq(json_string_value(json_object_get(e, "failed")), "claim");
    cr_assert(strstr(json_string_value(json_object_get(e, "detail")), "ctx/env"));
    json_decref(ex);
    rq_release(&q);

    /* granted: the matched policy, its grants and the final grant */
    rq_init(&q, ISS, "svc-x", NULL, NULL, "write", NULL, false);
    cr_assert_eq(ferry_policy_explain(set, &q.req, &ex), 0);
    cr_assert_str_eq(json_string_value(json_object_get(ex, "decision")), "granted");
    e = find_considered(ex, "glob");
    cr_assert(json_is_true(json_object_get(e, "matched")));
    cr_assert(json_is_true(json_object_get(e, "contributed")));
    cr_assert_eq(json_integer_value(json_object_get(json_object_get(e, "grants"), "max_ttl")),
                 300);
    cr_assert_eq(json_integer_value(json_object_get(json_object_get(ex, "grant"), "ttl")), 300);
    json_decref(ex);
    rq_release(&q);

    /* unknown issuer: the issuers that have policies */
    rq_init(&q, "https://nope.test", "svc-x", NULL, NULL, NULL, NULL, false);
    cr_assert_eq(ferry_policy_explain(set, &q.req, &ex), 0);
    cr_assert_str_eq(json_string_value(json_array_get(json_object_get(ex, "known_issuers"), 0)),
                     ISS);
    cr_assert(strstr(json_string_value(json_object_get(ex, "reason")), "no policy for issuer"));
    json_decref(ex);
    rq_release(&q);
    ferry_policy_set_unref(set);
}

/* ---- index shortcuts at their edges ---------------------------------------------------------- */

/* Load policies "p0".."pN-1" of issuer ISS from globs (subject_glob, as JSON string bodies). */
static ferry_policy_set *load_globs(const char *const *globs, size_t n)
{
    size_t cap = 256;
    char *doc;
    size_t off;
    ferry_policy_set *set;

    for (size_t i = 0; i < n; i++)
        cap += strlen(globs[i]) + 160;
    doc = malloc(cap);
    cr_assert_not_null(doc);
    off = (size_t)snprintf(doc, cap, "{'version':1,'policies':[");
    for (size_t i = 0; i < n; i++)
        off += (size_t)snprintf(doc + off, cap - off,
                                "%s{'id':'p%zu','match':{'issuer':'" ISS "','subject_glob':'%s'},"
                                "'grant':{'secrets':['file:s%zu'],'max_ttl':%zu}}",
                                i ? "," : "", i, globs[i], i, 60 + i);
    snprintf(doc + off, cap - off, "]}");
    set = load1(doc);
    free(doc);
    return set;
}

/* The ids of the policies granting sub (space-separated, "" when refused). */
static void granted_ids(const ferry_policy_set *set, const char *sub, char *out, size_t len)
{
    ferry_policy_request req = { .issuer = ISS, .subject = sub };
    ferry_policy_grant *g = NULL;
    ferry_policy_refusal ref;
    size_t off = 0;

    out[0] = '\0';
    if (ferry_policy_decide(set, &req, &g, &ref) != 0)
        return;
    for (size_t i = 0; i < g->n_policies; i++)
        off += (size_t)snprintf(out + off, len - off, "%s%s", i ? " " : "", g->policies[i]);
    ferry_policy_grant_free(g);
}

Test(policy_index, long_literal_suffix)
{
    /* A suffix of exactly 256 bytes after the last wildcard, behind a literal prefix that
     * another policy shares (so the suffix shortcut is consulted). */
    char tail[258], glob[300], sub[400], ids[64];
    const char *globs[2];
    ferry_policy_set *set;

    for (size_t len = 254; len <= 257; len++) {
        memset(tail, 'a', len);
        tail[len] = '\0';
        snprintf(glob, sizeof(glob), "repo:*%s", tail);
        snprintf(sub, sizeof(sub), "repo:x%s", tail);
        globs[0] = glob;
        globs[1] = "repo:*b";
        set = load_globs(globs, 2);
        cr_assert(ferry_policy_glob_match(glob, sub));
        granted_ids(set, sub, ids, sizeof(ids));
        cr_assert_str_eq(ids, "p0", "suffix of %zu bytes: granted by '%s'", len, ids);
        granted_ids(set, "repo:xb", ids, sizeof(ids));
        cr_assert_str_eq(ids, "p1");
        ferry_policy_set_unref(set);
    }
}

/* Messages shorten long names; they must stay UTF-8 (explain puts them into JSON, and a
 * refusal reason goes out in an error response). */
Test(policy_explain, long_multibyte_names)
{
    char glob[128] = "", scope[128] = "", sub[128] = "", *doc;
    ferry_policy_set *set;
    json_t *ex = NULL, *e, *js;
    ferry_policy_request req = { .issuer = ISS };
    const char *scopes[1];
    ferry_policy_refusal ref;
    ferry_policy_grant *g = NULL;

    for (int i = 0; i < 45; i++) {
        strcat(glob, i % 2 ? "\xc3\xa9" : "\xe2\x82\xac");
        strcat(scope, "\xc3\xa9");
    }
    strcat(glob, "*");
    snprintf(sub, sizeof(sub), "x%s", glob);
    sub[strlen(sub) - 1] = '\0';
    doc = malloc(1024);
    cr_assert_not_null(doc);
    snprintf(doc, 1024,
             "{'version':1,'policies':[{'id':'mb','match':{'issuer':'" ISS "','subject_glob':"
             "'%s'},'grant':{'scopes':['read'],'max_ttl':60}},{'id':'any','match':{'issuer':'"
             ISS "','subject_glob':'*'},'grant':{'scopes':['read'],'max_ttl':60}}]}",
             glob);
    set = load1(doc);
    free(doc);

    for (int off = 0; off < 3; off++) {
        /* the subject does not match the glob: the detail quotes the (shortened) glob; the
         * scope is not granted: the reason quotes the (shortened) scope */
        scopes[0] = scope + (off == 2 ? 2 : 0);
        req.subject = sub + (off == 1 ? 1 : 0);
        req.scopes = scopes;
        req.n_scopes = 1;
        cr_assert_eq(ferry_policy_decide(set, &req, &g, &ref), -FERRY_EREFUSED);
        cr_assert_eq(ref.error, FERRY_POLICY_INVALID_SCOPE);
        js = json_string(ref.reason);
        cr_assert_not_null(js, "the reason is UTF-8: %s", ref.reason);
        json_decref(js);
        cr_assert_eq(ferry_policy_explain(set, &req, &ex), 0, "explain with long names");
        e = find_considered(ex, "mb");
        if (off == 1)
            cr_assert(json_is_true(json_object_get(e, "matched")));
        else
            cr_assert_str_eq(json_string_value(json_object_get(e, "failed")), "subject");
        cr_assert_str_eq(json_string_value(json_object_get(ex, "decision")), "invalid_scope");
        json_decref(ex);
    }
    /* a requested scope that is not UTF-8 at all (a percent-decoded form field can be) */
    scopes[0] = "bad\xff\xc3-\xed\xa0\x80";
    cr_assert_eq(ferry_policy_decide(set, &req, &g, &ref), -FERRY_EREFUSED);
    cr_assert_not_null(strstr(ref.reason, "\"bad?" "?-?" "?" "?\""), "%s", ref.reason);
    ferry_policy_set_unref(set);
}

/* A claims object built by a caller (not by ferry's parser, which refuses \u0000) may hold a
 * string with a NUL inside; a glob sees the whole value, not the part before the NUL. */
Test(policy_decide, claim_glob_sees_past_nul)
{
    ferry_policy_set *set = load1(HDR "{'id':'mail','match':{'issuer':'" ISS "','subject':'u',"
                                      "'claims':[{'claim':'email','glob':'*@example.com'}]},"
                                      "'grant':{'scopes':['read'],'max_ttl':60}}" END);
    ferry_policy_request req = { .issuer = ISS, .subject = "u" };
    ferry_policy_grant *g = NULL;
    ferry_policy_refusal ref;
    json_t *claims = json_object();

    cr_assert_not_null(claims);
    req.claims = claims;
    cr_assert_eq(json_object_set_new(claims, "email", json_string("eve@example.com")), 0);
    cr_assert_eq(ferry_policy_decide(set, &req, &g, &ref), 0);
    ferry_policy_grant_free(g);
    g = NULL;
    cr_assert_eq(json_object_set_new(claims, "email",
                                     json_stringn("eve@example.com\0@evil.test", 26)), 0);
    cr_assert_eq(ferry_policy_decide(set, &req, &g, &ref), -FERRY_EREFUSED);
    cr_assert_eq(ref.error, FERRY_POLICY_ACCESS_DENIED);
    cr_assert_null(g);
    json_decref(claims);
    ferry_policy_set_unref(set);
}

/* The same for the token's audience, as a string or in an array. */
Test(policy_decide, audience_sees_past_nul)
{
    ferry_policy_set *set = load1(HDR "{'id':'a','match':{'issuer':'" ISS "','subject':'u',"
                                      "'audience':['ferry']},"
                                      "'grant':{'scopes':['read'],'max_ttl':60}}" END);
    ferry_policy_request req = { .issuer = ISS, .subject = "u" };
    ferry_policy_grant *g = NULL;
    ferry_policy_refusal ref;
    json_t *good = json_string("ferry"), *bad = json_stringn("ferry\0evil", 10);
    json_t *bad_arr = json_pack("[O]", bad);

    cr_assert(good && bad && bad_arr);
    req.audience = good;
    cr_assert_eq(ferry_policy_decide(set, &req, &g, &ref), 0);
    ferry_policy_grant_free(g);
    g = NULL;
    req.audience = bad;
    cr_assert_eq(ferry_policy_decide(set, &req, &g, &ref), -FERRY_EREFUSED);
    cr_assert_eq(ref.error, FERRY_POLICY_ACCESS_DENIED);
    req.audience = bad_arr;
    cr_assert_eq(ferry_policy_decide(set, &req, &g, &ref), -FERRY_EREFUSED);
    cr_assert_eq(ref.error, FERRY_POLICY_ACCESS_DENIED);
    json_decref(good);
    json_decref(bad);
    json_decref(bad_arr);
    ferry_policy_set_unref(set);
}
