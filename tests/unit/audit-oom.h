/* tests/unit/audit-oom.h - the allocation-failure sweep of the audit unit tests: fail each
 * allocation of a whole run in turn (the run from the first allocation), and require of every
 * run that it either fails with -ENOMEM (-FERRY_ECRYPTO when OpenSSL's allocation failed) or
 * succeeds with exactly the undisturbed report ref: an allocation failure never makes a quieter
 * report. The sweep ends at the first run into which no failure was injected (every allocation
 * was covered), which must come after 100 and before max allocations.
 *
 * Include after criterion.h and allocfail.h (with FERRY_ALLOCFAIL_NTH defined).
 * AUDIT_OOM_SWEEP(max, ref, call): call is an expression returning the run's code and
 * writing its report to `out` (e.g. oom_run(ctx, &out)). */
#ifndef FERRY_TEST_AUDIT_OOM_H
#define FERRY_TEST_AUDIT_OOM_H

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>

#include "ferry/audit.h"
#include "ferry/error.h"

/* The end of one run of a sweep: finish a (when r, the run's code so far, is 0), render its
 * JSON report into *ret (only when everything succeeded: new), free a. Returns the run's code. */
static inline int audit_oom_finish(ferry_audit *a, int r, char **ret)
{
    char *out = NULL, err[256];

    if (r == 0)
        r = ferry_audit_finish(a, err, sizeof(err));
    if (r == 0)
        r = ferry_audit_render(a, FERRY_AUDIT_OUT_JSON, &out, NULL);
    ferry_audit_free(a);
    if (r == 0)
        *ret = out;
    else
        free(out);
    return r;
}

#define AUDIT_OOM_SWEEP(max, ref, call)                                                            \
    do {                                                                                           \
        long n_;                                                                                   \
        for (n_ = 0; n_ < (max); n_++) {                                                           \
            char *out = NULL;                                                                      \
            int r_;                                                                                \
            bool hit_;                                                                             \
            inject_arm(n_);                                                                        \
            r_ = (call);                                                                           \
            hit_ = inject_disarm();                                                                \
            if (r_ == 0) {                                                                         \
                cr_assert_str_eq(out, (ref),                                                       \
                                 "allocation %ld failed, the run succeeded with another report",   \
                                 n_);                                                              \
            } else {                                                                               \
                cr_assert(hit_, "run without an injected failure returned %d", r_);                \
                cr_assert(r_ == -ENOMEM || r_ == -FERRY_ECRYPTO, "allocation %ld: got %d", n_,     \
                          r_);                                                                     \
            }                                                                                      \
            free(out);                                                                             \
            if (!hit_)                                                                             \
                break;                                                                             \
        }                                                                                          \
        cr_assert(n_ > 100 && n_ < (max), "%ld allocations", n_);                                  \
    } while (0)

#endif
