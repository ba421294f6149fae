/* tests/unit/test_auditlog.c - unit tests of the audit log (include/ferry/auditlog.h).
 *
 * Every rule of docs/internals/auditlog.md: record format and hash (recomputed here from the
 * documented definition), checkpoint cadence and ranges, the final checkpoint, reopen and
 * continue (clean, after a crash, refused when broken, partial tail refused or repaired), each
 * kind of tampering named at the right line, secrets refused (JWT-like values, sizes, reals),
 * write and sync failures that fail closed and block further appends (RLIMIT_FSIZE and an
 * interposed fdatasync), sync policies (fdatasync counted), key rotation, concurrent appends.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <openssl/evp.h>

#include "ferry/auditlog.h"
#include "ferry/error.h"
#include "ferry/jose.h"
#include "testutil.h"

/* ---- fdatasync interposition: the library's calls land here (static link) ------------------ */

static atomic_int sync_calls;
static atomic_int sync_fail_after = -1; /* fail once this many more calls have passed */

int fdatasync(int fd)
{
    atomic_fetch_add(&sync_calls, 1);
    if (atomic_load(&sync_fail_after) == 0) {
        atomic_store(&sync_fail_after, -1);
        errno = EIO;
        return -1;
    }
    if (atomic_load(&sync_fail_after) > 0)
        atomic_fetch_sub(&sync_fail_after, 1);
    return (int)syscall(SYS_fdatasync, fd);
}

/* fsync on a directory: counted, so a test can see the new log's directory entry synced. */
static atomic_int dir_syncs;

int fsync(int fd)
{
    struct stat st;

    if (fstat(fd, &st) == 0 && S_ISDIR(st.st_mode))
        atomic_fetch_add(&dir_syncs, 1);
    return (int)syscall(SYS_fsync, fd);
}

/* ---- helpers ----------------------------------------------------------------------------- */

#define NOW_US INT64_C(1700000000000000)

static int64_t fake_clock(void *ud)
{
    atomic_llong *t = ud;
    return (int64_t)atomic_fetch_add(t, 1);
}

static atomic_llong clock_us = NOW_US;
static char dir[64];
static char path[128];

static void mkdir_tmp(void)
{
    snprintf(dir, sizeof(dir), "/tmp/ferry-auditlog-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/audit.log", dir);
    atomic_store(&clock_us, NOW_US);
}

static void rm_tmp(void)
{
    char p[192];
    const char *names[] = {"audit.log", "copy.log"};
    for (size_t i = 0; i < 2; i++) {
        snprintf(p, sizeof(p), "%s/%s", dir, names[i]);
        unlink(p);
    }
    rmdir(dir);
}

TestSuite(auditlog, .init = mkdir_tmp, .fini = rm_tmp);

static ferry_jwk *gen_key(void)
{
    ferry_jwk *k = NULL;
    cr_assert_eq(ferry_jwk_generate(FERRY_ALG_ES256, &k), 0);
    return k;
}

/* A key set holding the public halves of keys (the way `ferry keys jwks` publishes them). */
static ferry_jwks *pub_set(ferry_jwk **keys, size_t n)
{
    ferry_jwks *priv = NULL, *pub = NULL;
    json_t *doc = NULL;
    cr_assert_eq(ferry_jwks_from_keys(keys, n, &priv), 0);
    cr_assert_eq(ferry_jwks_to_public_json(priv, &doc), 0);
    cr_assert_eq(ferry_jwks_from_json(doc, &pub, NULL), 0);
    cr_assert_eq(ferry_jwks_count(pub), n);
    json_decref(doc);
    ferry_jwks_unref(priv);
    return pub;
}

static ferry_auditlog_options opts_for(ferry_jwk *key, unsigned every)
{
    return (ferry_auditlog_options){.path = path,
                                    .checkpoint_every = every,
                                    .signing_key = key,
                                    .clock = fake_clock,
                                    .clock_userdata = &clock_us};
}

static ferry_auditlog *open_log(ferry_jwk *key, unsigned every)
{
    ferry_auditlog_options o = opts_for(key, every);
    ferry_auditlog *log = NULL;
    char err[512];
    int r = ferry_auditlog_open(&o, &log, err, sizeof(err));
    cr_assert_eq(r, 0, "open: %s (%s)", err, ferry_strerror(r));
    return log;
}

static int append_one(ferry_auditlog *log, unsigned i, uint64_t *seq)
{
    char subject[64];
    json_t *d = json_pack("{s:i, s:s, s:{s:s}}", "i", (json_int_t)i, "path", "/v1/token", "n", "x",
                          "ctl\001\177\xc3\xa9\xf0\x9f\x98\x80");
    ferry_auditlog_token_ref ref;
    ferry_auditlog_event ev = {.type = "token.exchange",
                               .decision = FERRY_AUDITLOG_ALLOW,
                               .subject = subject,
                               .token = &ref,
                               .details = d};
    int r;

    snprintf(subject, sizeof(subject), "user-%u", i);
    cr_assert_eq(ferry_auditlog_ref_token("opaque-token", 12, &ref), 0);
    r = ferry_auditlog_append(log, &ev, seq);
    json_decref(d);
    return r;
}

static void append_n(ferry_auditlog *log, unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        cr_assert_eq(append_one(log, i, NULL), 0, "append %u", i);
}

/* The file as an array of lines (without newlines); *ret_partial gets a last line without a
 * newline (or NULL). */
static char **read_lines(const char *p, size_t *ret_n)
{
    size_t len = 0, n = 0;
    char *data = tu_read_file(p, 64 << 20, &len);
    char **lines;

    cr_assert_not_null(data, "read %s", p);
    lines = calloc(len + 2, sizeof(*lines));
    for (char *s = data; *s;) {
        char *nl = strchr(s, '\n');
        size_t l = nl ? (size_t)(nl - s) : strlen(s);
        lines[n] = strndup(s, l);
        n++;
        s += l + (nl ? 1 : 0);
    }
    free(data);
    *ret_n = n;
    return lines;
}

static void free_lines(char **lines, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(lines[i]);
    free(lines);
}

static void write_lines(const char *p, char **lines, size_t n, bool final_newline)
{
    FILE *f = fopen(p, "we");
    cr_assert_not_null(f);
    for (size_t i = 0; i < n; i++)
        fprintf(f, "%s%s", lines[i], i + 1 < n || final_newline ? "\n" : "");
    fclose(f);
}

static json_t *parse_line(const char *line)
{
    json_error_t e;
    json_t *j = json_loads(line, JSON_REJECT_DUPLICATES, &e);
    cr_assert_not_null(j, "line does not parse: %s", e.text);
    return j;
}

