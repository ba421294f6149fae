/* tests/bench/bench_policy.c - cost of one policy decision as the policy set grows.
 *
 * For each size (default 10, 1000 and 10000 policies) this program generates a realistic set:
 * several issuers (Kubernetes clusters, GitHub Actions, a corporate IdP, an EKS cluster), about
 * 60 % exact subjects (service accounts, GitHub repositories pinned to a branch, users) and
 * 40 % glob subjects (a namespace's service accounts, all branches of a repository, an
 * organisation's repositories, users of a group), a third of them with claim rules, each
 * granting scopes, an audience, a TTL and some secrets or cloud roles. It loads the set
 * through ferry_policy_builder_add_buffer (as from files), then times ferry_policy_decide +
 * ferry_policy_grant_free over a fixed pool of identities (matching and non-matching,
 * drawn the same way for every size) and prints the median, p90, p99 and mean per decision.
 * A miss differs from a policy's subject in its first byte, so it is refused by the index
 * (no candidate) rather than after a claim check.
 *
 * Every decision's outcome is checked against the expectation recorded when the identity
 * was generated (granted or refused); a mismatch fails the run (exit 1).
 *
 * Output, one line per size:
 *   policies=N issuers=I decisions=D granted=G median_ns=X p90_ns=Y p99_ns=Z mean_ns=W
 *   load_ms=L
 * Timing: clock_gettime(CLOCK_MONOTONIC) around batches of 16 decisions (a single decision
 * is close to the clock's own cost); the per-decision figure of a batch is its time / 16.
 *
 * This is a benchmark, not a test: it is built only by `make bench`.
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <sched.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "ferry/error.h"
#include "ferry/policy.h"

#define BATCH 16
#define PER_DOC 1000

static const char *const issuers[] = {
    "https://oidc.eks.us-west-2.amazonaws.com/id/5E3A1B0C7D2F4E6A8B9C0D1E2F3A4B5C",
    "https://kubernetes.default.svc.cluster.local",
    "https://token.actions.githubusercontent.com",
    "https://login.example.com",
    "https://container.googleapis.com/v1/projects/ml-prod/locations/us-central1/clusters/gpu",
    "https://sts.windows.net/3f2b6c1e-9a4d-4e57-8c21-5d0e7b9a1f34/",
};
#define N_ISSUERS (sizeof(issuers) / sizeof(*issuers))

static uint64_t rng_state;

static uint32_t rnd(void)
{
    /* xorshift64*: fixed seed so every size sees the same kind of traffic */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (uint32_t)((rng_state * UINT64_C(2685821657736338717)) >> 32);
}

/* The subject family of policy i: returns the subject (exact or glob) for the kind. */
static void policy_subject(size_t i, unsigned iss, char *out, size_t n, bool *glob)
{
    unsigned k = (unsigned)(i % 10);

    *glob = k >= 6;
    switch (iss) {
    case 2: /* GitHub Actions */
        if (!*glob)
            snprintf(out, n, "repo:org%zu/repo%zu:ref:refs/heads/main", i % 97, i);
        else if (k < 8)
            snprintf(out, n, "repo:org%zu/repo%zu:*", i % 97, i);
        else
            snprintf(out, n, "repo:org%zu/*:environment:production", i % 97);
        break;
    case 3: /* humans */
    case 5:
        if (!*glob)
            snprintf(out, n, "user-%zu", i);
        else
            snprintf(out, n, "user-%zu-*", i);
        break;
    default: /* Kubernetes service accounts */
        if (!*glob)
            snprintf(out, n, "system:serviceaccount:ns%zu:sa%zu", i % 211, i);
        else
            snprintf(out, n, "system:serviceaccount:ns%zu:*", i);
        break;
    }
}

