/* tests/fuzz/fuzz_secret_ref.c - libFuzzer target: ferry_secret_ref_parse() and the grant
 * matcher on hostile references.
 *
 * Properties: parsing never crashes or reads past the string; a parsed reference's canonical
 * form parses again to the same canonical form and backend (canonicalisation is idempotent);
 * the canonical form is granted by itself as an exact pattern; an input the parser refuses
 * leaves a reason. The second half of the input (after the first NUL) is
 * used as a grant pattern against the first: whatever it is, matching must not crash, and a
 * pattern granting a reference must also grant that reference's canonical form (matching is
 * on canonical forms only). */
#include "config.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ferry/error.h"
#include "ferry/secrets.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void die(const char *why, const char *ref)
{
    fprintf(stderr, "fuzz_secret_ref: %s: %s\n", why, ref);
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static ferry_secret_ref a, b;
    char err[512];
    char *in, *pat;
    const char *pats[2];

    if (size > 8192)
        return 0;
    in = malloc(size + 1);
    if (!in)
        return 0;
    memcpy(in, data, size);
    in[size] = '\0';
    pat = memchr(in, '\0', size) ? in + strlen(in) + 1 : NULL;
    if (pat > in + size)
        pat = NULL;

    err[0] = '\0';
    if (ferry_secret_ref_parse(in, &a, err, sizeof(err)) < 0) {
        if (!err[0])
            die("refused without a reason", in);
        free(in);
        return 0;
    }
    if (ferry_secret_ref_parse(a.canonical, &b, err, sizeof(err)) < 0)
        die("the canonical form does not parse", a.canonical);
    if (strcmp(a.canonical, b.canonical) != 0 || a.backend != b.backend)
        die("canonicalisation is not idempotent", a.canonical);
    pats[0] = a.canonical;
    if (!ferry_secret_ref_granted(pats, 1, &a))
        die("not granted by its own canonical form", a.canonical);
    if (pat) {
        pats[0] = pat;
        bool g1 = ferry_secret_ref_granted(pats, 1, &a);
        bool g2 = ferry_secret_ref_granted(pats, 1, &b);
        if (g1 != g2)
            die("a pattern decides a reference and its canonical form differently", a.canonical);
    }
    free(in);
    return 0;
}