/* hash = SHA-256(raw prev || line without its hash member), recomputed from the doc. */
static void compute_hash(const char *line, char out[65])
{
    size_t len = strlen(line);
    json_t *j = parse_line(line);
    const char *prev = json_string_value(json_object_get(j, "prev"));
    unsigned char raw[32], md[32];
    unsigned int mdlen;
    char *canon;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();

    cr_assert(len > 75 && strncmp(line + len - 75, ",\"hash\":\"", 9) == 0);
    for (int i = 0; i < 32; i++)
        cr_assert_eq(sscanf(prev + 2 * i, "%2hhx", &raw[i]), 1);
    canon = strndup(line, len - 75 + 1);
    canon[len - 75] = '}';
    EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
    EVP_DigestUpdate(ctx, raw, 32);
    EVP_DigestUpdate(ctx, canon, strlen(canon));
    EVP_DigestFinal_ex(ctx, md, &mdlen);
    EVP_MD_CTX_free(ctx);
    for (int i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
    free(canon);
    json_decref(j);
}

/* Replace the 64-hex value of member name ("prev" or "hash") in line (in place). */
static void set_hex_member(char *line, const char *name, const char *hex)
{
    char pat[32];
    char *p;
    snprintf(pat, sizeof(pat), "\"%s\":\"", name);
    p = strstr(line, pat);
    cr_assert_not_null(p);
    memcpy(p + strlen(pat), hex, 64);
}

/* Recompute prev/hash links from line `from` to the end, as a forger with no key would. */
static void rechain(char **lines, size_t n, size_t from)
{
    char h[65];
    for (size_t i = from; i < n; i++) {
        if (i > 0) {
            json_t *p = parse_line(lines[i - 1]);
            set_hex_member(lines[i], "prev", json_string_value(json_object_get(p, "hash")));
            json_decref(p);
        }
        compute_hash(lines[i], h);
        set_hex_member(lines[i], "hash", h);
    }
}

struct problems {
    size_t n;
    uint64_t line[16], seq[16];
    bool warning[16];
    char reason[16][FERRY_AUDITLOG_REASON_LEN];
};

static void collect(void *ud, const ferry_auditlog_problem *p)
{
    struct problems *ps = ud;
    if (ps->n < 16) {
        ps->line[ps->n] = p->line;
        ps->seq[ps->n] = p->seq;
        ps->warning[ps->n] = p->warning;
        snprintf(ps->reason[ps->n], FERRY_AUDITLOG_REASON_LEN, "%s", p->reason);
    }
    ps->n++;
}

static int verify(const char *p, const ferry_jwks *keys, bool live, struct problems *ps,
                  ferry_auditlog_report *rep)
{
    ferry_auditlog_verify_options vo = {.live = live, .on_problem = collect, .userdata = ps};
    memset(ps, 0, sizeof(*ps));
    return ferry_auditlog_verify(p, keys, &vo, rep);
}

/* A closed log of `events` events with checkpoints every `every`, its key and public set. */
struct fixture {
    ferry_jwk *key;
    ferry_jwks *pub;
    char **lines;
    size_t n;
};

static void fixture_make(struct fixture *f, unsigned events, unsigned every)
{
    ferry_auditlog *log;
    f->key = gen_key();
    f->pub = pub_set(&f->key, 1);
    log = open_log(f->key, every);
    append_n(log, events);
    cr_assert_eq(ferry_auditlog_close(log), 0);
    f->lines = read_lines(path, &f->n);
}

static void fixture_free(struct fixture *f)
{
    free_lines(f->lines, f->n);
    ferry_jwks_unref(f->pub);
    ferry_jwk_unref(f->key);
}

static const char *type_of(const char *line, json_t **keep)
{
    *keep = parse_line(line);
    return json_string_value(json_object_get(*keep, "type"));
}

/* Expect verification of the tampered copy to fail with the first problem at line (seq) and a
 * reason containing needle. */
static void expect_broken(struct fixture *f, char **lines, size_t n, bool final_nl, uint64_t line,
                          uint64_t seq, const char *needle)
{
    struct problems ps;
    ferry_auditlog_report rep;
    char copy[192];
    int r;

    snprintf(copy, sizeof(copy), "%s/copy.log", dir);
    write_lines(copy, lines, n, final_nl);
    r = verify(copy, f->pub, false, &ps, &rep);
    cr_assert_eq(r, -FERRY_EREFUSED, "tampered log verified (%s)", ferry_strerror(r));
    cr_assert_geq(ps.n, 1);
    cr_assert_eq(rep.first_bad_line, line, "first bad line %" PRIu64 ", want %" PRIu64 ": %s",
                 rep.first_bad_line, line, rep.first_bad_reason);
    cr_assert_eq(rep.first_bad_seq, seq, "first bad seq %" PRIu64 ", want %" PRIu64 ": %s",
                 rep.first_bad_seq, seq, rep.first_bad_reason);
    cr_assert_not_null(strstr(rep.first_bad_reason, needle), "reason '%s' lacks '%s'",
                       rep.first_bad_reason, needle);
    cr_assert_eq(ps.line[0], line);
    cr_assert_str_eq(ps.reason[0], rep.first_bad_reason);
}

/* ---- reading records through the verifier ----------------------------------------------- */

struct seen {
    uint64_t seqs[64];
    size_t n;
    int fail_at; /* return -ENOMEM at this call (1-based), 0 = never */
};

static int on_record(void *ud, const json_t *rec)
{
    struct seen *s = ud;
    const char *type = json_string_value(json_object_get(rec, "type"));
    cr_assert(type && strcmp(type, "auditlog.checkpoint") != 0, "a checkpoint was passed on");
    cr_assert_null(json_object_get(rec, "hash"));
    if (s->n < 64)
        s->seqs[s->n] = (uint64_t)json_integer_value(json_object_get(rec, "seq"));
    if ((int)++s->n == s->fail_at)
        return -ENOMEM;
    return 0;
}

Test(auditlog, on_record_sees_each_verified_record_and_skip_unknown_kid_reads_the_chain)
{
    struct fixture f;
    struct seen s = {0};
    ferry_auditlog_verify_options vo = {.on_record = on_record, .userdata = &s};
    ferry_auditlog_report rep;
    char copy[192];

    fixture_make(&f, 10, 4);
    cr_assert_eq(ferry_auditlog_verify(path, f.pub, &vo, &rep), 0);
    /* open + 10 events, the checkpoints (after every 4 records and the final one) left out */
    cr_assert_eq(s.n, 11, "%zu records", s.n);
    for (size_t i = 1; i < s.n; i++)
        cr_assert_gt(s.seqs[i], s.seqs[i - 1]);
    cr_assert_eq(s.seqs[0], 1);

    /* Without keys: refused, unless skip_unknown_kid, which reads the same records. */
    memset(&s, 0, sizeof(s));
    cr_assert_eq(ferry_auditlog_verify(path, NULL, &vo, &rep), -FERRY_EREFUSED);
    cr_assert(strstr(rep.first_bad_reason, "unknown key"), "%s", rep.first_bad_reason);
    memset(&s, 0, sizeof(s));
    vo.skip_unknown_kid = true;
    cr_assert_eq(ferry_auditlog_verify(path, NULL, &vo, &rep), 0);
    cr_assert_eq(s.n, 11);
    cr_assert(rep.sealed);

    /* An edited record is not passed on, and the log is still refused. */
    snprintf(copy, sizeof(copy), "%s/copy.log", dir);
    char *was = f.lines[3];
    json_t *rec = parse_line(was);
    json_object_set_new(rec, "subject", json_string("someone-else"));
    f.lines[3] = json_dumps(rec, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(rec);
    write_lines(copy, f.lines, f.n, true);
    free(f.lines[3]);
    f.lines[3] = was;
    memset(&s, 0, sizeof(s));
    cr_assert_eq(ferry_auditlog_verify(copy, f.pub, &vo, &rep), -FERRY_EREFUSED);
    cr_assert_eq(s.n, 10, "the edited record (line 4) is left out");

    /* A negative return stops the verification and is returned. */
    memset(&s, 0, sizeof(s));
    s.fail_at = 3;
    cr_assert_eq(ferry_auditlog_verify(path, f.pub, &vo, &rep), -ENOMEM);
    cr_assert_eq(s.n, 3);
    fixture_free(&f);
}

/* ---- format ------------------------------------------------------------------------------ */

Test(auditlog, record_format_and_hash_follow_the_documented_definition)
{
    struct fixture f;
    json_t *j, *d;
    char h[65];

    fixture_make(&f, 3, 0);
    cr_assert_eq(f.n, 5); /* open, 3 events, final checkpoint */
    j = parse_line(f.lines[0]);
    cr_assert_str_eq(json_string_value(json_object_get(j, "type")), "auditlog.open");
    cr_assert_eq(json_integer_value(json_object_get(j, "seq")), 1);
    cr_assert_str_eq(json_string_value(json_object_get(j, "prev")),
                     "0000000000000000000000000000000000000000000000000000000000000000");
    cr_assert_str_eq(json_string_value(json_object_get(j, "time")), "2023-11-14T22:13:20.000001Z");
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(j, "details"), "previous")),
                     "none");
    json_decref(j);
    /* The documented member order (sorted) and escapes, byte for byte. */
    cr_assert(strncmp(f.lines[1],
                      "{\"decision\":\"allow\",\"details\":{\"i\":0,\"n\":{\"x\":"
                      "\"ctl\\u0001\\u007f\\u00e9\\ud83d\\ude00\"},\"path\":"
                      "\"/v1/token\"},\"prev\":\"",
                      98) == 0,
              "%s", f.lines[1]);
    for (size_t i = 0; i < f.n; i++) {
        j = parse_line(f.lines[i]);
        compute_hash(f.lines[i], h);
        cr_assert_str_eq(json_string_value(json_object_get(j, "hash")), h, "line %zu", i + 1);
        cr_assert_eq(json_integer_value(json_object_get(j, "seq")), (json_int_t)i + 1);
        if (i > 0) {
            json_t *p = parse_line(f.lines[i - 1]);
            cr_assert_str_eq(json_string_value(json_object_get(j, "prev")),
                             json_string_value(json_object_get(p, "hash")));
            json_decref(p);
        }
        for (const unsigned char *c = (const unsigned char *)f.lines[i]; *c; c++)
            cr_assert(*c >= 0x20 && *c < 0x7f, "line %zu has a raw byte 0x%02x", i + 1, *c);
        json_decref(j);
    }
    j = parse_line(f.lines[1]);
    d = json_object_get(j, "token");
    /* sha256("opaque-token"), computed independently */
    cr_assert_str_eq(json_string_value(json_object_get(d, "sha256")),
                     "84d3f23da9b5f51b3269566eff05d3fb23607eeef89567f9cd280b90ca0dbc5c");
    cr_assert_null(json_object_get(d, "jti"), "an opaque token has no jti");
    json_decref(j);
    fixture_free(&f);
}

/* Integers at the ends of their range, and objects with more members than are sorted on the
 * stack, are written as documented (Python's json.dumps(sort_keys=True) bytes) and verify. */
Test(auditlog, integer_extremes_and_large_objects_are_canonical)
{
    ferry_jwk *key = gen_key();
    ferry_jwks *pub = pub_set(&key, 1);
    ferry_auditlog *log = open_log(key, 0);
    json_t *d = json_pack("{s:I, s:I, s:i, s:i, s:i}", "max", (json_int_t)INT64_MAX, "min",
                          (json_int_t)INT64_MIN, "zero", 0, "m1", -1, "ten", 10);
    json_t *big = json_object();
    char expect[1024], name[8], *p;
    size_t n, o;
    char **lines;
    struct problems ps;
    ferry_auditlog_report rep;

    /* 20 members inserted in reverse order: "k00".."k19" must come out sorted. */
    o = (size_t)snprintf(expect, sizeof(expect), "\"big\":{");
    for (int i = 19; i >= 0; i--) {
        snprintf(name, sizeof(name), "k%02d", i);
        cr_assert_eq(json_object_set_new(big, name, json_integer(i)), 0);
    }
    for (int i = 0; i < 20; i++)
        o += (size_t)snprintf(expect + o, sizeof(expect) - o, "%s\"k%02d\":%d", i ? "," : "", i, i);
    snprintf(expect + o, sizeof(expect) - o, "}");
    cr_assert_eq(json_object_set_new(d, "big", big), 0);
    ferry_auditlog_event ev = {
        .type = "t.x", .decision = FERRY_AUDITLOG_INFO, .subject = "s", .details = d};
    cr_assert_eq(ferry_auditlog_append(log, &ev, NULL), 0);
    cr_assert_eq(ferry_auditlog_close(log), 0);
    lines = read_lines(path, &n);
    cr_assert_geq(n, 3);
    p = strstr(lines[1], "\"details\":{");
    cr_assert_not_null(p, "%s", lines[1]);
    p += strlen("\"details\":{");
    cr_assert(strncmp(p, expect, strlen(expect)) == 0, "%s", lines[1]);
    p += strlen(expect);
    {
        static const char rest[] = ",\"m1\":-1,\"max\":9223372036854775807,"
                                   "\"min\":-9223372036854775808,\"ten\":10,\"zero\":0},";
        cr_assert(strncmp(p, rest, strlen(rest)) == 0, "%s", lines[1]);
    }
    free_lines(lines, n);
    cr_assert_eq(verify(path, pub, false, &ps, &rep), 0, "%s", rep.first_bad_reason);
    json_decref(d);
    ferry_jwks_unref(pub);
    ferry_jwk_unref(key);
}

/* A clock that returns the given times in turn, then the last one again. */
struct seq_clock {
    const int64_t *t;
    size_t n, i;
};

static int64_t seq_clock_now(void *ud)
{
    struct seq_clock *c = ud;
    int64_t v = c->t[c->i < c->n ? c->i : c->n - 1];

    c->i++;
    return v;
}

/* Records are byte for byte what the documented format makes of fixed input: the lines below
 * were written by the serialiser before it wrote into one stack buffer (no ferry_buf), sorted
 * small objects by insertion, looked string bytes up in a table and formatted the time once a
 * second; every member, escape, hash and link must stay the same. Times cover a second's last
 * microsecond, the next second, and a time before the epoch (negative microseconds). */