static char *make_doc(size_t first, size_t count, size_t total, size_t *ret_len)
{
    size_t cap = count * 900 + 64, off = 0;
    char *d = malloc(cap);

    if (!d)
        return NULL;
    off += (size_t)snprintf(d + off, cap - off, "{\"version\":1,\"policies\":[");
    for (size_t i = first; i < first + count; i++) {
        unsigned iss = (unsigned)(i % N_ISSUERS);
        char subject[160];
        bool glob;

        policy_subject(i, iss, subject, sizeof(subject), &glob);
        off += (size_t)snprintf(
            d + off, cap - off,
            "%s{\"id\":\"p%zu\",\"description\":\"generated policy %zu of %zu\","
            "\"match\":{\"issuer\":\"%s\",\"%s\":\"%s\","
            "\"audience\":[\"https://ferry.example.com\"]",
            i > first ? "," : "", i, i, total, issuers[iss], glob ? "subject_glob" : "subject",
            subject);
        if (i % 3 == 0)
            off += (size_t)snprintf(d + off, cap - off,
                                    ",\"claims\":[{\"claim\":\"team\","
                                    "\"one_of\":[\"ml\",\"infra\"]},"
                                    "{\"claim\":[\"ctx\",\"env\"],\"exact\":\"prod\"}]");
        off += (size_t)snprintf(
            d + off, cap - off,
            "},\"grant\":{\"scopes\":[\"read\",\"write:%zu\"],"
            "\"audiences\":[\"https://api%zu.example.com\"],"
            "\"max_ttl\":%zu,\"secrets\":[\"vault:kv/data/team%zu/*\"]",
            i % 7, i % 3, 900 + i % 2700, i % 13);
        if (i % 4 == 0)
            off += (size_t)snprintf(d + off, cap - off,
                                    ",\"aws\":[{\"role_arn\":\"arn:aws:iam::123456789012:role/"
                                    "r%zu\",\"session_duration\":900}]",
                                    i);
        off += (size_t)snprintf(d + off, cap - off, "}}");
    }
    off += (size_t)snprintf(d + off, cap - off, "]}");
    *ret_len = off;
    return d;
}

struct ident {
    const char *issuer;
    char subject[200];
    json_t *claims, *aud;
    bool expect_grant;
};

