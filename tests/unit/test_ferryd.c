/* tests/unit/test_ferryd.c - ferryd's form decoder and configuration file (no network). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "ferryd/configfile.h"
#include "ferryd/ferryd.h"

static int decode(const char *body, ferry_exchange_param **p, size_t *n, char **buf)
{
    return ferryd_form_decode(body, strlen(body), p, n, buf);
}

static void expect_param(const ferry_exchange_param *p, const char *name, const char *value,
                         size_t value_len)
{
    cr_assert_eq(p->name_len, strlen(name));
    cr_assert(memcmp(p->name, name, p->name_len) == 0, "name %.*s", (int)p->name_len, p->name);
    cr_assert_eq(p->value_len, value_len);
    cr_assert(memcmp(p->value, value, value_len) == 0, "value %.*s", (int)p->value_len, p->value);
}

Test(form, decodes_in_order_with_duplicates_plus_and_escapes)
{
    ferry_exchange_param *p;
    size_t n;
    char *buf;

    cr_assert_eq(decode("a=1&scope=x+y&scope=%41%2b%3d%26&empty=&n%00=%00z", &p, &n, &buf), 0);
    cr_assert_eq(n, 5);
    expect_param(&p[0], "a", "1", 1);
    expect_param(&p[1], "scope", "x y", 3);
    expect_param(&p[2], "scope", "A+=&", 4);
    expect_param(&p[3], "empty", "", 0);
    cr_assert_eq(p[4].name_len, 2);
    cr_assert(memcmp(p[4].name, "n\0", 2) == 0);
    cr_assert_eq(p[4].value_len, 2);
    cr_assert(memcmp(p[4].value, "\0z", 2) == 0);
    free(p);
    free(buf);
}

Test(form, empty_body_is_no_parameter)
{
    ferry_exchange_param *p;
    size_t n = 7;
    char *buf;

    cr_assert_eq(decode("", &p, &n, &buf), 0);
    cr_assert_eq(n, 0);
    free(p);
    free(buf);
}

Test(form, malformed_bodies_are_refused)
{
    static const char *const bad[] = {
        "a",     "a=1&",  "&a=1", "a=1&&b=2", "=1",    "a=%",    "a=%4",
        "a=%4g", "a=%zz", "%=1",  "a=1&b",    "a=1&=", "a=%%41",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ferry_exchange_param *p = (void *)1;
        size_t n = 9;
        char *buf = (void *)1;
        cr_assert_eq(decode(bad[i], &p, &n, &buf), -EINVAL, "\"%s\" accepted", bad[i]);
        cr_assert_null(p);
        cr_assert_null(buf);
        cr_assert_eq(n, 0);
    }
}

/* ---- configuration ------------------------------------------------------------------------ */

static char *write_tmp(const char *text)
{
    char *path = strdup("/tmp/ferryd-test-XXXXXX");
    int fd = mkstemp(path);
    cr_assert(fd >= 0);
    cr_assert_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    return path;
}

static int load(const char *text, ferryd_config *c, char *err, size_t errlen)
{
    char *path = write_tmp(text);
    cr_assert_eq(ferryd_config_init(c), 0);
    int r = ferryd_config_load(c, path, err, errlen);
    if (r == 0)
        r = ferryd_config_finish(c, err, errlen);
    unlink(path);
    free(path);
    return r;
}

Test(config, defaults_without_a_file)
{
    ferryd_config c;
    char err[256] = "";

    cr_assert_eq(ferryd_config_init(&c), 0);
    cr_assert_eq(ferryd_config_finish(&c, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(c.n_listen, 1);
    cr_assert_str_eq(c.listen[0], "127.0.0.1:8787");
    cr_assert_str_eq(c.issuer, "http://127.0.0.1:8787");
    cr_assert_str_eq(c.state_dir, FERRY_STATEDIR);
    cr_assert_str_eq(c.policies_dir, FERRY_SYSCONFDIR "/policies");
    cr_assert_str_eq(c.audit_path, FERRY_STATEDIR "/audit.log");
    cr_assert_eq(c.limits.max_body, 65536);
    ferryd_config_free(&c);
}

Test(config, a_full_file)
{
    ferryd_config c;
    char err[256] = "";

    cr_assert_eq(load("{\"listen\": [\"[::1]:9000\", \"unix:/tmp/x.sock\"],\n"
                      " \"issuer\": \"https://ferry.test\", \"signing_alg\": \"EdDSA\",\n"
                      " \"token\": {\"default_ttl\": 60, \"max_ttl\": 120},\n"
                      " \"audit_log\": {\"sync\": \"batch\", \"checkpoint_every\": 7},\n"
                      " \"limits\": {\"max_body\": 2048, \"connections_per_ip\": 0},\n"
                      " \"issuers\": [], \"replay_cache_size\": 10}",
                      &c, err, sizeof(err)),
                 0, "%s", err);
    cr_assert_eq(c.n_listen, 2);
    cr_assert_str_eq(c.listen[1], "unix:/tmp/x.sock");
    cr_assert_str_eq(c.issuer, "https://ferry.test");
    cr_assert_eq(c.alg, FERRY_ALG_EDDSA);
    cr_assert_eq(c.default_ttl, 60);
    cr_assert_eq(c.max_ttl, 120);
    cr_assert_eq(c.sync, FERRY_AUDITLOG_SYNC_BATCH);
    cr_assert_eq(c.checkpoint_every, 7);
    cr_assert_eq(c.limits.max_body, 2048);
    cr_assert_eq(c.limits.connections_per_ip, 0);
    cr_assert_eq(json_integer_value(json_object_get(c.trust, "replay_cache_size")), 10);
    ferryd_config_free(&c);
}

Test(config, errors_name_the_line)
{
    static const struct {
        const char *text, *want;
    } cases[] = {
        {"{\n\n \"bogus\": 1}", ":3: unknown member \"bogus\" in the configuration"},
        {"{\"limits\": {\n \"max_bodyy\": 1}}", ":2: unknown member \"max_bodyy\" in limits"},
        {"{\"limits\": {\"max_body\": 10}}", "limits.max_body must be an integer from 1024"},
        {"{\"token\": {\"default_ttl\": 100, \"max_ttl\": 10}}", "must not exceed"},
        {"{\"signing_alg\": \"HS256\"}", "signing_alg must be"},
        {"{\"audit_log\": {\"sync\": \"never\"}}", "audit_log.sync must be"},
        {"{\"listen\": []}", "listen must be an array"},
        {"{\"listen\": [\"127.0.0.1:99999\"]}", "want IPV4:PORT"},
        {"{\"listen\": [\"0.0.0.0:80\"]}", "issuer is required"},
        {"{\"state_dir\": \"\"}", "non-empty string"},
        {"{\"a\": 1, \"a\": 2}", ":1:"},
        {"[1]", "must be a JSON object"},
        {"{\"issuers\": {}}", "issuers must be an array"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        ferryd_config c;
        char err[256] = "";
        cr_assert_eq(load(cases[i].text, &c, err, sizeof(err)), -EINVAL, "case %zu accepted", i);
        cr_assert(strstr(err, cases[i].want), "case %zu: \"%s\" lacks \"%s\"", i, err,
                  cases[i].want);
        ferryd_config_free(&c);
    }
}