Test(auditlog, records_are_byte_identical_to_the_reference_serialisation)
{
    static const int64_t times[] = {
        INT64_C(1700000000999999), INT64_C(1700000000999999), /* open: sync time, record */
        INT64_C(1700000000999999), INT64_C(1700000001000000), INT64_C(-1),
        INT64_C(1700000001500000),
    };
    static const char *const want[] = {
        "{\"decision\":\"info\",\"details\":{\"previous\":\"none\"},\"prev\":\"00000000000000"
        "00000000000000000000000000000000000000000000000000\",\"seq\":1,\"subject\":\"auditlo"
        "g\",\"time\":\"2023-11-14T22:13:20.999999Z\",\"type\":\"auditlog.open\",\"hash\":\"0"
        "bda38f88c0e847db4dc06ed0e24f8d964e772f6f17f3def6aa8c39e73f683e4\"}",
        "{\"decision\":\"allow\",\"details\":{\"alpha\":\"tab\\there \\\"q\\\" back\\\\slash "
        "\\u00e9 \\ud83d\\ude00 \\u0001\\u007f\",\"mid\":{\"k1\":2,\"k2\":{\"deep\":\"v\"},\""
        "k3\":1},\"num\":9007199254740993,\"zeta\":[true,false,null,-7,{\"a\":\"y\",\"b\":\"x"
        "\"}]},\"prev\":\"0bda38f88c0e847db4dc06ed0e24f8d964e772f6f17f3def6aa8c39e73f683e4\","
        "\"seq\":2,\"subject\":\"user-\\u00e9 \\\"quoted\\\"\",\"time\":\"2023-11-14T22:13:20"
        ".999999Z\",\"token\":{\"jti\":\"jti-1\\\\x\",\"sha256\":\"6d229884c1268bb0ab32d8da31"
        "5d0fe52f9147228bd830a37bc9fb28a954940d\"},\"type\":\"token.exchange\",\"hash\":\"588"
        "c4549b0cae6fcc34a228120ad1297a8d63596060ccc21ee245d71f5d85532\"}",
        "{\"decision\":\"deny\",\"prev\":\"588c4549b0cae6fcc34a228120ad1297a8d63596060ccc21ee"
        "245d71f5d85532\",\"seq\":3,\"subject\":\"\",\"time\":\"2023-11-14T22:13:21.000000Z\""
        ",\"type\":\"login_2fa-ok\",\"hash\":\"08e72531bbf017eefb6abdf72a5548d2fdbe74ab0677fa"
        "d33dda2c44654dc7f2\"}",
        "{\"decision\":\"error\",\"details\":{\"k1\":2,\"k2\":{\"deep\":\"v\"},\"k3\":1},\"pr"
        "ev\":\"08e72531bbf017eefb6abdf72a5548d2fdbe74ab0677fad33dda2c44654dc7f2\",\"seq\":4,"
        "\"subject\":\"svc\",\"time\":\"1969-12-31T23:59:59.999999Z\",\"token\":{\"sha256\":"
        "\"84d3f23da9b5f51b3269566eff05d3fb23607eeef89567f9cd280b90ca0dbc5c\"},\"type\":\"sec"
        "ret.read\",\"hash\":\"ac2d36f922c09d1f1f657e5f971295f738f6cf4e111531fa1f41ddf7e16954"
        "a1\"}",
        "{\"decision\":\"info\",\"details\":{\"alpha\":\"tab\\there \\\"q\\\" back\\\\slash "
        "\\u00e9 \\ud83d\\ude00 \\u0001\\u007f\",\"mid\":{\"k1\":2,\"k2\":{\"deep\":\"v\"},\""
        "k3\":1},\"num\":9007199254740993,\"zeta\":[true,false,null,-7,{\"a\":\"y\",\"b\":\"x"
        "\"}]},\"prev\":\"ac2d36f922c09d1f1f657e5f971295f738f6cf4e111531fa1f41ddf7e16954a1\","
        "\"seq\":5,\"subject\":\"\\t\",\"time\":\"2023-11-14T22:13:21.500000Z\",\"type\":\"x"
        "\",\"hash\":\"ad1c9d18445928dac5f1325695ae38c4989f83f18fe718d0eb5764a3591383d7\"}",
    };
    struct seq_clock clk = {times, sizeof(times) / sizeof(times[0]), 0};
    ferry_jwk *key = gen_key();
    ferry_auditlog_options o = opts_for(key, 0);
    ferry_auditlog *log = NULL;
    ferry_auditlog_token_ref ref, sha_only;
    json_t *d = json_pack(
        "{s:[b, b, n, i, {s:s, s:s}], s:s, s:{s:i, s:i, s:{s:s}}, s:I}", "zeta", 1, 0, -7, "b", "x",
        "a", "y", "alpha", "tab\there \"q\" back\\slash \xc3\xa9 \xf0\x9f\x98\x80 \x01\x7f", "mid",
        "k3", 1, "k1", 2, "k2", "deep", "v", "num", (json_int_t)INT64_C(9007199254740993));
    char err[512] = "", **lines;
    size_t n;

    cr_assert_not_null(d);
    o.clock = seq_clock_now;
    o.clock_userdata = &clk;
    cr_assert_eq(ferry_auditlog_open(&o, &log, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(ferry_auditlog_ref_token_jti("opaque", 6, "jti-1\\x", 7, &ref), 0);
    cr_assert_eq(ferry_auditlog_ref_token("opaque-token", 12, &sha_only), 0);
    ferry_auditlog_event ev[] = {
        {.type = "token.exchange",
         .decision = FERRY_AUDITLOG_ALLOW,
         .subject = "user-\xc3\xa9 \"quoted\"",
         .token = &ref,
         .details = d},
        {.type = "login_2fa-ok", .decision = FERRY_AUDITLOG_DENY, .subject = ""},
        {.type = "secret.read",
         .decision = FERRY_AUDITLOG_ERROR,
         .subject = "svc",
         .token = &sha_only,
         .details = json_object_get(d, "mid")},
        {.type = "x", .decision = FERRY_AUDITLOG_INFO, .subject = "\t", .details = d},
    };
    for (size_t i = 0; i < sizeof(ev) / sizeof(ev[0]); i++)
        cr_assert_eq(ferry_auditlog_append(log, &ev[i], NULL), 0, "event %zu", i);
    cr_assert_eq(ferry_auditlog_close(log), 0);
    lines = read_lines(path, &n);
    cr_assert_eq(n, sizeof(want) / sizeof(want[0]) + 1); /* and the final checkpoint */
    for (size_t i = 0; i + 1 < n; i++)
        cr_assert_str_eq(lines[i], want[i], "line %zu", i + 1);
    free_lines(lines, n);
    json_decref(d);
    ferry_jwk_unref(key);
}

Test(auditlog, a_clean_closed_log_verifies_and_is_sealed)
{
    struct fixture f;
    struct problems ps;
    ferry_auditlog_report rep;

    fixture_make(&f, 25, 10);
    cr_assert_eq(verify(path, f.pub, false, &ps, &rep), 0, "%s", rep.first_bad_reason);
    cr_assert_eq(ps.n, 0);
    cr_assert(rep.sealed);
    cr_assert_eq(rep.first_seq, 1);
    cr_assert_eq(rep.last_seq, f.n);
    cr_assert_eq(rep.records, f.n);
    cr_assert_eq(rep.checkpoints, 3); /* after 10 and 20 records, and the final one */
    cr_assert_eq(rep.last_checkpoint_seq, f.n);
    cr_assert(rep.last_checkpoint_final);
    cr_assert_eq(rep.unsigned_records, 0);
    fixture_free(&f);
}

Test(auditlog, checkpoints_come_every_n_records_with_their_ranges)
{
    struct fixture f;
    /* every 5: open(1) ev 2-5, cp 6 [1..5], ev 7-11, cp 12 [6..11], ev 13-15, final 16 */
    const struct {
        size_t line;
        uint64_t first, last;
        bool final;
    } want[] = {{6, 1, 5, false}, {12, 6, 11, false}, {16, 12, 15, true}};

    fixture_make(&f, 12, 5);
    cr_assert_eq(f.n, 16);
    for (size_t i = 0, w = 0; i < f.n; i++) {
        json_t *j;
        const char *t = type_of(f.lines[i], &j);
        if (w < 3 && i + 1 == want[w].line) {
            json_t *cp = json_object_get(j, "checkpoint");
            cr_assert_str_eq(t, "auditlog.checkpoint", "line %zu", i + 1);
            cr_assert_eq(json_integer_value(json_object_get(cp, "first")), want[w].first);
            cr_assert_eq(json_integer_value(json_object_get(cp, "last")), want[w].last);
            cr_assert_eq(json_is_true(json_object_get(cp, "final")), want[w].final);
            cr_assert_str_eq(json_string_value(json_object_get(cp, "head")),
                             json_string_value(json_object_get(j, "prev")));
            cr_assert_str_eq(json_string_value(json_object_get(cp, "kid")), ferry_jwk_kid(f.key));
            w++;
        } else {
            cr_assert_str_neq(t, "auditlog.checkpoint", "line %zu", i + 1);
        }
        json_decref(j);
    }
    fixture_free(&f);
}

Test(auditlog, explicit_checkpoint_is_not_final_and_close_is)
{
    ferry_jwk *key = gen_key();
    ferry_auditlog *log = open_log(key, 0);
    char **lines;
    size_t n;
    json_t *j;

    append_n(log, 2);
    cr_assert_eq(ferry_auditlog_checkpoint(log), 0);
    cr_assert_eq(ferry_auditlog_checkpoint(log), 0); /* nothing new: still allowed */
    cr_assert_eq(ferry_auditlog_last_seq(log), 5);
    cr_assert_eq(ferry_auditlog_close(log), 0);
    lines = read_lines(path, &n);
    cr_assert_eq(n, 6);
    for (size_t i = 3; i < 6; i++) {
        const char *t = type_of(lines[i], &j);
        cr_assert_str_eq(t, "auditlog.checkpoint");
        cr_assert_eq(json_is_true(json_object_get(json_object_get(j, "checkpoint"), "final")),
                     i == 5);
        json_decref(j);
    }
    free_lines(lines, n);
    ferry_jwk_unref(key);
}

/* ---- reopen ------------------------------------------------------------------------------ */

/* An acknowledged record survives a crash only if the new file's name does too: creating the
 * log syncs its directory; reopening an existing log does not need to. */
Test(auditlog, creating_the_log_syncs_its_directory)
{
    ferry_jwk *key = gen_key();
    ferry_auditlog *log;

    atomic_store(&dir_syncs, 0);
    log = open_log(key, 0);
    cr_assert_eq(atomic_load(&dir_syncs), 1, "directory synced %d times", atomic_load(&dir_syncs));
    cr_assert_eq(ferry_auditlog_close(log), 0);
    atomic_store(&dir_syncs, 0);
    log = open_log(key, 0);
    cr_assert_eq(atomic_load(&dir_syncs), 0);
    cr_assert_eq(ferry_auditlog_close(log), 0);
    ferry_jwk_unref(key);
}

Test(auditlog, reopen_continues_the_chain)
{
    ferry_jwk *key = gen_key();
    ferry_jwks *pub = pub_set(&key, 1);
    ferry_auditlog *log = open_log(key, 4);
    struct problems ps;
    ferry_auditlog_report rep;
    uint64_t seq = 0;
    char **lines;
    size_t n;
    json_t *j;

    append_n(log, 5);
    cr_assert_eq(ferry_auditlog_close(log), 0);
    log = open_log(key, 4);
    cr_assert_eq(append_one(log, 99, &seq), 0);
    cr_assert_eq(seq, 10); /* open 1, ev 2-4, cp 5, ev 6-7, final 8; open 9, ev 10 */
    cr_assert_eq(ferry_auditlog_close(log), 0);
    cr_assert_eq(verify(path, pub, false, &ps, &rep), 0, "%s", rep.first_bad_reason);
    lines = read_lines(path, &n);
    cr_assert_eq(rep.last_seq, n);
    j = parse_line(lines[8]);
    cr_assert_str_eq(json_string_value(json_object_get(j, "type")), "auditlog.open");
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(j, "details"), "previous")),
                     "sealed");
    json_decref(j);
    free_lines(lines, n);
    ferry_jwks_unref(pub);
    ferry_jwk_unref(key);
}

/* A log cut back to the final checkpoint of an earlier session is a valid sealed log: nothing
 * in the file can tell. The verifier catches it when told the least seq the log must reach
 * (min_last_seq, e.g. the range printed by an earlier verification). */
