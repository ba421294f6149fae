/* tests/unit/testutil.h - helpers shared by the Criterion unit tests. */
#ifndef FERRY_TESTUTIL_H
#define FERRY_TESTUTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <jansson.h>

/* Path of ../shared (the third-party vectors and samples), from $FERRY_SHARED, or NULL when
 * it does not exist. Static string. */
const char *tu_shared_dir(void);

/* Path under ../shared/vectors, e.g. tu_vector_path("wycheproof/testvectors_v1/x.json").
 * Returns a new string (free) or NULL when the shared folder is missing. */
char *tu_vector_path(const char *rel);

/* Skip the current Criterion test, saying why, when ../shared/vectors is missing. Tests that
 * use vectors call this first. In CI (FERRY_REQUIRE_VECTORS=1) a missing folder fails instead. */
#define TU_REQUIRE_VECTORS()                                                                   \
    do {                                                                                       \
        if (!tu_shared_dir()) {                                                                \
            if (tu_vectors_required())                                                         \
                cr_assert_fail("../shared/vectors missing but FERRY_REQUIRE_VECTORS=1");           \
            cr_skip_test("../shared/vectors not found (set FERRY_SHARED); skipping");          \
        }                                                                                      \
    } while (0)

bool tu_vectors_required(void);

/* Read a whole file (at most max bytes) into a new NUL-terminated buffer. NULL on error. */
char *tu_read_file(const char *path, size_t max, size_t *ret_len);

/* Load a JSON file (any size up to 16 MiB) with JSON_REJECT_DUPLICATES; NULL on error. */
json_t *tu_load_json(const char *path);

/* Sorted names of the files ending in suffix in the vectors folder rel_dir (e.g.
 * "JSONTestSuite/test_parsing", ".json"). New array of new strings (tu_free_list), count in
 * *ret_n; NULL when the folder cannot be read or memory runs out. */
char **tu_list_vectors(const char *rel_dir, const char *suffix, size_t *ret_n);
void tu_free_list(char **names, size_t n);

/* Read rel_dir/name from the vectors folder (at most max bytes), NUL-terminated, or NULL. */
char *tu_read_vector(const char *rel_dir, const char *name, size_t max, size_t *ret_len);

/* Load rel_dir/name from the vectors folder as JSON (tu_load_json rules), or NULL. */
json_t *tu_load_vector_json(const char *rel_dir, const char *name);

/* Path of a file in the source tree (tests/data/...), new string. */
char *tu_src_path(const char *rel);

#endif
