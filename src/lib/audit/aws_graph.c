/* audit/aws_graph.c - AWS-OP-006: privilege-escalation paths inside one authorization-details
 * export (docs/internals/audit.md, "Escalation paths").
 *
 * aws.c adds every user and role of the account being audited as a node, with the policy
 * documents it holds, its trust policy and whether it is admin (AWS-OP-001) or
 * admin-equivalent (AWS-OP-002). Edges are the ways one principal becomes another:
 *   - sts:AssumeRole of a role whose trust policy names it, or names its account root / "*"
 *     while its own policies allow sts:AssumeRole on that role;
 *   - iam:PassRole of a role trusted by a compute service, with the actions that start that
 *     service's compute (the code then runs as the role);
 *   - iam:CreateAccessKey, iam:CreateLoginProfile or iam:UpdateLoginProfile on another user.
 * A breadth-first search from each non-admin principal finds the shortest path (at most
 * AWS_GRAPH_MAX_DEPTH steps) to an admin principal; that principal gets one AWS-OP-006 with
 * the path as evidence. Statements with a Condition grant nothing here (as in aws.c), so a
 * path is only reported when nothing but the policies' own text stands in its way.
 *
 * The graph holds references into the file's parsed document only: it lives while one
 * account is audited and is freed with it.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audit-internal.h"
#include "basic/macro.h"
#include "ferry/error.h"

#define AWS_GRAPH_MAX_DEPTH 5
/* Most principals in one graph (AWS allows 5,000 users and 5,000 roles per account). */
#define AWS_GRAPH_MAX_NODES 100000

enum { CAP_ASSUME = 1u << 0, CAP_PASS = 1u << 1, CAP_USERCREDS = 1u << 2 };

typedef struct graph_node {
    char *arn;
    char account[13];
    bool role;        /* else a user */
    bool admin;       /* full admin or admin-equivalent */
    unsigned caps;    /* CAP_*: the documents allow the action on some resource */
    json_t *docs;     /* identity policy documents (a held reference) */
    json_t *trust;    /* trust policy document (held) or NULL */
    unsigned compute; /* bit i: trusted by compute_launch[i].service */
    unsigned launch;  /* bit i: can start compute_launch[i]'s compute (passers only) */
} graph_node;

typedef struct graph_edge {
    size_t from, to;
    const char *via; /* static text */
} graph_edge;

struct aws_graph {
    graph_node *nodes;
    size_t n, alloc;
    graph_edge *edges;
    size_t n_edges, alloc_edges;
    json_t *by_arn; /* arn -> node index */
};

/* Compute services a passed role runs in, and what it takes to start them. */
static const struct {
    const char *service;
    const char *launch[3];
    const char *via; /* the edge, in the evidence */
} compute_launch[] = {
    {"ec2.amazonaws.com", {"ec2:RunInstances"}, "iam:PassRole to a new EC2 instance"},
    {"lambda.amazonaws.com",
     {"lambda:CreateFunction", "lambda:InvokeFunction"},
     "iam:PassRole to a new Lambda function"},
    {"ecs-tasks.amazonaws.com",
     {"ecs:RegisterTaskDefinition", "ecs:RunTask"},
     "iam:PassRole to a new ECS task"},
    {"codebuild.amazonaws.com",
     {"codebuild:CreateProject", "codebuild:StartBuild"},
     "iam:PassRole to a new CodeBuild project"},
    {"sagemaker.amazonaws.com",
     {"sagemaker:CreateNotebookInstance", "sagemaker:CreatePresignedNotebookInstanceUrl"},
     "iam:PassRole to a new SageMaker notebook"},
    {"cloudformation.amazonaws.com",
     {"cloudformation:CreateStack"},
     "iam:PassRole to a new CloudFormation stack"},
    {"glue.amazonaws.com", {"glue:CreateDevEndpoint"}, "iam:PassRole to a new Glue dev endpoint"},
};

static const char *const user_takeover[] = {"iam:CreateAccessKey", "iam:CreateLoginProfile",
                                            "iam:UpdateLoginProfile"};

int audit_aws_graph_new(aws_graph **ret)
{
    aws_graph *g = calloc(1, sizeof(*g));
    if (!g || !(g->by_arn = json_object())) {
        free(g);
        return -ENOMEM;
    }
    *ret = g;
    return 0;
}