Test(auditlog, truncation_to_an_earlier_seal_is_caught_with_min_last_seq)
{
    ferry_jwk *key = gen_key();
    ferry_jwks *pub = pub_set(&key, 1);
    ferry_auditlog *log = open_log(key, 100);
    ferry_auditlog_verify_options vo = {0};
    ferry_auditlog_report rep;
    char copy[192];
    char **lines;
    size_t n;

    append_n(log, 3); /* open 1, ev 2-4, final 5 */
    cr_assert_eq(ferry_auditlog_close(log), 0);
    log = open_log(key, 100);
    append_n(log, 2); /* open 6, ev 7-8, final 9 */
    cr_assert_eq(ferry_auditlog_close(log), 0);
    lines = read_lines(path, &n);
    cr_assert_eq(n, 9);
    snprintf(copy, sizeof(copy), "%s/cut.log", dir);
    write_lines(copy, lines, 5, true);

    /* Alone, the cut copy is indistinguishable from the log as it was after session 1. */
    cr_assert_eq(ferry_auditlog_verify(copy, pub, NULL, &rep), 0);
    cr_assert(rep.sealed);
    vo.min_last_seq = 9;
    cr_assert_eq(ferry_auditlog_verify(path, pub, &vo, &rep), 0, "%s", rep.first_bad_reason);
    cr_assert_eq(ferry_auditlog_verify(copy, pub, &vo, &rep), -FERRY_EREFUSED);
    cr_assert_eq(rep.first_bad_line, 5);
    cr_assert_eq(rep.first_bad_seq, 5);
    cr_assert_not_null(strstr(rep.first_bad_reason, "log ends at seq 5, before seq 9"), "%s",
                       rep.first_bad_reason);
    vo.live = true;
    cr_assert_eq(ferry_auditlog_verify(copy, pub, &vo, &rep), -FERRY_EREFUSED);
    vo.min_last_seq = 5;
    cr_assert_eq(ferry_auditlog_verify(copy, pub, &vo, &rep), 0);
    free_lines(lines, n);
    ferry_jwks_unref(pub);
    ferry_jwk_unref(key);
}

Test(auditlog, reopen_after_a_crash_records_an_unsealed_previous_session)
{
    ferry_jwk *key = gen_key();
    ferry_jwks *pub = pub_set(&key, 1);
    struct problems ps;
    ferry_auditlog_report rep;
    ferry_auditlog *log;
    pid_t pid = fork();
    int status;
    char **lines;
    size_t n;
    json_t *j;

    cr_assert_geq(pid, 0);
    if (pid == 0) {
        log = open_log(key, 100);
        append_n(log, 3);
        _exit(0); /* no close: no final checkpoint */
    }
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    cr_assert_eq(verify(path, pub, false, &ps, &rep), -FERRY_EREFUSED);
    cr_assert_not_null(strstr(rep.first_bad_reason, "not sealed"));
    cr_assert_eq(rep.first_bad_line, 4);
    log = open_log(key, 100);
    cr_assert_eq(ferry_auditlog_close(log), 0);
    cr_assert_eq(verify(path, pub, false, &ps, &rep), 0, "%s", rep.first_bad_reason);
    lines = read_lines(path, &n);
    cr_assert_eq(n, 6);
    j = parse_line(lines[4]);
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(j, "details"), "previous")),
                     "unsealed");
    json_decref(j);
    /* The final checkpoint covers the records of the crashed session too. */
    j = parse_line(lines[5]);
    cr_assert_eq(json_integer_value(json_object_get(json_object_get(j, "checkpoint"), "first")), 1);
    json_decref(j);
    free_lines(lines, n);
    ferry_jwks_unref(pub);
    ferry_jwk_unref(key);
}

static int try_open(ferry_auditlog_options *o, char *err, size_t errlen)
{
    ferry_auditlog *log = NULL;
    int r = ferry_auditlog_open(o, &log, err, errlen);
    if (r == 0)
        cr_assert_eq(ferry_auditlog_close(log), 0);
    else
        cr_assert_null(log);
    return r;
}

Test(auditlog, reopen_refuses_a_broken_tail)
{
    struct fixture f;
    ferry_auditlog_options o;
    char err[512];
    size_t before;

    fixture_make(&f, 6, 0);
    f.lines[3][strlen(f.lines[3]) - 80] ^= 1; /* flip a byte inside the record */
    write_lines(path, f.lines, f.n, true);
    before = f.n;
    o = opts_for(f.key, 0);
    cr_assert_eq(try_open(&o, err, sizeof(err)), -FERRY_EMALFORMED);
    cr_assert_not_null(strstr(err, "line 4 (seq 4)"), "%s", err);
    cr_assert_not_null(strstr(err, "refusing"), "%s", err);
    /* Nothing was appended. */
    free_lines(f.lines, f.n);
    f.lines = read_lines(path, &f.n);
    cr_assert_eq(f.n, before);
    fixture_free(&f);
}

Test(auditlog, reopen_refuses_a_forged_checkpoint)
{
    struct fixture f;
    ferry_jwk *other = gen_key();
    ferry_auditlog *log;
    ferry_auditlog_options o;
    char err[512];

    /* A log written by another key whose kid claims to be ours: rename nothing, just reopen
     * with our key under a log signed by `other` whose kid we then fake. */
    fixture_make(&f, 3, 0);
    free_lines(f.lines, f.n);
    unlink(path);
    log = open_log(other, 0);
    append_n(log, 2);
    cr_assert_eq(ferry_auditlog_close(log), 0);
    {
        size_t n;
        char **lines = read_lines(path, &n);
        char *last = lines[n - 1], *kid = strstr(last, "\"kid\":\"");
        const char *ours = ferry_jwk_kid(f.key);
        cr_assert_not_null(kid);
        memcpy(kid + 7, ours, strlen(ours)); /* thumbprints have the same length */
        rechain(lines, n, n - 1);
        write_lines(path, lines, n, true);
        free_lines(lines, n);
    }
    o = opts_for(f.key, 0);
    cr_assert_eq(try_open(&o, err, sizeof(err)), -FERRY_EBADSIG, "%s", err);
    cr_assert_not_null(strstr(err, "line 4 (seq 4)"), "%s", err);
    f.lines = NULL;
    f.n = 0;
    ferry_jwk_unref(other);
    fixture_free(&f);
}

Test(auditlog, reopen_skips_unknown_kids_without_verify_keys_and_checks_them_with)
{
    ferry_jwk *old = gen_key(), *cur = gen_key(), *stranger = gen_key();
    ferry_jwks *pub_old = pub_set(&old, 1), *pub_stranger = pub_set(&stranger, 1);
    ferry_auditlog *log = open_log(old, 0);
    ferry_auditlog_options o;
    char err[512];

    append_n(log, 2);
    cr_assert_eq(ferry_auditlog_close(log), 0);
    o = opts_for(cur, 0);
    cr_assert_eq(try_open(&o, err, sizeof(err)), 0, "%s", err);
    o.verify_keys = pub_old;
    cr_assert_eq(try_open(&o, err, sizeof(err)), 0, "%s", err);
    o.verify_keys = pub_stranger;
    cr_assert_eq(try_open(&o, err, sizeof(err)), -FERRY_EMALFORMED, "%s", err);
    cr_assert_not_null(strstr(err, "unknown key"), "%s", err);
    ferry_jwks_unref(pub_old);
    ferry_jwks_unref(pub_stranger);
    ferry_jwk_unref(old);
    ferry_jwk_unref(cur);
    ferry_jwk_unref(stranger);
}

