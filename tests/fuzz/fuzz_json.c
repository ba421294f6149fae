/* tests/fuzz/fuzz_json.c - libFuzzer target: ferry_json_parse() against jansson.
 *
 * Input bytes are a JSON text. Both json_loadb(buf, len, JSON_REJECT_DUPLICATES, &err) and
 * ferry_json_parse() read it; the target abort()s when they disagree, except for the
 * differences documented in ferry/json.h:
 *   - every raw NUL byte is refused by ferry; when jansson accepts an input with NUL bytes
 *     (one swallowed after a number or literal), ferry must accept the input without them and
 *     build the identical tree;
 *   - jansson refuses values nested more than 2048 deep (scalars count); ferry is run without
 *     a depth limit here and may accept those.
 * "Identical tree" = the same json_dumps() text (compact, member order kept, 17-digit reals)
 * and json_equal(). The same input is then parsed with max_depth 16 (refused with
 * -FERRY_ETOOBIG exactly when the tree is deeper) and with max_len one byte short (always
 * -FERRY_ETOOBIG).
 *
 * Built and run by tests/fuzz/run.sh (seeds: tests/fuzz/corpus/fuzz_json/ and the
 * JSONTestSuite files). By hand, from the source tree with a configured build in BUILD:
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
 *       -IBUILD -Iinclude -Isrc tests/fuzz/fuzz_json.c src/lib/json.c src/lib/error.c \
 *       -o /tmp/fuzz_json -ljansson
 *   mkdir -p /tmp/fj && /tmp/fuzz_json -max_len=16384 -max_total_time=300 /tmp/fj \
 *       tests/fuzz/corpus/fuzz_json ../shared/vectors/JSONTestSuite/test_parsing
 */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "ferry/error.h"
#include "ferry/json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void die(const char *why, const uint8_t *data, size_t size)
{
    fprintf(stderr, "fuzz_json: %s (input of %zu bytes)\n", why, size);
    (void)data;
    abort();
}

static bool same_tree(const json_t *a, const json_t *b)
{
    size_t flags = JSON_COMPACT | JSON_REAL_PRECISION(17) | JSON_ENCODE_ANY;
    char *ca = json_dumps(a, flags), *cb = json_dumps(b, flags);
    bool same = ca && cb && strcmp(ca, cb) == 0 && json_equal(a, b);

    free(ca);
    free(cb);
    return same;
}

/* Container nesting depth of a tree (the top level is 1). */
static unsigned tree_depth(const json_t *j)
{
    unsigned max = 0;

    if (json_is_object(j)) {
        const char *k;
        json_t *v;

        json_object_foreach((json_t *)j, k, v) {
            unsigned d = tree_depth(v);
            if (d > max)
                max = d;
        }
        return max + 1;
    }
    if (json_is_array(j)) {
        size_t i;
        json_t *v;

        json_array_foreach(j, i, v) {
            unsigned d = tree_depth(v);
            if (d > max)
                max = d;
        }
        return max + 1;
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_error_t je;
    json_t *a = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, &je);
    json_t *b = NULL, *c = NULL;
    char eb[FERRY_JSON_ERR_LEN];
    int r = ferry_json_parse(data, size, SIZE_MAX, UINT_MAX, &b, eb, sizeof(eb));
    bool has_nul = memchr(data, 0, size) != NULL;

    if (r != 0 && r != -FERRY_EMALFORMED && r != -ERANGE)
        die("unexpected error code", data, size);
    if ((r == 0) != (b != NULL))
        die("result and ret_json disagree", data, size);
    if (r != 0 && !strstr(eb, " at byte "))
        die("error message without offset", data, size);
    if (r == 0 && eb[0])
        die("message on success", data, size);

    if (has_nul) {
        if (r == 0)
            die("ferry accepted a raw NUL byte", data, size);
        if (a) {
            uint8_t *stripped = malloc(size);
            size_t n = 0;

            if (!stripped)
                abort();
            for (size_t i = 0; i < size; i++)
                if (data[i])
                    stripped[n++] = data[i];
            if (ferry_json_parse(stripped, n, SIZE_MAX, UINT_MAX, &c, NULL, 0) != 0)
                die("jansson accepts with NUL bytes, ferry refuses without them", data, size);
            if (!same_tree(a, c))
                die("trees differ (NUL bytes stripped)", data, size);
            json_decref(c);
            free(stripped);
        }
    } else if (!a && r == 0 && json_error_code(&je) == json_error_stack_overflow) {
        /* deeper than jansson's own limit */
    } else if (!a != !b) {
        fprintf(stderr, "jansson: %s; ferry: %s\n", a ? "accepts" : je.text, b ? "accepts" : eb);
        die("accept/refuse disagreement", data, size);
    } else if (a && !same_tree(a, b)) {
        die("trees differ", data, size);
    }

    /* The limits. */
    {
        int r16 = ferry_json_parse(data, size, SIZE_MAX, 16, &c, NULL, 0);

        if (b && tree_depth(b) <= 16) {
            if (r16 != 0 || !same_tree(b, c))
                die("depth 16 refused a shallow document", data, size);
            json_decref(c);
        } else if (b) {
            if (r16 != -FERRY_ETOOBIG)
                die("depth 16 accepted a deep document", data, size);
        } else if (r16 == 0) {
            die("depth 16 accepted what no limit refused", data, size);
        }
        if (size > 0 && ferry_json_parse(data, size, size - 1, UINT_MAX, &c, NULL, 0) !=
                            -FERRY_ETOOBIG)
            die("max_len not enforced", data, size);
    }

    /* The located parse accepts and builds exactly the same, and knows every member's line. */
    {
        ferry_json_locs *locs = NULL;
        unsigned eline = 0;
        int rl = ferry_json_parse_located(data, size, SIZE_MAX, UINT_MAX, &c, &locs, &eline,
                                          NULL, 0);

        if (rl != r)
            die("located parse disagrees with ferry_json_parse", data, size);
        if (rl == 0) {
            const char *k;
            json_t *v;

            if (!same_tree(b, c))
                die("located parse built another tree", data, size);
            if (ferry_json_locs_line(locs, c, NULL) == 0)
                die("no line for the root", data, size);
            if (json_is_object(c))
                json_object_foreach (c, k, v)
                    if (ferry_json_locs_line(locs, c, k) == 0)
                        die("no line for a member", data, size);
            ferry_json_locs_free(locs);
            json_decref(c);
        } else if (eline == 0) {
            die("no line for a parse error", data, size);
        }
    }

    json_decref(a);
    json_decref(b);
    return 0;
}