void audit_aws_graph_free(aws_graph *g)
{
    if (!g)
        return;
    for (size_t i = 0; i < g->n; i++) {
        free(g->nodes[i].arn);
        json_decref(g->nodes[i].docs);
        json_decref(g->nodes[i].trust);
    }
    free(g->nodes);
    free(g->edges);
    json_decref(g->by_arn);
    free(g);
}

/* The statements of a policy document, one at a time. */
static json_t *statement_at(json_t *doc, size_t k, size_t *ret_n)
{
    json_t *stmts = json_object_get(doc, "Statement");
    *ret_n = json_is_array(stmts) ? json_array_size(stmts) : (stmts ? 1 : 0);
    return json_is_array(stmts) ? json_array_get(stmts, k) : stmts;
}

/* v: one string or an array of strings; calls fn for each string. */
#define FOREACH_STR(v, s, body)                                                                    \
    do {                                                                                           \
        size_t n_ = json_is_array(v) ? json_array_size(v) : ((v) ? 1 : 0);                         \
        for (size_t i_ = 0; i_ < n_; i_++) {                                                       \
            const char *s = json_string_value(json_is_array(v) ? json_array_get(v, i_) : (v));     \
            if (s) {                                                                               \
                body;                                                                              \
            }                                                                                      \
        }                                                                                          \
    } while (0)

int audit_aws_graph_add(aws_graph *g, bool role, const char *arn, const char *account, json_t *docs,
                        json_t *trust, bool admin)
{
    graph_node *n;

    if (json_object_get(g->by_arn, arn))
        return 0; /* the same principal twice in one export: the first stands */
    if (g->n >= AWS_GRAPH_MAX_NODES)
        return -FERRY_ETOOBIG;
    if (g->n == g->alloc) {
        size_t na = g->alloc ? g->alloc * 2 : 64;
        graph_node *nn = reallocarray(g->nodes, na, sizeof(*nn));
        if (!nn)
            return -ENOMEM;
        g->nodes = nn;
        g->alloc = na;
    }
    n = &g->nodes[g->n];
    memset(n, 0, sizeof(*n));
    n->arn = strdup(arn);
    if (!n->arn || json_object_set_new(g->by_arn, arn, json_integer((json_int_t)g->n)) < 0) {
        free(n->arn);
        return -ENOMEM;
    }
    (void)snprintf(n->account, sizeof(n->account), "%s", account);
    n->role = role;
    n->admin = admin;
    n->docs = json_incref(docs);
    n->trust = json_incref(trust);
    if (audit_aws_action_allowed(docs, "sts:AssumeRole"))
        n->caps |= CAP_ASSUME;
    /* A passer's launch rights do not depend on the role passed: found once here, not for
     * every role it could pass. */
    if (audit_aws_action_allowed(docs, "iam:PassRole"))
        for (size_t s = 0; s < ARRAY_SIZE(compute_launch); s++) {
            bool all = true;
            for (size_t a = 0;
                 all && a < ARRAY_SIZE(compute_launch[s].launch) && compute_launch[s].launch[a];
                 a++)
                all = audit_aws_allowed(docs, compute_launch[s].launch[a], "*");
            if (all)
                n->launch |= 1u << s;
        }
    if (n->launch)
        n->caps |= CAP_PASS;
    for (size_t i = 0; i < ARRAY_SIZE(user_takeover); i++)
        if (audit_aws_action_allowed(docs, user_takeover[i]))
            n->caps |= CAP_USERCREDS;
    /* Compute services the trust policy names (unconditional Allow statements). */
    for (size_t k = 0, cnt = 1; trust && k < cnt; k++) {
        json_t *stmt = statement_at(trust, k, &cnt), *svc;
        const char *effect = json_string_value(json_object_get(stmt, "Effect"));
        if (!effect || strcmp(effect, "Allow") != 0 || json_object_get(stmt, "Condition"))
            continue;
        svc = json_object_get(json_object_get(stmt, "Principal"), "Service");
        FOREACH_STR(svc, s, {
            for (size_t i = 0; i < ARRAY_SIZE(compute_launch); i++)
                if (strcmp(s, compute_launch[i].service) == 0)
                    n->compute |= 1u << i;
        });
    }
    g->n++;
    return 0;
}