Test(auditlog, partial_last_line_is_refused_or_repaired_and_recorded)
{
    struct fixture f;
    ferry_auditlog_options o;
    struct problems ps;
    ferry_auditlog_report rep;
    char err[512];
    FILE *fp;
    json_t *j, *d;

    fixture_make(&f, 2, 0);
    fp = fopen(path, "ae");
    fputs("{\"decision\":\"allow\",\"det", fp);
    fclose(fp);
    cr_assert_eq(verify(path, f.pub, false, &ps, &rep), -FERRY_EREFUSED);
    cr_assert_eq(rep.first_bad_line, f.n + 1);
    cr_assert_not_null(strstr(rep.first_bad_reason, "incomplete last line"));
    o = opts_for(f.key, 0);
    cr_assert_eq(try_open(&o, err, sizeof(err)), -FERRY_EMALFORMED);
    cr_assert_not_null(strstr(err, "line 5 is incomplete"), "%s", err);
    o.repair_tail = true;
    cr_assert_eq(try_open(&o, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(verify(path, f.pub, false, &ps, &rep), 0, "%s", rep.first_bad_reason);
    free_lines(f.lines, f.n);
    f.lines = read_lines(path, &f.n);
    cr_assert_eq(f.n, 6);
    j = parse_line(f.lines[4]);
    d = json_object_get(j, "details");
    cr_assert_eq(json_integer_value(json_object_get(d, "repaired_tail_bytes")), 24);
    cr_assert_eq(strlen(json_string_value(json_object_get(d, "repaired_tail_sha256"))), 64);
    cr_assert_str_eq(json_string_value(json_object_get(d, "previous")), "sealed");
    json_decref(j);
    fixture_free(&f);
}

Test(auditlog, a_second_writer_is_refused)
{
    ferry_jwk *key = gen_key();
    ferry_auditlog *log = open_log(key, 0), *second = NULL;
    ferry_auditlog_options o = opts_for(key, 0);
    char err[256];

    cr_assert_eq(ferry_auditlog_open(&o, &second, err, sizeof(err)), -EBUSY);
    cr_assert_null(second);
    cr_assert_not_null(strstr(err, "another writer"));
    cr_assert_eq(ferry_auditlog_close(log), 0);
    ferry_jwk_unref(key);
}

Test(auditlog, open_refuses_bad_options)
{
    ferry_jwk *key = gen_key(), *pub = NULL;
    ferry_auditlog *log = NULL;
    ferry_auditlog_options o = opts_for(key, 0);
    json_t *j = NULL;
    char err[256];

    o.signing_key = NULL;
    cr_assert_eq(ferry_auditlog_open(&o, &log, err, sizeof(err)), -FERRY_ENOKEY);
    cr_assert_eq(ferry_jwk_to_public_json(key, &j), 0);
    cr_assert_eq(ferry_jwk_from_json(j, 0, &pub), 0);
    o.signing_key = pub; /* public only: cannot sign */
    cr_assert_eq(ferry_auditlog_open(&o, &log, err, sizeof(err)), -FERRY_ENOKEY);
    o = opts_for(key, 0);
    o.checkpoint_every = FERRY_AUDITLOG_MAX_CHECKPOINT_EVERY + 1;
    cr_assert_eq(ferry_auditlog_open(&o, &log, err, sizeof(err)), -EINVAL);
    o = opts_for(key, 0);
    o.path = "/dev/null";
    cr_assert_eq(ferry_auditlog_open(&o, &log, err, sizeof(err)), -EINVAL);
    cr_assert_not_null(strstr(err, "not a regular file"));
    cr_assert_null(log);
    json_decref(j);
    ferry_jwk_unref(pub);
    ferry_jwk_unref(key);
}

/* ---- tampering --------------------------------------------------------------------------- */

Test(auditlog, an_edited_record_is_named)
{
    struct fixture f;
    char *p;

    fixture_make(&f, 8, 0);
    p = strstr(f.lines[4], "user-3");
    cr_assert_not_null(p);
    p[5] = '9';
    expect_broken(&f, f.lines, f.n, true, 5, 5, "record edited");
    fixture_free(&f);
}

Test(auditlog, an_edited_and_rehashed_record_breaks_the_next_link)
{
    struct fixture f;
    char h[65];

    fixture_make(&f, 8, 0);
    strstr(f.lines[4], "user-3")[5] = '9';
    compute_hash(f.lines[4], h);
    set_hex_member(f.lines[4], "hash", h);
    expect_broken(&f, f.lines, f.n, true, 6, 6, "line 5 was edited");
    fixture_free(&f);
}

Test(auditlog, a_rewritten_chain_fails_at_the_checkpoint)
{
    struct fixture f;

    fixture_make(&f, 8, 0);
    strstr(f.lines[4], "user-3")[5] = '9';
    rechain(f.lines, f.n, 4); /* consistent hashes; the signature cannot be redone */
    expect_broken(&f, f.lines, f.n, true, f.n, f.n, "checkpoint head is not the hash");
    fixture_free(&f);
}

Test(auditlog, a_deleted_record_is_named)
{
    struct fixture f;

    fixture_make(&f, 8, 0);
    free(f.lines[3]);
    memmove(&f.lines[3], &f.lines[4], (f.n - 4) * sizeof(char *));
    f.n--;
    expect_broken(&f, f.lines, f.n, true, 4, 5, "1 record(s) missing");
    fixture_free(&f);
}

Test(auditlog, deleted_leading_records_are_named)
{
    struct fixture f;

    fixture_make(&f, 8, 0);
    expect_broken(&f, f.lines + 2, f.n - 2, true, 1, 3, "where 1 was expected");
    fixture_free(&f);
}

Test(auditlog, reordered_records_are_named)
{
    struct fixture f;
    char *t;
    struct problems ps;
    ferry_auditlog_report rep;

    fixture_make(&f, 8, 0);
    t = f.lines[3];
    f.lines[3] = f.lines[4];
    f.lines[4] = t;
    expect_broken(&f, f.lines, f.n, true, 4, 5, "reordered");
    /* The second problem is the record that moved down. */
    cr_assert_eq(verify(path, f.pub, false, &ps, &rep), 0); /* the original is intact */
    {
        char copy[192];
        snprintf(copy, sizeof(copy), "%s/copy.log", dir);
        cr_assert_eq(verify(copy, f.pub, false, &ps, &rep), -FERRY_EREFUSED);
        cr_assert_eq(ps.n, 2);
        cr_assert_eq(ps.line[1], 5);
        cr_assert_not_null(strstr(ps.reason[1], "out of order"));
    }
    fixture_free(&f);
}

Test(auditlog, an_inserted_copy_is_named)
{
    struct fixture f;
    char **lines;

    fixture_make(&f, 8, 0);
    lines = calloc(f.n + 1, sizeof(*lines));
    memcpy(lines, f.lines, 4 * sizeof(char *));
    lines[4] = f.lines[3]; /* line 4 again as line 5 */
    memcpy(lines + 5, f.lines + 4, (f.n - 4) * sizeof(char *));
    expect_broken(&f, lines, f.n + 1, true, 5, 4, "inserted or duplicated");
    free(lines);
    fixture_free(&f);
}

Test(auditlog, an_inserted_forged_record_is_named)
{
    struct fixture f;
    char **lines, *forged, h[65];

    fixture_make(&f, 8, 0);
    /* A well-formed record with the right seq and prev and a correct hash, inserted after
     * line 4: the original line 5 no longer links. */
    forged = strdup(f.lines[4]);
    strstr(forged, "user-3")[5] = '7';
    compute_hash(forged, h);
    set_hex_member(forged, "hash", h);
    lines = calloc(f.n + 1, sizeof(*lines));
    memcpy(lines, f.lines, 4 * sizeof(char *));
    lines[4] = forged;
    memcpy(lines + 5, f.lines + 4, (f.n - 4) * sizeof(char *));
    expect_broken(&f, lines, f.n + 1, true, 6, 5, "inserted or duplicated");
    free(forged);
    free(lines);
    fixture_free(&f);
}

Test(auditlog, truncation_is_named)
{
    struct fixture f;
    char *cut;

    fixture_make(&f, 8, 0);
    /* cut mid-line */
    cut = strndup(f.lines[6], 40);
    {
        char *keep = f.lines[6];
        f.lines[6] = cut;
        expect_broken(&f, f.lines, 7, false, 7, 0, "incomplete last line");
        f.lines[6] = keep;
    }
    free(cut);
    /* whole records removed from the end, final checkpoint included */
    expect_broken(&f, f.lines, f.n - 1, true, f.n - 1, f.n - 1, "not sealed");
    expect_broken(&f, f.lines, f.n - 3, true, f.n - 3, f.n - 3, "not sealed");
    fixture_free(&f);
}

/* Re-sign the last (final) checkpoint with key, claiming kid, and fix its record hash. */
static void resign_last(struct fixture *f, ferry_jwk *key)
{
    char *line = f->lines[f->n - 1], *p, *q, *jws = NULL, h[65];
    json_t *j = parse_line(line), *cp = json_object_get(j, "checkpoint");
    ferry_jws *parsed = NULL;
    const char *old = json_string_value(json_object_get(cp, "jws"));
    size_t oldlen = strlen(old), newlen;
    char *nl;

    cr_assert_eq(ferry_jws_parse(old, oldlen, &parsed), 0);
    cr_assert_eq(ferry_jws_sign(key, FERRY_ALG_ES256, FERRY_AUDITLOG_CHECKPOINT_TYP,
                                parsed->payload, parsed->payload_len, &jws),
                 0);
    newlen = strlen(jws);
    p = strstr(line, old);
    cr_assert_not_null(p);
    nl = malloc(strlen(line) - oldlen + newlen + 1);
    q = nl;
    memcpy(q, line, (size_t)(p - line));
    q += p - line;
    memcpy(q, jws, newlen);
    q += newlen;
    memcpy(q, p + oldlen, strlen(p + oldlen) + 1);
    /* the kid member follows the key that signed */
    {
        char *kid = strstr(nl, "\"kid\":\"");
        const char *k = ferry_jwk_kid(key);
        memcpy(kid + 7, k, strlen(k));
    }
    compute_hash(nl, h);
    set_hex_member(nl, "hash", h);
    free(f->lines[f->n - 1]);
    f->lines[f->n - 1] = nl;
    free(jws);
    ferry_jws_free(parsed);
    json_decref(j);
}

Test(auditlog, a_checkpoint_signed_by_an_unknown_key_is_named)
{
    struct fixture f;
    ferry_jwk *other = gen_key();

    fixture_make(&f, 4, 0);
    resign_last(&f, other);
    expect_broken(&f, f.lines, f.n, true, f.n, f.n, "unknown key");
    ferry_jwk_unref(other);
    fixture_free(&f);
}

Test(auditlog, a_forged_checkpoint_signature_is_named)
{
    struct fixture f;
    char *sig;

    fixture_make(&f, 4, 0);
    /* Flip one signature character, then fix the record's hash so only the signature is
     * wrong. */
    sig = strstr(f.lines[f.n - 1], "\",\"kid\"");
    cr_assert_not_null(sig);
    sig[-5] = sig[-5] == 'A' ? 'B' : 'A';
    {
        char h[65];
        compute_hash(f.lines[f.n - 1], h);
        set_hex_member(f.lines[f.n - 1], "hash", h);
    }
    expect_broken(&f, f.lines, f.n, true, f.n, f.n, "does not verify");
    fixture_free(&f);
}

/* Rewrite the last (final) checkpoint record with member name set to value (json_null() to
 * delete it), re-serialised canonically and rehashed, as someone without the key would. */
static void edit_last_checkpoint(struct fixture *f, const char *name, json_t *value)
{
    json_t *j = parse_line(f->lines[f->n - 1]);
    char *dump, *nl, h[65];
    size_t len;

    json_object_del(j, "hash");
    if (json_is_null(value))
        cr_assert_eq(json_object_del(j, name), 0);
    else
        cr_assert_eq(json_object_set(j, name, value), 0);
    json_decref(value);
    /* Plain ASCII content: jansson's sorted compact dump is the canonical form. */
    dump = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENSURE_ASCII);
    cr_assert_not_null(dump);
    len = strlen(dump);
    nl = malloc(len + 75 + 1);
    memcpy(nl, dump, len - 1);
    snprintf(nl + len - 1, 77, ",\"hash\":\"%064d\"}", 0);
    compute_hash(nl, h);
    set_hex_member(nl, "hash", h);
    free(f->lines[f->n - 1]);
    f->lines[f->n - 1] = nl;
    free(dump);
    json_decref(j);
}

/* The final checkpoint record is covered by no later checkpoint: its own members must be
 * bound by its signature (time) or fixed by the format (decision, subject, no details or
 * token), else they can be edited at will and the log still verifies as sealed. */
Test(auditlog, the_final_checkpoint_record_itself_cannot_be_edited)
{
    static const struct {
        const char *name, *needle;
    } cases[] = {
        {"time", "covers a different"},    {"subject", "checkpoint record"},
        {"decision", "checkpoint record"}, {"details", "checkpoint record"},
        {"token", "checkpoint record"},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct fixture f;
        json_t *v;

        (void)unlink(path); /* a fresh log each time, not a continued one */
        fixture_make(&f, 4, 0);
        if (strcmp(cases[i].name, "time") == 0)
            v = json_string("2001-01-01T00:00:00.000000Z");
        else if (strcmp(cases[i].name, "subject") == 0)
            v = json_string("mallory");
        else if (strcmp(cases[i].name, "decision") == 0)
            v = json_string("allow");
        else if (strcmp(cases[i].name, "details") == 0)
            v = json_pack("{s:s}", "note", "injected after the fact");
        else
            v = json_pack("{s:s}", "jti", "forged-jti");
        edit_last_checkpoint(&f, cases[i].name, v);
        expect_broken(&f, f.lines, f.n, true, f.n, f.n, cases[i].needle);
        fixture_free(&f);
    }
}

Test(auditlog, non_canonical_and_malformed_lines_are_named)
{
    struct fixture f;
    char *keep, *mod;

    fixture_make(&f, 4, 0);
    keep = f.lines[2];
    /* a space after the first comma: same JSON, not canonical */
    mod = malloc(strlen(keep) + 2);
    {
        char *c = strchr(keep, ',');
        size_t pre = (size_t)(c - keep) + 1;
        memcpy(mod, keep, pre);
        mod[pre] = ' ';
        memcpy(mod + pre + 1, keep + pre, strlen(keep + pre) + 1);
    }
    f.lines[2] = mod;
    expect_broken(&f, f.lines, f.n, true, 3, 3, "canonical form");
    free(mod);
    f.lines[2] = "not json at all";
    expect_broken(&f, f.lines, f.n, true, 3, 0, "not a JSON record");
    f.lines[2] = "{\"seq\":3,\"evil\":1}";
    expect_broken(&f, f.lines, f.n, true, 3, 3, "unknown member 'evil'");
    f.lines[2] = keep;
    fixture_free(&f);
}

Test(auditlog, an_overlong_line_is_refused_with_bounded_memory)
{
    struct fixture f;
    char *big = malloc(3 * 1024 * 1024 + 1);

    fixture_make(&f, 3, 0);
    memset(big, 'x', 3 * 1024 * 1024);
    big[3 * 1024 * 1024] = '\0';
    {
        char *keep = f.lines[2];
        f.lines[2] = big;
        expect_broken(&f, f.lines, f.n, true, 3, 0, "longer than");
        f.lines[2] = keep;
    }
    free(big);
    fixture_free(&f);
}

Test(auditlog, live_mode_warns_about_the_unsigned_tail)
{
    ferry_jwk *key = gen_key();
    ferry_jwks *pub = pub_set(&key, 1);
    struct problems ps;
    ferry_auditlog_report rep;
    ferry_auditlog *log = open_log(key, 5);

    append_n(log, 3); /* no checkpoint yet */
    cr_assert_eq(verify(path, pub, true, &ps, &rep), -FERRY_EREFUSED);
    cr_assert_not_null(strstr(rep.first_bad_reason, "nothing in this log is signed"));
    append_n(log, 3); /* ev 5, checkpoint 6, ev 7, 8 */
    cr_assert_eq(verify(path, pub, true, &ps, &rep), 0, "%s", rep.first_bad_reason);
    cr_assert_eq(rep.last_checkpoint_seq, 6);
    cr_assert_eq(rep.unsigned_records, 2);
    cr_assert_eq(ps.n, 1);
    cr_assert(ps.warning[0]);
    cr_assert_eq(ps.line[0], 7);
    cr_assert_not_null(strstr(ps.reason[0], "2 record(s) after the last checkpoint"));
    cr_assert_eq(verify(path, pub, false, &ps, &rep), -FERRY_EREFUSED);
    cr_assert_not_null(strstr(rep.first_bad_reason, "not sealed"));
    cr_assert_eq(ferry_auditlog_close(log), 0);
    cr_assert_eq(verify(path, pub, true, &ps, &rep), 0);
    cr_assert(rep.sealed);
    ferry_jwks_unref(pub);
    ferry_jwk_unref(key);
}

Test(auditlog, verify_reports_missing_files_and_empty_logs)
{
    struct problems ps;
    ferry_auditlog_report rep;
    ferry_jwk *key = gen_key();
    ferry_jwks *pub = pub_set(&key, 1);
    FILE *fp;

    cr_assert_eq(verify("/nonexistent/audit.log", pub, false, &ps, &rep), -ENOENT);
    fp = fopen(path, "we");
    fclose(fp);
    cr_assert_eq(verify(path, pub, false, &ps, &rep), -FERRY_EREFUSED);
    cr_assert_not_null(strstr(rep.first_bad_reason, "empty log"));
    ferry_jwks_unref(pub);
    ferry_jwk_unref(key);
}

/* ---- what may enter the log -------------------------------------------------------------- */

static int append_with(ferry_auditlog *log, const char *type, const char *subject,
                       const ferry_auditlog_token_ref *tok, json_t *details)
{
    ferry_auditlog_event ev = {.type = type,
                               .decision = FERRY_AUDITLOG_DENY,
                               .subject = subject,
                               .token = tok,
                               .details = details};
    int r = ferry_auditlog_append(log, &ev, NULL);
    json_decref(details);
    return r;
}

/* details of n strings of len bytes each (a different letter per string) */
static json_t *long_details(int n, size_t len)
{
    json_t *d = json_object();
    char *v = malloc(len + 1);

    cr_assert_not_null(v);
    for (int i = 0; i < n; i++) {
        char k[16];
        memset(v, 'a' + i, len);
        v[len] = '\0';
        snprintf(k, sizeof(k), "s%02d", i);
        cr_assert_eq(json_object_set_new(d, k, json_string(v)), 0);
    }
    free(v);
    return d;
}

/* An append builds its record in a stack buffer and moves to a heap buffer when the event is
 * too long for it: records on either side of that boundary, and a subject whose escapes make
 * the part after the details six times longer, are written whole and verify; a record over
 * the line limit is still refused and leaves the log usable. */
Test(auditlog, long_records_are_written_whole_or_refused)
{
    ferry_jwk *key = gen_key();
    ferry_jwks *pub = pub_set(&key, 1);
    ferry_auditlog *log = open_log(key, 0);
    char ctl_subject[FERRY_AUDITLOG_SUBJECT_MAX + 1];
    static const struct {
        int n;
        size_t len;
        bool ctl;
    } cases[] = {
        {1, 10, true},   {3, 1000, false},  {3, 1000, true}, {4, 1000, false},
        {5, 1000, true}, {14, 1000, false}, {9, 1000, true},
    };
    struct problems ps;
    ferry_auditlog_report rep;
    uint64_t seq = ferry_auditlog_last_seq(log);
    char **lines;
    size_t n;

    memset(ctl_subject, '\x01', sizeof(ctl_subject) - 1);
    ctl_subject[sizeof(ctl_subject) - 1] = '\0';
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_t *d = long_details(cases[i].n, cases[i].len);
        json_t *parsed;
        int r = append_with(log, "t.long", cases[i].ctl ? ctl_subject : "s", NULL, json_incref(d));
        cr_assert_eq(r, 0, "case %zu: %s", i, ferry_strerror(r));
        cr_assert_eq(ferry_auditlog_last_seq(log), ++seq);
        lines = read_lines(path, &n);
        parsed = parse_line(lines[n - 1]);
        cr_assert(json_equal(json_object_get(parsed, "details"), d), "case %zu", i);
        cr_assert_str_eq(json_string_value(json_object_get(parsed, "subject")),
                         cases[i].ctl ? ctl_subject : "s");
        json_decref(parsed);
        free_lines(lines, n);
        json_decref(d);
    }
    /* 16 KiB of details cannot fit in a line. */
    cr_assert_eq(append_with(log, "t.long", "s", NULL, long_details(17, 1000)), -FERRY_ETOOBIG);
    cr_assert_eq(append_with(log, "t.long", ctl_subject, NULL, long_details(13, 1000)),
                 -FERRY_ETOOBIG);
    cr_assert_eq(ferry_auditlog_last_seq(log), seq);
    cr_assert_eq(append_with(log, "t.long", "s", NULL, NULL), 0);
    cr_assert_eq(ferry_auditlog_close(log), 0);
    cr_assert_eq(verify(path, pub, false, &ps, &rep), 0, "%s", rep.first_bad_reason);
    ferry_jwks_unref(pub);
    ferry_jwk_unref(key);
}

