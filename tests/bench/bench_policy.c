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
 * Every size's set is loaded first; then --runs rounds (default 5) each measure every size in
 * turn (interleaved, so a slow phase of the machine hits all sizes alike). Before each timed
 * measurement the identities are decided once untimed (warm-up and outcome check), so each
 * measurement starts from the same state whatever was measured before it.
 *
 * Output: one line per size and round, then one summary line per size:
 *   run=R policies=N issuers=I decisions=D identities=K granted=G mismatches=M median_ns=X
 *   p90_ns=Y p99_ns=Z mean_ns=W load_ms=L
 *   summary policies=N runs=R median_ns=X median_min_ns=A median_max_ns=B p90_ns=Y p99_ns=Z
 *   mean_ns=W ratio=Q ratio_max=QM load_ms=L
 * where the summary's median/p90/p99/mean are the medians over the rounds, and ratio (ratio_max)
 * is the median (largest) over the rounds of this size's median divided by the first size's
 * median in the same round.
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

struct size_run {
    size_t total;
    ferry_policy_set *set;
    struct ident *ids;
    size_t n_ids;
    double load_ms;
    double *median, *p90, *p99, *mean, *ratio; /* one per round */
};

static void size_run_release(struct size_run *sr)
{
    for (size_t k = 0; sr->ids && k < sr->n_ids; k++) {
        json_decref(sr->ids[k].claims);
        json_decref(sr->ids[k].aud);
    }
    free(sr->ids);
    free(sr->median);
    free(sr->p90);
    free(sr->p99);
    free(sr->mean);
    free(sr->ratio);
    ferry_policy_set_unref(sr->set);
}