/* Identities: half derived from a policy of the set (so they match), half near misses. */
static void make_identities(struct ident *ids, size_t n, size_t total)
{
    for (size_t k = 0; k < n; k++) {
        size_t i = rnd() % total;
        unsigned iss = (unsigned)(i % N_ISSUERS);
        bool glob, hit = rnd() % 2 == 0;
        char subject[128];

        policy_subject(i, iss, subject, sizeof(subject), &glob);
        ids[k].issuer = issuers[iss];
        if (glob) { /* instantiate the glob */
            char *star = strchr(subject, '*');
            *star = '\0';
            snprintf(ids[k].subject, sizeof(ids[k].subject), "%s%s%s", subject,
                     hit ? "x7" : "", star[1] ? star + 1 : "");
            if (!hit) /* break the literal prefix */
                ids[k].subject[0] = 'X';
        } else {
            /* a miss differs in the first byte: no literal prefix of the set matches it */
            snprintf(ids[k].subject, sizeof(ids[k].subject), "%s%s", hit ? "" : "Z", subject);
        }
        ids[k].claims = json_pack("{s:s, s:{s:s}}", "team", "ml", "ctx", "env", "prod");
        ids[k].aud = json_pack("[s]", "https://ferry.example.com");
        ids[k].expect_grant = hit;
    }
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int run(size_t total, size_t decisions, size_t n_ids)
{
    ferry_policy_builder *b = NULL;
    ferry_policy_problems *pr = NULL;
    ferry_policy_set *set = NULL;
    struct ident *ids = calloc(n_ids, sizeof(*ids));
    size_t nb = decisions / BATCH, granted = 0, bad = 0;
    uint64_t *lat = calloc(nb, sizeof(*lat)), t0, sum = 0;
    const char *scopes[] = { "read" };
    int r = 1;

    if (!ids || !lat || ferry_policy_builder_new(&b) < 0 || ferry_policy_problems_new(&pr) < 0)
        goto out;
    t0 = now_ns();
    for (size_t first = 0; first < total; first += PER_DOC) {
        size_t len, count = total - first < PER_DOC ? total - first : PER_DOC;
        char name[32], *doc = make_doc(first, count, total, &len);
        int rr;

        if (!doc)
            goto out;
        snprintf(name, sizeof(name), "gen-%zu.json", first);
        rr = ferry_policy_builder_add_buffer(b, name, doc, len, pr);
        free(doc);
        if (rr < 0) {
            const ferry_policy_problem *p = ferry_policy_problems_get(pr, 0);
            fprintf(stderr, "bench_policy: generated policies refused: %s:%u: %s\n",
                    p ? p->file : "?", p ? p->line : 0, p ? p->reason : ferry_strerror(rr));
            goto out;
        }
    }
    if (ferry_policy_builder_finish(b, &set, pr) < 0) {
        fprintf(stderr, "bench_policy: finish failed\n");
        goto out;
    }
    {
        double load_ms = (double)(now_ns() - t0) / 1e6;
        rng_state = UINT64_C(0x9E3779B97F4A7C15);
        make_identities(ids, n_ids, total);

        for (size_t k = 0; k < n_ids; k++) { /* warm up and check every identity once */
            ferry_policy_request req = { .issuer = ids[k].issuer, .subject = ids[k].subject,
                                         .audience = ids[k].aud, .claims = ids[k].claims,
                                         .scopes = scopes, .n_scopes = 1 };
            ferry_policy_grant *g = NULL;
            int rr = ferry_policy_decide(set, &req, &g, NULL);
            if ((rr == 0) != ids[k].expect_grant) {
                if (bad++ < 5)
                    fprintf(stderr, "bench_policy: %s %s: %s, expected %s\n", ids[k].issuer,
                            ids[k].subject, rr == 0 ? "granted" : "refused",
                            ids[k].expect_grant ? "granted" : "refused");
            }
            granted += rr == 0;
            ferry_policy_grant_free(g);
        }
        for (size_t bi = 0; bi < nb; bi++) {
            uint64_t s = now_ns();
            for (size_t j = 0; j < BATCH; j++) {
                const struct ident *id = &ids[(bi * BATCH + j) % n_ids];
                ferry_policy_request req = { .issuer = id->issuer, .subject = id->subject,
                                             .audience = id->aud, .claims = id->claims,
                                             .scopes = scopes, .n_scopes = 1 };
                ferry_policy_grant *g = NULL;
                (void)ferry_policy_decide(set, &req, &g, NULL);
                ferry_policy_grant_free(g);
            }
            lat[bi] = now_ns() - s;
            sum += lat[bi];
        }
        qsort(lat, nb, sizeof(*lat), cmp_u64);
        printf("policies=%zu issuers=%zu decisions=%zu identities=%zu granted=%zu mismatches=%zu "
               "median_ns=%.0f p90_ns=%.0f p99_ns=%.0f mean_ns=%.0f load_ms=%.1f\n",
               total, (size_t)N_ISSUERS, nb * BATCH, n_ids, granted, bad,
               (double)lat[nb / 2] / BATCH, (double)lat[nb * 90 / 100] / BATCH,
               (double)lat[nb * 99 / 100] / BATCH, (double)sum / (double)(nb * BATCH),
               load_ms);
    }
    r = bad ? 1 : 0;
out:
    for (size_t k = 0; ids && k < n_ids; k++) {
        json_decref(ids[k].claims);
        json_decref(ids[k].aud);
    }
    free(ids);
    free(lat);
    ferry_policy_set_unref(set);
    ferry_policy_builder_free(b);
    ferry_policy_problems_free(pr);
    return r;
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "decisions", required_argument, NULL, 'd' },
        { "identities", required_argument, NULL, 'i' },
        { "cpu", required_argument, NULL, 'c' },
        { "help", no_argument, NULL, 'h' },
        {},
    };
    size_t decisions = 400000, n_ids = 4096;
    int c, status = 0, cpu = -1;

    while ((c = getopt_long(argc, argv, "d:i:c:h", longopts, NULL)) != -1) {
        switch (c) {
        case 'd':
            decisions = strtoul(optarg, NULL, 10);
            break;
        case 'i':
            n_ids = strtoul(optarg, NULL, 10);
            break;
        case 'c':
            cpu = (int)strtol(optarg, NULL, 10);
            break;
        case 'h':
            printf("usage: bench_policy [--decisions N] [--identities N] [--cpu CPU] "
                   "[SIZE...]\n  default sizes: 10 1000 10000\n");
            return 0;
        default:
            return 2;
        }
    }
    if (decisions < BATCH * 100 || n_ids == 0) {
        fprintf(stderr, "bench_policy: --decisions >= %d and --identities >= 1\n", BATCH * 100);
        return 2;
    }
    if (cpu >= 0) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(cpu, &set);
        if (sched_setaffinity(0, sizeof(set), &set) < 0)
            fprintf(stderr, "bench_policy: cannot pin to CPU %d: %s\n", cpu, strerror(errno));
    }
    if (optind == argc) {
        static const size_t sizes[] = { 10, 1000, 10000 };
        for (size_t i = 0; i < sizeof(sizes) / sizeof(*sizes); i++)
            status |= run(sizes[i], decisions, n_ids);
    } else {
        for (int i = optind; i < argc; i++) {
            size_t n = strtoul(argv[i], NULL, 10);
            if (n == 0 || n > FERRY_POLICY_TOTAL_MAX) {
                fprintf(stderr, "bench_policy: bad size '%s'\n", argv[i]);
                return 2;
            }
            status |= run(n, decisions, n_ids);
        }
    }
    return status;
}