/* Which bytes continue a token-shaped run: every ASCII byte in the middle of a JWT-shaped
 * subject, which is refused exactly when the byte is base64url or a dot. */
Test(auditlog, token_shape_is_broken_by_exactly_the_non_base64url_bytes)
{
    ferry_jwk *key = gen_key();
    ferry_auditlog *log = open_log(key, 0);

    for (int c = 1; c < 0x80; c++) {
        char subject[64];
        bool b64 = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                   c == '-' || c == '_' || c == '.';
        ferry_auditlog_event ev = {
            .type = "t.x", .decision = FERRY_AUDITLOG_INFO, .subject = subject};
        int r;

        snprintf(subject, sizeof(subject), "eyJhbGciOiJFUzI1NiJ9.eyJzd%cWIiOiJ4In0.c2lnbmF0dXJl",
                 c);
        r = ferry_auditlog_append(log, &ev, NULL);
        cr_assert_eq(r, b64 ? -FERRY_EPOLICY : 0, "byte 0x%02x: %s", c, ferry_strerror(r));
    }
    cr_assert_eq(ferry_auditlog_close(log), 0);
    ferry_jwk_unref(key);
}

Test(auditlog, token_like_values_and_oversize_fields_are_refused)
{
    static const char jwt[] = "eyJhbGciOiJFUzI1NiIsImtpZCI6ImsxIn0.eyJzdWIiOiJ4In0."
                              "c2lnbmF0dXJlLWJ5dGVzLWhlcmU";
    static const char opaque3[] = "AAAAAAAAAAAAAAAAAAAA.BBBBBBBBBBBBBBBBBBBBB.CCCCCCCCCCCCCCCCCC";
    ferry_jwk *key = gen_key();
    ferry_auditlog *log = open_log(key, 0);
    ferry_auditlog_token_ref ref = {.jti = ""};
    char big[FERRY_AUDITLOG_STRING_MAX + 2], sub[FERRY_AUDITLOG_SUBJECT_MAX + 2];
    char embedded[256];
    uint64_t seq = ferry_auditlog_last_seq(log);

    snprintf(embedded, sizeof(embedded), "Authorization: Bearer %s", jwt);
    cr_assert_eq(append_with(log, "t.x", jwt, NULL, NULL), -FERRY_EPOLICY);
    cr_assert_eq(append_with(log, "t.x", "s", NULL, json_pack("{s:s}", "v", jwt)), -FERRY_EPOLICY);
    cr_assert_eq(append_with(log, "t.x", "s", NULL, json_pack("{s:s}", "v", embedded)),
                 -FERRY_EPOLICY);
    cr_assert_eq(append_with(log, "t.x", "s", NULL, json_pack("{s:[s]}", "v", opaque3)),
                 -FERRY_EPOLICY);
    cr_assert_eq(append_with(log, "t.x", "s", NULL, json_pack("{s:{s:i}}", "v", jwt, 1)),
                 -FERRY_ETOOBIG); /* over the member name limit */
    cr_assert_eq(append_with(log, "t.x", "s", NULL,
                             json_pack("{s:{s:i}}", "v",
                                       "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl", 1)),
                 -FERRY_EPOLICY);
    snprintf(ref.jti, sizeof(ref.jti), "%s", jwt);
    cr_assert_eq(append_with(log, "t.x", "s", &ref, NULL), -FERRY_EPOLICY);
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    cr_assert_eq(append_with(log, "t.x", "s", NULL, json_pack("{s:s}", "v", big)), -FERRY_ETOOBIG);
    memset(sub, 'a', sizeof(sub) - 1);
    sub[sizeof(sub) - 1] = '\0';
    cr_assert_eq(append_with(log, "t.x", sub, NULL, NULL), -FERRY_ETOOBIG);
    cr_assert_eq(append_with(log, "t.x", "s", NULL, json_pack("{s:f}", "v", 1.5)),
                 -FERRY_EMALFORMED);
    cr_assert_eq(append_with(log, "t.x", "s", NULL,
                             json_pack("{s:{s:{s:{s:{s:i}}}}}", "a", "b", "c", "d", "e", 1)),
                 -FERRY_ETOOBIG);
    cr_assert_eq(append_with(log, "t.x", "bad \xff utf8", NULL, NULL), -FERRY_EMALFORMED);
    cr_assert_eq(append_with(log, "Token.X", "s", NULL, NULL), -EINVAL);
    cr_assert_eq(append_with(log, "auditlog.checkpoint", "s", NULL, NULL), -EINVAL);
    cr_assert_eq(append_with(log, "", "s", NULL, NULL), -EINVAL);
    {
        json_t *many = json_object();
        for (int i = 0; i < FERRY_AUDITLOG_DETAILS_MEMBERS + 1; i++) {
            char k[16];
            snprintf(k, sizeof(k), "k%d", i);
            json_object_set_new(many, k, json_integer(i));
        }
        cr_assert_eq(append_with(log, "t.x", "s", NULL, many), -FERRY_ETOOBIG);
    }
    memcpy(ref.sha256, "XYZ", 4);
    ref.jti[0] = '\0';
    cr_assert_eq(append_with(log, "t.x", "s", &ref, NULL), -FERRY_EMALFORMED);
    /* The sha256 goes into the record unescaped, so only 64 lowercase hex digits pass. */
    {
        static const char *const bad_sha[] = {
            "84D3F23DA9B5F51B3269566EFF05D3FB23607EEEF89567F9CD280B90CA0DBC5C",
            "84d3f23da9b5f51b3269566eff05d3fb23607eeef89567f9cd280b90ca0dbc5",
            "84d3f23da9b5f51b3269566eff05d3fb23607eeef89567f9cd280b90ca0dbc\"}",
            "84d3f23da9b5f51b3269566eff05d3fb23607eeef89567f9cd280b90ca0dbc5g",
        };
        for (size_t i = 0; i < sizeof(bad_sha) / sizeof(bad_sha[0]); i++) {
            snprintf(ref.sha256, sizeof(ref.sha256), "%s", bad_sha[i]);
            cr_assert_eq(append_with(log, "t.x", "s", &ref, NULL), -FERRY_EMALFORMED, "%zu", i);
        }
    }
    /* Nothing was written, and the log still works. */
    cr_assert_eq(ferry_auditlog_last_seq(log), seq);
    /* Ordinary values that merely have dots are fine. */
    cr_assert_eq(append_with(log, "t.x", "ip-10-0-0-1.eu-west-1.compute.internal", NULL,
                             json_pack("{s:s, s:s}", "v", "1.2.3", "host",
                                       "storage.googleapis.com.example.test")),
                 0);
    cr_assert_eq(ferry_auditlog_last_seq(log), seq + 1);
    cr_assert_eq(ferry_auditlog_close(log), 0);
    ferry_jwk_unref(key);
}