static int add_edge(aws_graph *g, size_t from, size_t to, const char *via)
{
    if (from == to)
        return 0;
    if (g->n_edges == g->alloc_edges) {
        size_t na = g->alloc_edges ? g->alloc_edges * 2 : 64;
        graph_edge *ne = reallocarray(g->edges, na, sizeof(*ne));
        if (!ne)
            return -ENOMEM;
        g->edges = ne;
        g->alloc_edges = na;
    }
    g->edges[g->n_edges++] = (graph_edge){from, to, via};
    return 0;
}

static bool node_index(const aws_graph *g, const char *arn, size_t *ret)
{
    json_t *v = json_object_get(g->by_arn, arn);
    if (!v)
        return false;
    *ret = (size_t)json_integer_value(v);
    return true;
}

/* The edges into role r from its trust policy. */
static int trust_edges(aws_graph *g, size_t r)
{
    graph_node *role = &g->nodes[r];
    bool any = false, root = false;
    char root_arn[40];
    int ret;

    (void)snprintf(root_arn, sizeof(root_arn), "arn:aws:iam::%s:root", role->account);
    for (size_t k = 0, cnt = 1; k < cnt; k++) {
        json_t *stmt = statement_at(role->trust, k, &cnt), *p, *act, *aws;
        const char *effect = json_string_value(json_object_get(stmt, "Effect"));
        bool assume = false;
        if (!effect || strcmp(effect, "Allow") != 0 || json_object_get(stmt, "Condition"))
            continue;
        act = json_object_get(stmt, "Action");
        FOREACH_STR(act, s, {
            if (audit_aws_glob_action(s, "sts:AssumeRole"))
                assume = true;
        });
        if (!assume)
            continue;
        p = json_object_get(stmt, "Principal");
        if (json_is_string(p) && strcmp(json_string_value(p), "*") == 0) {
            any = true;
            continue;
        }
        aws = json_object_get(p, "AWS");
        FOREACH_STR(aws, s, {
            size_t from;
            if (strcmp(s, "*") == 0)
                any = true;
            else if (strcmp(s, role->account) == 0 || strcmp(s, root_arn) == 0)
                root = true;
            else if (node_index(g, s, &from) &&
                     strcmp(g->nodes[from].account, role->account) == 0 &&
                     (ret = add_edge(g, from, r, "sts:AssumeRole (named in the trust policy)")) < 0)
                return ret;
        });
    }
    if (!any && !root)
        return 0;
    /* Trusting the account (or anyone): the principals whose own policies allow it. */
    for (size_t i = 0; i < g->n; i++) {
        const graph_node *p = &g->nodes[i];
        if (i == r || !(p->caps & CAP_ASSUME) || (!any && strcmp(p->account, role->account) != 0))
            continue;
        if (audit_aws_allowed(p->docs, "sts:AssumeRole", role->arn) &&
            (ret = add_edge(g, i, r, "sts:AssumeRole")) < 0)
            return ret;
    }
    return 0;
}

/* Principals that can pass role r to a compute service it trusts and start that compute. */
static int pass_edges(aws_graph *g, size_t r)
{
    const graph_node *role = &g->nodes[r];
    for (size_t i = 0; i < g->n; i++) {
        const graph_node *p = &g->nodes[i];
        unsigned both = p->launch & role->compute;
        if (i == r || !both || strcmp(p->account, role->account) != 0 ||
            !audit_aws_allowed(p->docs, "iam:PassRole", role->arn))
            continue;
        for (size_t s = 0; s < ARRAY_SIZE(compute_launch); s++)
            if (both & (1u << s)) {
                int ret = add_edge(g, i, r, compute_launch[s].via);
                if (ret < 0)
                    return ret;
                break;
            }
    }
    return 0;
}

/* Principals that can mint credentials for user u. */
static int takeover_edges(aws_graph *g, size_t u)
{
    const graph_node *user = &g->nodes[u];
    for (size_t i = 0; i < g->n; i++) {
        const graph_node *p = &g->nodes[i];
        if (i == u || !(p->caps & CAP_USERCREDS) || strcmp(p->account, user->account) != 0)
            continue;
        for (size_t a = 0; a < ARRAY_SIZE(user_takeover); a++)
            if (audit_aws_allowed(p->docs, user_takeover[a], user->arn)) {
                int ret = add_edge(g, i, u, user_takeover[a]);
                if (ret < 0)
                    return ret;
                break;
            }
    }
    return 0;
}

