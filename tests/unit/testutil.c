/* tests/unit/testutil.c - helpers shared by the Criterion unit tests. */
#include "config.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "testutil.h"

static char *path_join(const char *a, const char *b)
{
    size_t n = strlen(a) + strlen(b) + 2;
    char *p = malloc(n);

    if (p)
        snprintf(p, n, "%s/%s", a, b);
    return p;
}

const char *tu_shared_dir(void)
{
    static char dir[4096];
    static int state; /* 0 unknown, 1 present, -1 absent */
    const char *env;
    struct stat st;

    if (state)
        return state > 0 ? dir : NULL;
    env = secure_getenv("FERRY_SHARED");
    if (!env || !*env)
        env = "../shared";
    snprintf(dir, sizeof(dir), "%s", env);
    char *v = path_join(dir, "vectors");
    state = (v && stat(v, &st) == 0 && S_ISDIR(st.st_mode)) ? 1 : -1;
    free(v);
    return state > 0 ? dir : NULL;
}

bool tu_vectors_required(void)
{
    const char *e = secure_getenv("FERRY_REQUIRE_VECTORS");
    return e && strcmp(e, "1") == 0;
}

char *tu_vector_path(const char *rel)
{
    const char *s = tu_shared_dir();
    char *v, *p;

    if (!s)
        return NULL;
    v = path_join(s, "vectors");
    if (!v)
        return NULL;
    p = path_join(v, rel);
    free(v);
    return p;
}

char *tu_src_path(const char *rel)
{
    const char *s = secure_getenv("FERRY_SRCDIR");
    return path_join(s && *s ? s : ".", rel);
}

char *tu_read_file(const char *path, size_t max, size_t *ret_len)
{
    FILE *f = fopen(path, "rbe");
    char *buf = NULL;
    size_t len = 0, cap = 0;

    if (!f)
        return NULL;
    for (;;) {
        if (len + 4096 + 1 > cap) {
            size_t ncap = cap ? cap * 2 : 8192;
            char *nb = realloc(buf, ncap);
            if (!nb)
                goto fail;
            buf = nb;
            cap = ncap;
        }
        size_t n = fread(buf + len, 1, 4096, f);
        len += n;
        if (len > max)
            goto fail;
        if (n < 4096) {
            if (ferror(f))
                goto fail;
            break;
        }
    }
    fclose(f);
    if (!buf) {
        buf = malloc(1);
        if (!buf)
            return NULL;
    }
    buf[len] = '\0';
    if (ret_len)
        *ret_len = len;
    return buf;
fail:
    fclose(f);
    free(buf);
    return NULL;
}

json_t *tu_load_json(const char *path)
{
    size_t len;
    char *buf = tu_read_file(path, 16u << 20, &len);
    json_error_t err;
    json_t *j;

    if (!buf)
        return NULL;
    j = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &err);
    free(buf);
    return j;
}

static int cmp_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

void tu_free_list(char **names, size_t n)
{
    for (size_t i = 0; names && i < n; i++)
        free(names[i]);
    free(names);
}

char **tu_list_vectors(const char *rel_dir, const char *suffix, size_t *ret_n)
{
    char *dir = tu_vector_path(rel_dir);
    size_t n = 0, cap = 0, sl = strlen(suffix);
    char **names = NULL;
    struct dirent *e;
    DIR *d;

    if (!dir)
        return NULL;
    d = opendir(dir);
    free(dir);
    if (!d)
        return NULL;
    while ((e = readdir(d))) {
        size_t l = strlen(e->d_name);

        if (l <= sl || strcmp(e->d_name + l - sl, suffix) != 0)
            continue;
        if (n == cap) {
            char **nn = realloc(names, (cap ? cap * 2 : 256) * sizeof(*names));
            if (!nn)
                goto fail;
            names = nn;
            cap = cap ? cap * 2 : 256;
        }
        names[n] = strdup(e->d_name);
        if (!names[n])
            goto fail;
        n++;
    }
    closedir(d);
    qsort(names, n, sizeof(*names), cmp_name);
    *ret_n = n;
    return names;
fail:
    closedir(d);
    tu_free_list(names, n);
    return NULL;
}

char *tu_read_vector(const char *rel_dir, const char *name, size_t max, size_t *ret_len)
{
    char rel[1024], *path, *buf;

    snprintf(rel, sizeof(rel), "%s/%s", rel_dir, name);
    path = tu_vector_path(rel);
    if (!path)
        return NULL;
    buf = tu_read_file(path, max, ret_len);
    free(path);
    return buf;
}

json_t *tu_load_vector_json(const char *rel_dir, const char *name)
{
    char rel[1024], *path;
    json_t *j;

    snprintf(rel, sizeof(rel), "%s/%s", rel_dir, name);
    path = tu_vector_path(rel);
    if (!path)
        return NULL;
    j = tu_load_json(path);
    free(path);
    return j;
}