Test(auditlog, token_ref_hashes_the_token_and_keeps_only_its_jti)
{
    ferry_jwk *key = gen_key();
    ferry_auditlog_token_ref ref;
    char *tok = NULL, hex[65];
    unsigned char md[32];
    unsigned int n;
    const char *claims = "{\"jti\":\"abc-123\",\"sub\":\"x\"}";
    const char *bad_jti = "{\"jti\":\"eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl\"}";

    cr_assert_eq(ferry_jws_sign(key, FERRY_ALG_ES256, "JWT", claims, strlen(claims), &tok), 0);
    cr_assert_eq(ferry_auditlog_ref_token(tok, strlen(tok), &ref), 0);
    EVP_Digest(tok, strlen(tok), md, &n, EVP_sha256(), NULL);
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
    cr_assert_str_eq(ref.sha256, hex);
    cr_assert_str_eq(ref.jti, "abc-123");
    free(tok);
    cr_assert_eq(ferry_jws_sign(key, FERRY_ALG_ES256, "JWT", bad_jti, strlen(bad_jti), &tok), 0);
    cr_assert_eq(ferry_auditlog_ref_token(tok, strlen(tok), &ref), 0);
    cr_assert_str_eq(ref.jti, "", "a token-like jti is not kept");
    free(tok);
    cr_assert_eq(ferry_auditlog_ref_token("not a jws", 9, &ref), 0);
    cr_assert_str_eq(ref.jti, "");
    cr_assert_eq(strlen(ref.sha256), 64);
    cr_assert_eq(ferry_auditlog_ref_token(NULL, 3, &ref), -EINVAL);
    ferry_jwk_unref(key);
}

/* The reference from an already-parsed jti equals the one ferry_auditlog_ref_token takes by
 * parsing the token, for kept and for refused jtis alike. */
Test(auditlog, token_ref_from_a_parsed_jti_equals_the_parsed_reference)
{
    ferry_jwk *key = gen_key();
    char long_jti[FERRY_AUDITLOG_JTI_MAX + 2];
    static const struct {
        const char *jti;
        size_t len;
        const char *kept;
    } cases[] = {
        {"abc-123", 7, "abc-123"},
        {"caf\xc3\xa9", 5, "caf\xc3\xa9"},
        {"", 0, ""},
        {"eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl", 50, ""}, /* token-shaped */
        {"bad\xff", 4, ""},                                            /* not UTF-8 */
        {"ab\0cd", 5, ""},                                             /* holds a NUL */
        {NULL, 0, ""},                                                 /* too long, below */
    };

    memset(long_jti, 'j', sizeof(long_jti) - 1);
    long_jti[sizeof(long_jti) - 1] = '\0';
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *jti = cases[i].jti ? cases[i].jti : long_jti;
        size_t jti_len = cases[i].jti ? cases[i].len : strlen(long_jti);
        ferry_auditlog_token_ref parsed, given;
        /* jansson refuses to hold bytes that are not UTF-8: that payload is written by hand. */
        json_t *claims = json_pack("{s:s%, s:s}", "jti", jti, jti_len, "sub", "x");
        char *payload = claims ? json_dumps(claims, JSON_COMPACT) : NULL, *tok = NULL;

        if (!claims)
            cr_assert_geq(asprintf(&payload, "{\"jti\":\"%.*s\",\"sub\":\"x\"}", (int)jti_len, jti),
                          0);
        cr_assert_not_null(payload);
        cr_assert_eq(ferry_jws_sign(key, FERRY_ALG_ES256, "JWT", payload, strlen(payload), &tok),
                     0);
        cr_assert_eq(ferry_auditlog_ref_token(tok, strlen(tok), &parsed), 0);
        cr_assert_eq(ferry_auditlog_ref_token_jti(tok, strlen(tok), jti, jti_len, &given), 0);
        cr_assert_str_eq(given.jti, cases[i].kept, "case %zu", i);
        cr_assert_str_eq(parsed.jti, cases[i].kept, "case %zu", i);
        cr_assert_str_eq(given.sha256, parsed.sha256, "case %zu", i);
        cr_assert_eq(strlen(given.sha256), 64);
        free(tok);
        free(payload);
        json_decref(claims);
    }
    {
        ferry_auditlog_token_ref a, b;
        /* No jti: only the hash, the same as for a token without one. */
        cr_assert_eq(ferry_auditlog_ref_token_jti("opaque", 6, NULL, 0, &a), 0);
        cr_assert_eq(ferry_auditlog_ref_token("opaque", 6, &b), 0);
        cr_assert_str_eq(a.jti, "");
        cr_assert_str_eq(a.sha256, b.sha256);
        /* The jti is taken as given, never parsed out of the token bytes. */
        cr_assert_eq(ferry_auditlog_ref_token_jti("opaque", 6, "j-1", 3, &a), 0);
        cr_assert_str_eq(a.jti, "j-1");
        cr_assert_str_eq(a.sha256, b.sha256);
        cr_assert_eq(ferry_auditlog_ref_token_jti(NULL, 3, "j", 1, &a), -EINVAL);
        cr_assert_eq(ferry_auditlog_ref_token_jti("x", 1, "j", 1, NULL), -EINVAL);
    }
    ferry_jwk_unref(key);
}

/* ---- failures fail closed ---------------------------------------------------------------- */

Test(auditlog, a_write_failure_fails_closed_and_blocks_further_appends)
{
    ferry_jwk *key = gen_key();
    ferry_jwks *pub = pub_set(&key, 1);
    ferry_auditlog *log = open_log(key, 0);
    struct problems ps;
    ferry_auditlog_report rep;
    struct stat st;
    struct rlimit rl, saved;
    off_t good;
    int r;

    append_n(log, 2);
    cr_assert_eq(stat(path, &st), 0);
    good = st.st_size;
    signal(SIGXFSZ, SIG_IGN);
    cr_assert_eq(getrlimit(RLIMIT_FSIZE, &saved), 0);
    rl = saved;
    rl.rlim_cur = (rlim_t)good + 100; /* the next record is cut short */
    cr_assert_eq(setrlimit(RLIMIT_FSIZE, &rl), 0);
    r = append_one(log, 7, NULL);
    cr_assert_eq(r, -EFBIG, "%s", ferry_strerror(r));
    /* The partial record was cut back. */
    cr_assert_eq(stat(path, &st), 0);
    cr_assert_eq(st.st_size, good);
    /* Poisoned: even when space would allow it now. */
    cr_assert_eq(setrlimit(RLIMIT_FSIZE, &saved), 0);
    cr_assert_eq(append_one(log, 8, NULL), -EBADFD);
    cr_assert_eq(ferry_auditlog_checkpoint(log), -EBADFD);
    cr_assert_eq(ferry_auditlog_flush(log), -EBADFD);
    cr_assert_eq(ferry_auditlog_close(log), -EBADFD);
    cr_assert_eq(stat(path, &st), 0);
    cr_assert_eq(st.st_size, good);
    /* What is there is intact (unsealed); reopening continues it. */
    cr_assert_eq(verify(path, pub, false, &ps, &rep), -FERRY_EREFUSED);
    cr_assert_not_null(strstr(rep.first_bad_reason, "not sealed"));
    log = open_log(key, 0);
    append_n(log, 1);
    cr_assert_eq(ferry_auditlog_close(log), 0);
    cr_assert_eq(verify(path, pub, false, &ps, &rep), 0, "%s", rep.first_bad_reason);
    ferry_jwks_unref(pub);
    ferry_jwk_unref(key);
}

Test(auditlog, a_failure_inside_a_checkpoint_fails_the_append)
{
    ferry_jwk *key = gen_key();
    ferry_auditlog *log = open_log(key, 3);
    struct stat st;
    struct rlimit rl;

    append_n(log, 1); /* open + 1: the next append triggers the checkpoint */
    cr_assert_eq(stat(path, &st), 0);
    signal(SIGXFSZ, SIG_IGN);
    /* room for the event record (~400 bytes) but not for the checkpoint (~900) */
    cr_assert_eq(getrlimit(RLIMIT_FSIZE, &rl), 0);
    rl.rlim_cur = (rlim_t)st.st_size + 600;
    cr_assert_eq(setrlimit(RLIMIT_FSIZE, &rl), 0);
    cr_assert_eq(append_one(log, 2, NULL), -EFBIG);
    cr_assert_eq(append_one(log, 3, NULL), -EBADFD);
    cr_assert_eq(ferry_auditlog_close(log), -EBADFD);
    ferry_jwk_unref(key);
}

Test(auditlog, a_sync_failure_fails_closed_and_leaves_no_record)
{
    ferry_jwk *key = gen_key();
    ferry_auditlog *log = open_log(key, 0);
    struct stat st;
    off_t good;

    append_n(log, 2);
    cr_assert_eq(stat(path, &st), 0);
    good = st.st_size;
    atomic_store(&sync_fail_after, 0);
    cr_assert_eq(append_one(log, 5, NULL), -EIO);
    cr_assert_eq(stat(path, &st), 0);
    cr_assert_eq(st.st_size, good, "the unsynced record was cut back");
    cr_assert_eq(append_one(log, 6, NULL), -EBADFD);
    cr_assert_eq(ferry_auditlog_close(log), -EBADFD);
    ferry_jwk_unref(key);
}

/* ---- durability policy ------------------------------------------------------------------- */

static int syncs_for(ferry_auditlog_sync_mode mode, unsigned every_records, unsigned events)
{
    ferry_jwk *key = gen_key();
    ferry_auditlog_options o = opts_for(key, 50);
    ferry_auditlog *log = NULL;
    char err[256];
    int n;

    o.sync = mode;
    o.sync_every_records = every_records;
    o.sync_interval_ms = 1000000; /* the fake clock moves 1 us per call: never reached */
    cr_assert_eq(ferry_auditlog_open(&o, &log, err, sizeof(err)), 0, "%s", err);
    atomic_store(&sync_calls, 0);
    append_n(log, events);
    n = atomic_load(&sync_calls);
    cr_assert_eq(ferry_auditlog_close(log), 0);
    unlink(path);
    ferry_jwk_unref(key);
    return n;
}

Test(auditlog, sync_policies_sync_as_documented)
{
    /* 120 events with a checkpoint every 50 records: the open record makes the checkpoints
     * come after events 49 and 99 (2 checkpoints). */
    cr_assert_eq(syncs_for(FERRY_AUDITLOG_SYNC_ALWAYS, 0, 120), 122);
    cr_assert_eq(syncs_for(FERRY_AUDITLOG_SYNC_CHECKPOINT, 0, 120), 2);
    {
        int n = syncs_for(FERRY_AUDITLOG_SYNC_BATCH, 10, 120);
        cr_assert(n >= 12 && n <= 15, "batch of 10 over 120 records: %d syncs", n);
    }
}