static int cmp_edge(const void *x, const void *y)
{
    const graph_edge *a = x, *b = y;
    if (a->from != b->from)
        return a->from < b->from ? -1 : 1;
    return a->to < b->to ? -1 : a->to > b->to;
}

static int emit_path(aws_graph *g, ferry_audit *a, const char *path, size_t src, size_t dst,
                     const size_t *prev_edge)
{
    json_t *steps = json_array(), *ev = NULL;
    size_t hops[AWS_GRAPH_MAX_DEPTH], n = 0;
    int r = -ENOMEM;

    if (!steps)
        return -ENOMEM;
    for (size_t v = dst; v != src && n < AWS_GRAPH_MAX_DEPTH; v = g->edges[prev_edge[v]].from)
        hops[n++] = prev_edge[v];
    while (n-- > 0) {
        const graph_edge *e = &g->edges[hops[n]];
        if (json_array_append_new(steps, json_pack("{s:s, s:s, s:s}", "from", g->nodes[e->from].arn,
                                                   "to", g->nodes[e->to].arn, "via", e->via)) < 0)
            goto out;
    }
    ev = json_pack("{s:s, s:O, s:I}", "admin_principal", g->nodes[dst].arn, "path", steps, "steps",
                   (json_int_t)json_array_size(steps));
    if (ev)
        r = audit_emit(a, "AWS-OP-006", -1, "aws", g->nodes[src].account, g->nodes[src].arn, ev,
                       "escalation-path", path);
out:
    json_decref(ev);
    json_decref(steps);
    return r;
}

int audit_aws_graph_run(aws_graph *g, ferry_audit *a, const char *path)
{
    size_t *first = NULL, *prev = NULL, *depth = NULL, *queue = NULL;
    int r = 0;

    for (size_t i = 0; i < g->n && r == 0; i++) {
        if (g->nodes[i].role && g->nodes[i].trust)
            r = trust_edges(g, i);
        if (r == 0 && g->nodes[i].role && g->nodes[i].compute)
            r = pass_edges(g, i);
        if (r == 0 && !g->nodes[i].role)
            r = takeover_edges(g, i);
    }
    if (r < 0 || g->n_edges == 0)
        return r;
    /* Adjacency: edges sorted by source; v's edges are first[v] .. first[v + 1] - 1. */
    qsort(g->edges, g->n_edges, sizeof(*g->edges), cmp_edge);
    first = calloc(g->n + 1, sizeof(*first));
    prev = calloc(g->n, sizeof(*prev));
    depth = calloc(g->n, sizeof(*depth));
    queue = calloc(g->n, sizeof(*queue));
    if (!first || !prev || !depth || !queue) {
        r = -ENOMEM;
        goto out;
    }
    for (size_t e = 0; e < g->n_edges; e++)
        first[g->edges[e].from + 1]++;
    for (size_t v = 0; v < g->n; v++)
        first[v + 1] += first[v];
    for (size_t src = 0; src < g->n && r == 0; src++) {
        size_t head = 0, tail = 0, found = SIZE_MAX;
        if (g->nodes[src].admin || first[src] == first[src + 1])
            continue;
        for (size_t v = 0; v < g->n; v++)
            depth[v] = SIZE_MAX;
        depth[src] = 0;
        queue[tail++] = src;
        while (head < tail && found == SIZE_MAX) {
            size_t v = queue[head++];
            if (depth[v] >= AWS_GRAPH_MAX_DEPTH)
                continue;
            for (size_t e = first[v]; e < first[v + 1]; e++) {
                size_t w = g->edges[e].to;
                if (depth[w] != SIZE_MAX)
                    continue;
                depth[w] = depth[v] + 1;
                prev[w] = e;
                if (g->nodes[w].admin) {
                    found = w;
                    break;
                }
                queue[tail++] = w;
            }
        }
        if (found != SIZE_MAX)
            r = emit_path(g, a, path, src, found, prev);
    }
out:
    free(first);
    free(prev);
    free(depth);
    free(queue);
    return r;
}