/* Load a set of sr->total generated policies and make its identities. Returns 0 or 1. */
static int load(struct size_run *sr, size_t n_ids, size_t runs)
{
    ferry_policy_builder *b = NULL;
    ferry_policy_problems *pr = NULL;
    uint64_t t0;
    int r = 1;

    sr->n_ids = n_ids;
    sr->ids = calloc(n_ids, sizeof(*sr->ids));
    sr->median = calloc(runs, sizeof(double));
    sr->p90 = calloc(runs, sizeof(double));
    sr->p99 = calloc(runs, sizeof(double));
    sr->mean = calloc(runs, sizeof(double));
    sr->ratio = calloc(runs, sizeof(double));
    if (!sr->ids || !sr->median || !sr->p90 || !sr->p99 || !sr->mean || !sr->ratio ||
        ferry_policy_builder_new(&b) < 0 || ferry_policy_problems_new(&pr) < 0)
        goto out;
    t0 = now_ns();
    for (size_t first = 0; first < sr->total; first += PER_DOC) {
        size_t len, count = sr->total - first < PER_DOC ? sr->total - first : PER_DOC;
        char name[32], *doc = make_doc(first, count, sr->total, &len);
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
    if (ferry_policy_builder_finish(b, &sr->set, pr) < 0) {
        fprintf(stderr, "bench_policy: finish failed\n");
        goto out;
    }
    sr->load_ms = (double)(now_ns() - t0) / 1e6;
    rng_state = UINT64_C(0x9E3779B97F4A7C15);
    make_identities(sr->ids, n_ids, sr->total);
    r = 0;
out:
    ferry_policy_builder_free(b);
    ferry_policy_problems_free(pr);
    return r;
}

/* One timed measurement of a loaded size (round run). Returns 0, or 1 on a wrong outcome. */
static int measure(struct size_run *sr, size_t run, size_t decisions, uint64_t *lat)
{
    size_t nb = decisions / BATCH, granted = 0, bad = 0;
    const char *scopes[] = { "read" };
    uint64_t sum = 0;

    for (size_t k = 0; k < sr->n_ids; k++) { /* warm up and check every identity once */
        const struct ident *id = &sr->ids[k];
        ferry_policy_request req = { .issuer = id->issuer, .subject = id->subject,
                                     .audience = id->aud, .claims = id->claims,
                                     .scopes = scopes, .n_scopes = 1 };
        ferry_policy_grant *g = NULL;
        int rr = ferry_policy_decide(sr->set, &req, &g, NULL);
        if ((rr == 0) != id->expect_grant) {
            if (bad++ < 5)
                fprintf(stderr, "bench_policy: %s %s: %s, expected %s\n", id->issuer,
                        id->subject, rr == 0 ? "granted" : "refused",
                        id->expect_grant ? "granted" : "refused");
        }
        granted += rr == 0;
        ferry_policy_grant_free(g);
    }
    for (size_t bi = 0; bi < nb; bi++) {
        uint64_t s = now_ns();
        for (size_t j = 0; j < BATCH; j++) {
            const struct ident *id = &sr->ids[(bi * BATCH + j) % sr->n_ids];
            ferry_policy_request req = { .issuer = id->issuer, .subject = id->subject,
                                         .audience = id->aud, .claims = id->claims,
                                         .scopes = scopes, .n_scopes = 1 };
            ferry_policy_grant *g = NULL;
            (void)ferry_policy_decide(sr->set, &req, &g, NULL);
            ferry_policy_grant_free(g);
        }
        lat[bi] = now_ns() - s;
        sum += lat[bi];
    }
    qsort(lat, nb, sizeof(*lat), cmp_u64);
    sr->median[run] = (double)lat[nb / 2] / BATCH;
    sr->p90[run] = (double)lat[nb * 90 / 100] / BATCH;
    sr->p99[run] = (double)lat[nb * 99 / 100] / BATCH;
    sr->mean[run] = (double)sum / (double)(nb * BATCH);
    printf("run=%zu policies=%zu issuers=%zu decisions=%zu identities=%zu granted=%zu "
           "mismatches=%zu median_ns=%.0f p90_ns=%.0f p99_ns=%.0f mean_ns=%.0f load_ms=%.1f\n",
           run + 1, sr->total, (size_t)N_ISSUERS, nb * BATCH, sr->n_ids, granted, bad,
           sr->median[run], sr->p90[run], sr->p99[run], sr->mean[run], sr->load_ms);
    fflush(stdout);
    return bad ? 1 : 0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Median of v[0..n) (sorts v). */
static double median_of(double *v, size_t n)
{
    qsort(v, n, sizeof(*v), cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static int bench(const size_t *sizes, size_t n_sizes, size_t decisions, size_t n_ids, size_t runs)
{
    struct size_run *sr = calloc(n_sizes, sizeof(*sr));
    uint64_t *lat = calloc(decisions / BATCH, sizeof(*lat));
    int status = 0;

    if (!sr || !lat) {
        status = 1;
        goto out;
    }
    for (size_t i = 0; i < n_sizes; i++) {
        sr[i].total = sizes[i];
        if (load(&sr[i], n_ids, runs) != 0) {
            status = 1;
            goto out;
        }
    }
    for (size_t run = 0; run < runs; run++)
        for (size_t i = 0; i < n_sizes; i++) {
            status |= measure(&sr[i], run, decisions, lat);
            sr[i].ratio[run] = sr[i].median[run] / sr[0].median[run];
        }
    for (size_t i = 0; i < n_sizes; i++) {
        double mmin = sr[i].median[0], mmax = sr[i].median[0], rmax = sr[i].ratio[0];
        for (size_t run = 1; run < runs; run++) {
            mmin = sr[i].median[run] < mmin ? sr[i].median[run] : mmin;
            mmax = sr[i].median[run] > mmax ? sr[i].median[run] : mmax;
            rmax = sr[i].ratio[run] > rmax ? sr[i].ratio[run] : rmax;
        }
        printf("summary policies=%zu runs=%zu identities=%zu median_ns=%.0f median_min_ns=%.0f "
               "median_max_ns=%.0f p90_ns=%.0f p99_ns=%.0f mean_ns=%.0f ratio=%.2f "
               "ratio_max=%.2f load_ms=%.1f\n",
               sr[i].total, runs, n_ids, median_of(sr[i].median, runs), mmin, mmax,
               median_of(sr[i].p90, runs), median_of(sr[i].p99, runs),
               median_of(sr[i].mean, runs), median_of(sr[i].ratio, runs), rmax, sr[i].load_ms);
    }
out:
    for (size_t i = 0; sr && i < n_sizes; i++)
        size_run_release(&sr[i]);
    free(sr);
    free(lat);
    return status;
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "decisions", required_argument, NULL, 'd' },
        { "identities", required_argument, NULL, 'i' },
        { "cpu", required_argument, NULL, 'c' },
        { "runs", required_argument, NULL, 'r' },
        { "help", no_argument, NULL, 'h' },
        {},
    };
    static const size_t default_sizes[] = { 10, 1000, 10000 };
    size_t decisions = 400000, n_ids = 4096, runs = 5, n_sizes = 0;
    size_t *sizes = NULL;
    int c, status, cpu = -1;

    while ((c = getopt_long(argc, argv, "d:i:c:r:h", longopts, NULL)) != -1) {
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
        case 'r':
            runs = strtoul(optarg, NULL, 10);
            break;
        case 'h':
            printf("usage: bench_policy [--decisions N] [--identities N] [--cpu CPU] "
                   "[--runs N] [SIZE...]\n  default sizes: 10 1000 10000; 5 runs\n");
            return 0;
        default:
            return 2;
        }
    }
    if (decisions < BATCH * 100 || n_ids == 0 || runs == 0 || runs > 1000) {
        fprintf(stderr, "bench_policy: --decisions >= %d, --identities >= 1, --runs 1..1000\n",
                BATCH * 100);
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
        n_sizes = sizeof(default_sizes) / sizeof(*default_sizes);
        sizes = malloc(sizeof(default_sizes));
        if (!sizes)
            return 2;
        memcpy(sizes, default_sizes, sizeof(default_sizes));
    } else {
        n_sizes = (size_t)(argc - optind);
        sizes = calloc(n_sizes, sizeof(*sizes));
        if (!sizes)
            return 2;
        for (size_t i = 0; i < n_sizes; i++) {
            sizes[i] = strtoul(argv[optind + (int)i], NULL, 10);
            if (sizes[i] == 0 || sizes[i] > FERRY_POLICY_TOTAL_MAX) {
                fprintf(stderr, "bench_policy: bad size '%s'\n", argv[optind + (int)i]);
                free(sizes);
                return 2;
            }
        }
    }
    status = bench(sizes, n_sizes, decisions, n_ids, runs);
    free(sizes);
    return status;
}