Test(auditlog, batch_mode_syncs_after_the_interval)
{
    ferry_jwk *key = gen_key();
    ferry_auditlog_options o = opts_for(key, 1000);
    ferry_auditlog *log = NULL;
    char err[256];

    o.sync = FERRY_AUDITLOG_SYNC_BATCH;
    o.sync_every_records = 1000;
    o.sync_interval_ms = 5;
    cr_assert_eq(ferry_auditlog_open(&o, &log, err, sizeof(err)), 0, "%s", err);
    atomic_store(&sync_calls, 0);
    append_n(log, 3);
    cr_assert_eq(atomic_load(&sync_calls), 0);
    atomic_fetch_add(&clock_us, 6000); /* 6 ms later */
    append_n(log, 1);
    cr_assert_eq(atomic_load(&sync_calls), 1);
    cr_assert_eq(ferry_auditlog_flush(log), 0);
    cr_assert_eq(atomic_load(&sync_calls), 2);
    cr_assert_eq(ferry_auditlog_close(log), 0);
    ferry_jwk_unref(key);
}

/* ---- keys and threads ---------------------------------------------------------------------- */

Test(auditlog, key_rotation_names_the_new_kid)
{
    ferry_jwk *k1 = gen_key(), *k2 = gen_key(), *both[2];
    ferry_jwks *pub1 = pub_set(&k1, 1), *pub12;
    ferry_auditlog *log = open_log(k1, 3);
    struct problems ps;
    ferry_auditlog_report rep;

    both[0] = k1;
    both[1] = k2;
    pub12 = pub_set(both, 2);
    append_n(log, 3);
    cr_assert_eq(ferry_auditlog_set_signing_key(log, k2), 0);
    append_n(log, 3);
    cr_assert_eq(ferry_auditlog_close(log), 0);
    cr_assert_eq(verify(path, pub12, false, &ps, &rep), 0, "%s", rep.first_bad_reason);
    cr_assert_eq(rep.checkpoints, 3);
    cr_assert_eq(verify(path, pub1, false, &ps, &rep), -FERRY_EREFUSED);
    cr_assert_not_null(strstr(rep.first_bad_reason, "unknown key"));
    cr_assert_eq(ferry_auditlog_set_signing_key(log = open_log(k2, 3), NULL), -FERRY_ENOKEY);
    cr_assert_eq(ferry_auditlog_close(log), 0);
    ferry_jwks_unref(pub1);
    ferry_jwks_unref(pub12);
    ferry_jwk_unref(k1);
    ferry_jwk_unref(k2);
}

#define THREADS 8
#define PER_THREAD 150

struct tjob {
    ferry_auditlog *log;
    unsigned id;
    uint64_t seqs[PER_THREAD];
    int rc;
};

static void *tbody(void *arg)
{
    struct tjob *j = arg;
    for (unsigned i = 0; i < PER_THREAD && j->rc == 0; i++)
        j->rc = append_one(j->log, j->id * 1000 + i, &j->seqs[i]);
    return NULL;
}

Test(auditlog, concurrent_appends_make_one_valid_contiguous_chain)
{
    ferry_jwk *key = gen_key();
    ferry_jwks *pub = pub_set(&key, 1);
    ferry_auditlog *log = open_log(key, 37);
    static struct tjob jobs[THREADS];
    pthread_t tid[THREADS];
    struct problems ps;
    ferry_auditlog_report rep;
    uint64_t total;
    unsigned char *seen;

    for (unsigned t = 0; t < THREADS; t++) {
        jobs[t] = (struct tjob){.log = log, .id = t};
        cr_assert_eq(pthread_create(&tid[t], NULL, tbody, &jobs[t]), 0);
    }
    for (unsigned t = 0; t < THREADS; t++) {
        pthread_join(tid[t], NULL);
        cr_assert_eq(jobs[t].rc, 0, "thread %u: %s", t, ferry_strerror(jobs[t].rc));
    }
    total = ferry_auditlog_last_seq(log);
    cr_assert_eq(ferry_auditlog_close(log), 0);
    cr_assert_eq(verify(path, pub, false, &ps, &rep), 0, "%s", rep.first_bad_reason);
    cr_assert_eq(rep.last_seq, total + 1);
    /* 1 open + 1200 events, a checkpoint after every 37 records, + final */
    cr_assert_eq(rep.records, 1 + THREADS * PER_THREAD + (1 + THREADS * PER_THREAD) / 37 + 1);
    seen = calloc(total + 2, 1);
    for (unsigned t = 0; t < THREADS; t++)
        for (unsigned i = 0; i < PER_THREAD; i++) {
            uint64_t s = jobs[t].seqs[i];
            cr_assert(s >= 2 && s <= total && !seen[s], "seq %" PRIu64 " twice or bad", s);
            seen[s] = 1;
        }
    free(seen);
    ferry_jwks_unref(pub);
    ferry_jwk_unref(key);
}

/* ---- allocation failures ------------------------------------------------------------------- *
 * malloc, calloc and realloc are replaced in this program (the library is linked statically;
 * under ASan the replacements forward to ASan's interceptors). While armed, the Nth allocation
 * of the process fails, whoever makes it (the library, jansson or OpenSSL); each operation is
 * run with N = 0, 1, 2, ... until it completes without an injected failure. Checked: no crash
 * or sanitizer report, every failure is an error return, nothing half-written reaches the file,
 * and an allocation failure is never reported as tampering nor lets a broken log pass. */
#define FERRY_ALLOCFAIL_NTH 1
#include "allocfail.h"
#ifdef HAVE_ALLOC_INJECTION
/* Run op with failures at 0, 1, ...; a run without an injected failure must return ok_rc; a
 * run with one must return ok_rc or one of the allowed errors. Returns the number of runs. */
static long torture(const char *what, int (*op)(void *), void *arg, int ok_rc, const int *allowed,
                    size_t nallowed)
{
    for (long n = 0; n < 100000; n++) {
        bool hit, fine;
        int r;

        inject_arm(n);
        r = op(arg);
        hit = inject_disarm();
        if (!hit) {
            cr_assert_eq(r, ok_rc, "run without failure returned %s", ferry_strerror(r));
            return n;
        }
        fine = r == ok_rc;
        for (size_t i = 0; i < nallowed; i++)
            fine = fine || r == allowed[i];
        cr_assert(fine, "%s: allocation %ld failed: got %s", what, n, ferry_strerror(r));
    }
    cr_assert_fail("operation never completed");
    return 0;
}

struct oom_ctx {
    ferry_auditlog *log;
    json_t *details;
    ferry_auditlog_token_ref ref;
    ferry_jwks *pub;
    const char *path;
    ferry_jwk *key;
    unsigned ok;    /* operations that returned 0 (a failure OpenSSL absorbs lets one succeed) */
    char *template; /* op_open_close starts from these bytes each time */
    size_t template_len;
};

static int op_append(void *arg)
{
    struct oom_ctx *c = arg;
    ferry_auditlog_event ev = {.type = "secret.read",
                               .decision = FERRY_AUDITLOG_ALLOW,
                               .subject = "user-\xc3\xa9",
                               .token = &c->ref,
                               .details = c->details};
    int r = ferry_auditlog_append(c->log, &ev, NULL);
    c->ok += r == 0;
    return r;
}

static int op_checkpoint(void *arg)
{
    struct oom_ctx *c = arg;
    int r = ferry_auditlog_checkpoint(c->log);
    c->ok += r == 0;
    return r;
}

static int op_verify(void *arg)
{
    struct oom_ctx *c = arg;
    ferry_auditlog_report rep;
    return ferry_auditlog_verify(c->path, c->pub, NULL, &rep);
}

static int op_open_close(void *arg)
{
    struct oom_ctx *c = arg;
    ferry_auditlog_options o = opts_for(c->key, 0);
    ferry_auditlog *log = NULL;
    FILE *f;
    int r;

    /* The same file every run: a growing log would make each run allocate more. */
    inject_at = -inject_at - 2; /* pause injection while the file is restored */
    f = fopen(c->path, "we");
    cr_assert_not_null(f);
    cr_assert_eq(fwrite(c->template, 1, c->template_len, f), c->template_len);
    fclose(f);
    inject_at = -inject_at - 2;
    r = ferry_auditlog_open(&o, &log, NULL, 0);
    if (r < 0)
        return r;
    return ferry_auditlog_close(log);
}
#endif

Test(auditlog, allocation_failures_fail_cleanly_and_leave_a_valid_log)
{
#ifndef HAVE_ALLOC_INJECTION
    cr_skip_test("allocation injection needs glibc");
#else
    static const int nomem[] = {-ENOMEM, -FERRY_ECRYPTO};
    struct oom_ctx c = {0};
    struct problems ps;
    ferry_auditlog_report rep;
    uint64_t before;
    long runs;

    c.key = gen_key();
    c.pub = pub_set(&c.key, 1);
    c.path = path;
    c.log = open_log(c.key, 0);
    c.details = json_pack("{s:s, s:[i, {s:b}]}", "path", "/v1/s", "list", 1, "x", 1);
    cr_assert_eq(ferry_auditlog_ref_token("opaque", 6, &c.ref), 0);
    before = ferry_auditlog_last_seq(c.log);
    runs = torture("append", op_append, &c, 0, nomem, 2);
    /* An append allocates only inside OpenSSL's digest now (the record is built in a stack
     * buffer); each of those allocations was made to fail. */
    cr_assert_geq(runs, 1);
    /* Failed appends wrote nothing: one record per successful append. How many injected
     * failures an append absorbs (and so succeeds despite) depends on the libraries, not on
     * this log; at least the run without a failure succeeded. */
    cr_assert_eq(ferry_auditlog_last_seq(c.log), before + c.ok);
    cr_assert_geq(c.ok, 1);
    cr_assert_lt(c.ok, runs);
    before += c.ok;
    c.ok = 0;
    runs = torture("checkpoint", op_checkpoint, &c, 0, nomem, 2);
    cr_assert_gt(runs, 3);
    cr_assert_eq(ferry_auditlog_last_seq(c.log), before + c.ok);
    cr_assert_eq(ferry_auditlog_close(c.log), 0);
    cr_assert_eq(verify(path, c.pub, false, &ps, &rep), 0, "%s", rep.first_bad_reason);
    /* Verification: an intact log is never reported broken because memory ran out. */
    runs = torture("verify", op_verify, &c, 0, nomem, 2);
    cr_assert_gt(runs, 10);
    /* Reopen + close under failures, from the same file each time; the run without a failure
     * leaves a valid log with one more session. */
    c.template = tu_read_file(path, 1 << 20, &c.template_len);
    cr_assert_not_null(c.template);
    runs = torture("open_close", op_open_close, &c, 0, nomem, 2);
    cr_assert_gt(runs, 10);
    cr_assert_eq(verify(path, c.pub, false, &ps, &rep), 0, "%s", rep.first_bad_reason);
    free(c.template);
    /* A tampered log never verifies because memory ran out. */
    {
        size_t n, i;
        char **lines = read_lines(path, &n);
        char *subject = NULL;
        static const int refused_or_nomem[] = {-FERRY_EREFUSED, -ENOMEM, -FERRY_ECRYPTO};
        /* Edit the subject of the first appended record (whichever line it is). */
        for (i = 0; i < n && !subject; i++)
            subject = strstr(lines[i], "\"subject\":\"user-");
        cr_assert_not_null(subject, "no appended record in the log");
        subject[strlen("\"subject\":\"user-")] = 'X';
        write_lines(path, lines, n, true);
        free_lines(lines, n);
        torture("verify", op_verify, &c, -FERRY_EREFUSED, refused_or_nomem, 3);
    }
    json_decref(c.details);
    ferry_jwks_unref(c.pub);
    ferry_jwk_unref(c.key);
#endif
}
