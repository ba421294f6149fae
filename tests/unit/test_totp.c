/* tests/unit/test_totp.c - unit tests of the totp module (include/ferry/totp.h).
 *
 * Covers SECURITY-TESTS rows H1 (replay), H2 (window, malformed codes), H3 (lock-out with
 * back-off), the RFC 4226 Appendix D and RFC 6238 Appendix B (SHA-1) values, enrolment files
 * and URI, hostile state files and folders, account names that would escape the folder,
 * failing persistence (fail closed) and concurrent verifiers of one code (fork and threads).
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <jansson.h>

#include "ferry/error.h"
#include "ferry/totp.h"

/* A fixed clock at the first second of a time step: 1700000010 / 30 = 56666667 exactly. */
#define NOW INT64_C(1700000010)
#define STEP (NOW / 30)

/* ---- helpers ------------------------------------------------------------------------ */

static char state[64];

static void make_state(void)
{
    snprintf(state, sizeof(state), "/tmp/ferry-totp-XXXXXX");
    cr_assert_not_null(mkdtemp(state));
}

static int rm_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(p);
}

static void drop_state(void)
{
    if (state[0]) {
        (void)chmod(state, 0700);
        (void)nftw(state, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    }
    state[0] = '\0';
}

TestSuite(totp, .init = make_state, .fini = drop_state);

static char *path_in(const char *rel)
{
    char *p = NULL;
    cr_assert(asprintf(&p, "%s/%s", state, rel) > 0);
    return p;
}

/* Strict RFC 4648 base32 (no padding) decoder, independent of the library's. */
static size_t b32_decode(const char *in, size_t n, unsigned char *out)
{
    unsigned long long acc = 0;
    int bits = 0;
    size_t o = 0;

    for (size_t i = 0; i < n; i++) {
        const char *p = strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", in[i]);
        cr_assert(p && in[i], "bad base32 character %d", in[i]);
        acc = acc << 5 | (unsigned long long)(p - "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567");
        bits += 5;
        if (bits >= 8) {
            out[o++] = (unsigned char)(acc >> (bits - 8));
            bits -= 8;
        }
    }
    return o;
}

/* The value of query parameter name in uri (new string). */
static char *uri_param(const char *uri, const char *name)
{
    const char *q = strchr(uri, '?');
    size_t nl = strlen(name);

    cr_assert_not_null(q);
    for (const char *p = q + 1; p && *p;) {
        const char *end = strchr(p, '&');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len > nl && strncmp(p, name, nl) == 0 && p[nl] == '=')
            return strndup(p + nl + 1, len - nl - 1);
        p = end ? end + 1 : NULL;
    }
    cr_assert_fail("no %s in %s", name, uri);
    return NULL;
}

/* Enrol account and return its secret (decoded from the URI). */
static void enroll(const char *account, unsigned char secret[FERRY_TOTP_SECRET_LEN])
{
    char err[256], *uri = NULL, *b32;
    int r = ferry_totp_enroll(state, account, NULL, false, &uri, err, sizeof(err));

    cr_assert_eq(r, 0, "enroll %s: %d %s", account, r, err);
    b32 = uri_param(uri, "secret");
    cr_assert_eq(strlen(b32), 32);
    cr_assert_eq(b32_decode(b32, 32, secret), FERRY_TOTP_SECRET_LEN);
    free(b32);
    free(uri);
}

static void code_for(const unsigned char *secret, int64_t counter, char out[9])
{
    cr_assert_eq(ferry_totp_hotp(secret, FERRY_TOTP_SECRET_LEN, (uint64_t)counter, 6, out), 0);
}

/* Verify and return the status; the call itself must decide (return 0). */
static ferry_totp_status verify_at(const char *account, const char *code, int64_t now,
                                   int64_t *ret_retry)
{
    ferry_totp_status st = (ferry_totp_status)-1;
    int64_t retry = -1;
    char err[256];
    int r = ferry_totp_verify(state, account, code, now, &st, &retry, err, sizeof(err));

    cr_assert_eq(r, 0, "verify: %d %s", r, err);
    cr_assert_geq(retry, 0);
    if (ret_retry)
        *ret_retry = retry;
    return st;
}

static ferry_totp_info info_of(const char *account, int64_t now)
{
    ferry_totp_info info;
    char err[256];
    int r = ferry_totp_inspect(state, account, now, &info, err, sizeof(err));

    cr_assert_eq(r, 0, "inspect: %d %s", r, err);
    return info;
}

static void mkdir_in(const char *rel)
{
    char *p = path_in(rel);
    cr_assert_eq(mkdir(p, 0700), 0, "%s: %s", p, strerror(errno));
    free(p);
}

static void write_file(const char *rel, const char *text, size_t len, mode_t mode)
{
    char *p = path_in(rel);
    int fd;

    (void)unlink(p);
    fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    cr_assert_geq(fd, 0, "%s: %s", p, strerror(errno));
    cr_assert_eq(write(fd, text, len), (ssize_t)len);
    cr_assert_eq(fchmod(fd, mode), 0);
    close(fd);
    free(p);
}

static char *read_text(const char *rel)
{
    char *p = path_in(rel), buf[8192];
    FILE *f = fopen(p, "re");
    size_t n;

    cr_assert_not_null(f, "%s", p);
    n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    free(p);
    buf[n] = '\0';
    return strdup(buf);
}

static mode_t mode_of(const char *rel)
{
    char *p = path_in(rel);
    struct stat st;

    cr_assert_eq(lstat(p, &st), 0, "%s", p);
    free(p);
    return st.st_mode & 07777;
}

static bool exists(const char *rel)
{
    char *p = path_in(rel);
    struct stat st;
    bool e = lstat(p, &st) == 0;

    free(p);
    return e;
}

/* ---- RFC values --------------------------------------------------------------------- */

Test(totp, rfc4226_appendix_d_hotp)
{
    static const char *const want[] = { "755224", "287082", "359152", "969429", "338314",
                                        "254676", "287922", "162583", "399871", "520489" };
    char out[9];

    for (unsigned c = 0; c < 10; c++) {
        cr_assert_eq(ferry_totp_hotp("12345678901234567890", 20, c, 6, out), 0);
        cr_assert_str_eq(out, want[c], "counter %u", c);
    }
}

Test(totp, rfc6238_appendix_b_sha1)
{
    static const struct {
        int64_t t;
        const char *code;
    } v[] = {
        { 59, "94287082" },         { 1111111109, "07081804" }, { 1111111111, "14050471" },
        { 1234567890, "89005924" }, { 2000000000, "69279037" }, { 20000000000, "65353130" },
    };
    char out[9];

    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        cr_assert_eq(ferry_totp_hotp("12345678901234567890", 20, (uint64_t)(v[i].t / 30), 8,
                                     out),
                     0);
        cr_assert_str_eq(out, v[i].code, "T=%lld", (long long)v[i].t);
    }
}

Test(totp, hotp_refuses_bad_arguments)
{
    char out[16];

    cr_assert_eq(ferry_totp_hotp("k", 1, 0, 5, out), -EINVAL);
    cr_assert_eq(ferry_totp_hotp("k", 1, 0, 9, out), -EINVAL);
    cr_assert_eq(ferry_totp_hotp(NULL, 1, 0, 6, out), -EINVAL);
    cr_assert_eq(ferry_totp_hotp("k", 0, 0, 6, out), -EINVAL);
    cr_assert_eq(ferry_totp_hotp("k", 1, 0, 6, NULL), -EINVAL);
}

Test(totp, status_names)
{
    cr_assert_str_eq(ferry_totp_status_name(FERRY_TOTP_OK), "ok");
    cr_assert_str_eq(ferry_totp_status_name(FERRY_TOTP_BAD_CODE), "bad_code");
    cr_assert_str_eq(ferry_totp_status_name(FERRY_TOTP_REPLAYED), "replayed");
    cr_assert_str_eq(ferry_totp_status_name(FERRY_TOTP_LOCKED), "locked");
    cr_assert_str_eq(ferry_totp_status_name(FERRY_TOTP_MALFORMED), "malformed");
    cr_assert_str_eq(ferry_totp_status_name(FERRY_TOTP_UNKNOWN_ACCOUNT), "unknown_account");
    cr_assert_str_eq(ferry_totp_status_name((ferry_totp_status)99), "invalid");
}

/* ---- enrolment ---------------------------------------------------------------------- */

Test(totp, enroll_writes_private_files_and_a_matching_uri)
{
    char err[256], *uri = NULL, *b32, *issuer, *text;
    unsigned char secret[20];
    json_t *j;
    json_error_t jerr;

    cr_assert_eq(ferry_totp_enroll(state, "bob@example.com", "ACME Corp & Co/1", false, &uri,
                                   err, sizeof(err)),
                 0, "%s", err);
    cr_assert_str_eq(err, "");
    cr_assert_eq(mode_of("totp"), 0700);
    cr_assert_eq(mode_of("totp/bob@example.com.json"), 0600);
    cr_assert_eq(mode_of("totp/bob@example.com.lock"), 0600);
    cr_assert(!exists("totp/.bob@example.com.tmp"), "temp file left behind");

    /* Label and issuer percent-encoded, fixed parameters spelled out. */
    cr_assert(strncmp(uri, "otpauth://totp/ACME%20Corp%20%26%20Co%2F1:bob%40example.com?",
                      strlen("otpauth://totp/ACME%20Corp%20%26%20Co%2F1:bob%40example.com?")) ==
                  0,
              "%s", uri);
    issuer = uri_param(uri, "issuer");
    cr_assert_str_eq(issuer, "ACME%20Corp%20%26%20Co%2F1");
    free(issuer);
    issuer = uri_param(uri, "algorithm");
    cr_assert_str_eq(issuer, "SHA1");
    free(issuer);
    issuer = uri_param(uri, "digits");
    cr_assert_str_eq(issuer, "6");
    free(issuer);
    issuer = uri_param(uri, "period");
    cr_assert_str_eq(issuer, "30");
    free(issuer);

    /* The URI's secret is the stored one, and it is 20 random bytes. */
    b32 = uri_param(uri, "secret");
    cr_assert_eq(b32_decode(b32, strlen(b32), secret), 20);
    text = read_text("totp/bob@example.com.json");
    j = json_loads(text, JSON_REJECT_DUPLICATES, &jerr);
    cr_assert_not_null(j, "%s", jerr.text);
    cr_assert_str_eq(json_string_value(json_object_get(j, "secret")), b32);
    cr_assert_str_eq(json_string_value(json_object_get(j, "issuer")), "ACME Corp & Co/1");
    cr_assert_eq(json_integer_value(json_object_get(j, "last_counter")), -1);
    cr_assert_eq(json_integer_value(json_object_get(j, "digits")), 6);
    json_decref(j);
    free(text);
    free(b32);
    free(uri);

    /* A code made from the URI's secret is accepted. */
    char code[9];
    code_for(secret, STEP, code);
    cr_assert_eq(verify_at("bob@example.com", code, NOW, NULL), FERRY_TOTP_OK);
}

Test(totp, enroll_twice_is_refused_unless_forced)
{
    unsigned char s1[20], s2[20];
    char err[256], code[9], *uri = (char *)"untouched";
    ferry_totp_info info;

    enroll("alice", s1);
    code_for(s1, STEP, code);
    cr_assert_eq(ferry_totp_enroll(state, "alice", NULL, false, &uri, err, sizeof(err)),
                 -EEXIST);
    cr_assert_str_eq(uri, "untouched");
    cr_assert(strstr(err, "already enrolled"), "%s", err);
    /* The refused enrolment changed nothing: the old secret still works. */
    cr_assert_eq(verify_at("alice", code, NOW, NULL), FERRY_TOTP_OK);

    /* Forced: a new secret, the old one's codes are refused, state starts over. */
    cr_assert_eq(ferry_totp_enroll(state, "alice", "other", true, &uri, err, sizeof(err)), 0,
                 "%s", err);
    char *b32 = uri_param(uri, "secret");
    cr_assert_eq(b32_decode(b32, strlen(b32), s2), 20);
    free(b32);
    free(uri);
    cr_assert(memcmp(s1, s2, 20) != 0);
    info = info_of("alice", NOW);
    cr_assert_eq(info.last_counter, -1);
    cr_assert_eq(info.failures, 0);
    cr_assert_str_eq(info.issuer, "other");
    code_for(s1, STEP + 1, code);
    char code2[9];
    code_for(s2, STEP + 1, code2);
    if (strcmp(code, code2) != 0)
        cr_assert_eq(verify_at("alice", code, NOW, NULL), FERRY_TOTP_BAD_CODE);
    cr_assert_eq(verify_at("alice", code2, NOW, NULL), FERRY_TOTP_OK);
}

Test(totp, enroll_refuses_bad_issuer_and_arguments)
{
    char err[256], *uri = NULL;
    char longer[FERRY_TOTP_ISSUER_MAX + 2];

    memset(longer, 'a', sizeof(longer) - 1);
    longer[sizeof(longer) - 1] = '\0';
    cr_assert_eq(ferry_totp_enroll(state, "a", "ac:me", false, &uri, err, sizeof(err)), -EINVAL);
    cr_assert_eq(ferry_totp_enroll(state, "a", "ac\nme", false, &uri, err, sizeof(err)), -EINVAL);
    cr_assert_eq(ferry_totp_enroll(state, "a", "", false, &uri, err, sizeof(err)), -EINVAL);
    cr_assert_eq(ferry_totp_enroll(state, "a", longer, false, &uri, err, sizeof(err)), -EINVAL);
    cr_assert_eq(ferry_totp_enroll(state, "a", "caf\xc3\xa9", false, &uri, err, sizeof(err)),
                 -EINVAL);
    cr_assert_eq(ferry_totp_enroll(NULL, "a", NULL, false, &uri, err, sizeof(err)), -EINVAL);
    cr_assert_eq(ferry_totp_enroll(state, "a", NULL, false, NULL, err, sizeof(err)), -EINVAL);
    cr_assert_null(uri);
    cr_assert(!exists("totp"), "a refused enrolment created the folder");
    /* A quote and a backslash are printable: stored escaped, read back intact. */
    cr_assert_eq(ferry_totp_enroll(state, "a", "a\"b\\c", false, &uri, err, sizeof(err)), 0,
                 "%s", err);
    free(uri);
    cr_assert_str_eq(info_of("a", NOW).issuer, "a\"b\\c");
}

Test(totp, enroll_into_missing_state_dir_fails)
{
    char err[256], *uri = NULL, *p = path_in("nope");

    cr_assert_eq(ferry_totp_enroll(p, "a", NULL, false, &uri, err, sizeof(err)), -ENOENT);
    cr_assert(strstr(err, "state directory"), "%s", err);
    free(p);
}

/* ---- account names ------------------------------------------------------------------ */

Test(totp, account_names_that_could_escape_are_refused)
{
    static const char *const bad[] = {
        "",      ".",     "..",     "../x",  "a/b",    "/etc/passwd", "x/..", "a..b",
        ".hide", "-rf",   "a b",    "a:b",   "a\nb",   "a\tb",        "a\\b", "caf\xc3\xa9",
        "a*",    "a%2f",  "\x7f",  "a\"b",
    };
    char name[FERRY_TOTP_ACCOUNT_MAX + 2], err[256], *uri = NULL;
    ferry_totp_status st = FERRY_TOTP_OK;
    ferry_totp_info info;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cr_assert_eq(ferry_totp_account_check(bad[i]), -EINVAL, "'%s' accepted", bad[i]);
        cr_assert_eq(ferry_totp_enroll(state, bad[i], NULL, false, &uri, err, sizeof(err)),
                     -EINVAL, "'%s'", bad[i]);
        cr_assert_eq(ferry_totp_verify(state, bad[i], "123456", NOW, &st, NULL, err,
                                       sizeof(err)),
                     -EINVAL);
        cr_assert_eq(ferry_totp_inspect(state, bad[i], NOW, &info, err, sizeof(err)), -EINVAL);
    }
    cr_assert_eq(st, FERRY_TOTP_OK, "status written on failure");
    cr_assert_null(uri);
    cr_assert_eq(ferry_totp_account_check(NULL), -EINVAL);
    memset(name, 'a', sizeof(name) - 1);
    name[sizeof(name) - 1] = '\0';
    cr_assert_eq(ferry_totp_account_check(name), -EINVAL, "65 bytes accepted");
    name[FERRY_TOTP_ACCOUNT_MAX] = '\0';
    cr_assert_eq(ferry_totp_account_check(name), 0, "64 bytes refused");
    cr_assert_eq(ferry_totp_account_check("bob@example.com"), 0);
    cr_assert_eq(ferry_totp_account_check("A.b-c_d+e9"), 0);
    cr_assert(!exists("totp"), "a refused name created files");
}

/* ---- the window (H2) ---------------------------------------------------------------- */

Test(totp, accepts_previous_current_and_next_step)
{
    static const char *const acct[] = { "m1", "z0", "p1" };
    unsigned char s[20];
    char code[9];

    for (int off = -1; off <= 1; off++) {
        enroll(acct[off + 1], s);
        code_for(s, STEP + off, code);
        cr_assert_eq(verify_at(acct[off + 1], code, NOW, NULL), FERRY_TOTP_OK, "offset %d",
                     off);
        cr_assert_eq(info_of(acct[off + 1], NOW).last_counter, STEP + off);
    }
    /* At the last second of the next step the code is t-1: still accepted. */
    enroll("edge", s);
    code_for(s, STEP, code);
    cr_assert_eq(verify_at("edge", code, STEP * 30 + 29 + 30, NULL), FERRY_TOTP_OK);
}

Test(totp, refuses_two_steps_away)
{
    unsigned char s[20];
    char c[9], at[5][9];

    enroll("alice", s);
    for (int i = 0; i < 5; i++)
        code_for(s, STEP - 2 + i, at[i]);
    for (int off = -3; off <= 3; off++) {
        if (off >= -1 && off <= 1)
            continue;
        code_for(s, STEP + off, c);
        bool collides = false; /* one in 10^6: a far code equal to a near one */
        for (int i = 1; i < 4; i++)
            collides |= strcmp(c, at[i]) == 0;
        if (!collides)
            cr_assert_eq(verify_at("alice", c, NOW, NULL), FERRY_TOTP_BAD_CODE, "offset %d",
                         off);
    }
    cr_assert_eq(info_of("alice", NOW).last_counter, -1);
}

Test(totp, early_clock_has_no_negative_steps)
{
    unsigned char s[20];
    char code[9];
    ferry_totp_status st;
    char err[128];

    enroll("alice", s);
    code_for(s, 0, code);
    cr_assert_eq(verify_at("alice", code, 5, NULL), FERRY_TOTP_OK);
    cr_assert_eq(ferry_totp_verify(state, "alice", code, -1, &st, NULL, err, sizeof(err)),
                 -EINVAL);
}

/* ---- replay (H1) -------------------------------------------------------------------- */

Test(totp, same_code_twice_is_refused)
{
    unsigned char s[20];
    char code[9];

    enroll("alice", s);
    code_for(s, STEP, code);
    cr_assert_eq(verify_at("alice", code, NOW, NULL), FERRY_TOTP_OK);
    cr_assert_eq(verify_at("alice", code, NOW, NULL), FERRY_TOTP_REPLAYED);
    cr_assert_eq(verify_at("alice", code, NOW + 29, NULL), FERRY_TOTP_REPLAYED);
    /* The next step's code is fine. */
    code_for(s, STEP + 1, code);
    cr_assert_eq(verify_at("alice", code, NOW + 30, NULL), FERRY_TOTP_OK);
}

Test(totp, older_step_after_newer_is_refused)
{
    unsigned char s[20];
    char prev[9], cur[9], next[9];

    enroll("alice", s);
    code_for(s, STEP - 1, prev);
    code_for(s, STEP, cur);
    code_for(s, STEP + 1, next);
    cr_assert_eq(verify_at("alice", next, NOW, NULL), FERRY_TOTP_OK);
    if (strcmp(cur, next) != 0)
        cr_assert_eq(verify_at("alice", cur, NOW, NULL), FERRY_TOTP_REPLAYED);
    if (strcmp(prev, next) != 0)
        cr_assert_eq(verify_at("alice", prev, NOW, NULL), FERRY_TOTP_REPLAYED);
    cr_assert_eq(info_of("alice", NOW).last_counter, STEP + 1);
}

Test(totp, replay_survives_a_new_process)
{
    unsigned char s[20];
    char code[9];
    pid_t pid;
    int ws;

    enroll("alice", s);
    code_for(s, STEP, code);
    pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        ferry_totp_status st;
        int r = ferry_totp_verify(state, "alice", code, NOW, &st, NULL, NULL, 0);
        _exit(r == 0 && st == FERRY_TOTP_OK ? 0 : 1);
    }
    cr_assert_eq(waitpid(pid, &ws, 0), pid);
    cr_assert(WIFEXITED(ws) && WEXITSTATUS(ws) == 0);
    cr_assert_eq(verify_at("alice", code, NOW, NULL), FERRY_TOTP_REPLAYED);
    /* What is on disk says so too. */
    char *text = read_text("totp/alice.json");
    char want[64];
    snprintf(want, sizeof(want), "\"last_counter\": %lld", (long long)STEP);
    cr_assert(strstr(text, want), "%s", text);
    free(text);
}

/* ---- malformed codes (H2) ----------------------------------------------------------- */

Test(totp, malformed_codes_are_refused)
{
    /* ... including six full-width digits (U+FF11..U+FF16), digits to a Unicode reader. */
    static const char *const fixed[] = {
        "",       "12345",  "1234567", "12345a",
        "+12345", "-12345", "12 456",
        "\xef\xbc\x91\xef\xbc\x92\xef\xbc\x93\xef\xbc\x94\xef\xbc\x95\xef\xbc\x96",
        "0x1234", "123456789012345678901234",
    };
    /* The right code with anything around it, or a prefix of it, is not the right code. */
    static const struct {
        const char *pre, *post;
        int len;
    } around[] = { { " ", "", 6 },  { "", " ", 6 }, { "", "\n", 6 }, { "\t", "", 6 },
                   { "", "\r", 6 }, { "0", "", 6 }, { "", "0", 6 },  { "+", "", 6 },
                   { "", "", 5 } };
    const size_t nfixed = sizeof(fixed) / sizeof(fixed[0]);
    unsigned char s[20];
    char code[9], input[64], acct[16];

    for (size_t i = 0; i < nfixed + sizeof(around) / sizeof(around[0]); i++) {
        snprintf(acct, sizeof(acct), "m%zu", i);
        enroll(acct, s);
        code_for(s, STEP, code);
        if (i < nfixed)
            snprintf(input, sizeof(input), "%s", fixed[i]);
        else
            snprintf(input, sizeof(input), "%s%.*s%s", around[i - nfixed].pre,
                     around[i - nfixed].len, code, around[i - nfixed].post);
        cr_assert_eq(verify_at(acct, input, NOW, NULL), FERRY_TOTP_MALFORMED, "input %zu", i);
        cr_assert_eq(verify_at(acct, NULL, NOW, NULL), FERRY_TOTP_MALFORMED);
        /* Malformed attempts count as failures but use nothing up. */
        cr_assert_eq(info_of(acct, NOW).failures, 2);
        cr_assert_eq(verify_at(acct, code, NOW, NULL), FERRY_TOTP_OK);
    }
}

Test(totp, unknown_account_creates_nothing)
{
    int64_t retry = 7;

    cr_assert_eq(verify_at("ghost", "123456", NOW, &retry), FERRY_TOTP_UNKNOWN_ACCOUNT);
    cr_assert_eq(retry, 0);
    cr_assert(!exists("totp"));
    unsigned char s[20];
    enroll("alice", s);
    cr_assert_eq(verify_at("ghost", "123456", NOW, NULL), FERRY_TOTP_UNKNOWN_ACCOUNT);
    cr_assert(!exists("totp/ghost.lock"), "probing a name created its lock file");
    ferry_totp_info info;
    char err[128];
    cr_assert_eq(ferry_totp_inspect(state, "ghost", NOW, &info, err, sizeof(err)), -ENOENT);
}

/* ---- lock-out (H3) ------------------------------------------------------------------ */

/* Fail n times at now with a code that is not in the window; returns the last retry. */
static int64_t fail_n(const char *acct, const unsigned char *s, int n, int64_t now,
                      ferry_totp_status want_last)
{
    char bad[9], near[3][9];
    int64_t retry = -1;

    for (int i = 0; i < 3; i++)
        code_for(s, now / 30 - 1 + i, near[i]);
    /* A code guaranteed wrong: not equal to any of the three valid ones. */
    for (unsigned v = 0;; v++) {
        snprintf(bad, sizeof(bad), "%06u", v);
        if (strcmp(bad, near[0]) && strcmp(bad, near[1]) && strcmp(bad, near[2]))
            break;
    }
    for (int i = 0; i < n; i++) {
        ferry_totp_status st = verify_at(acct, bad, now, &retry);
        cr_assert_eq(st, i == n - 1 ? want_last : FERRY_TOTP_BAD_CODE, "attempt %d: %s", i,
                     ferry_totp_status_name(st));
    }
    return retry;
}

Test(totp, lockout_after_five_failures_then_backoff_doubles)
{
    unsigned char s[20];
    char code[9];
    int64_t now = NOW, retry, want = 30;

    enroll("alice", s);
    /* Four failures: not locked. */
    cr_assert_eq(fail_n("alice", s, 4, now, FERRY_TOTP_BAD_CODE), 0);
    cr_assert_eq(info_of("alice", now).failures, 4);
    /* The fifth locks for 30 s and says so. */
    cr_assert_eq(fail_n("alice", s, 1, now, FERRY_TOTP_BAD_CODE), 30);
    /* While locked even the right code is refused without being looked at or used up. */
    code_for(s, now / 30, code);
    cr_assert_eq(verify_at("alice", code, now, &retry), FERRY_TOTP_LOCKED);
    cr_assert_eq(retry, 30);
    cr_assert_eq(verify_at("alice", code, now + 10, &retry), FERRY_TOTP_LOCKED);
    cr_assert_eq(retry, 20);
    cr_assert_eq(verify_at("alice", "garbage", now + 29, &retry), FERRY_TOTP_LOCKED);
    cr_assert_eq(retry, 1);
    /* Attempts while locked neither extend the lock nor count. */
    ferry_totp_info info = info_of("alice", now + 29);
    cr_assert_eq(info.failures, 0);
    cr_assert_eq(info.lockouts, 1);
    cr_assert_eq(info.locked_until, now + 30);
    cr_assert_eq(info.retry_after, 1);

    /* Each further lock-out doubles: 60, 120, ... capped at 3600. */
    for (int k = 2; k <= 10; k++) {
        now = info_of("alice", now).locked_until;
        want = want * 2 > FERRY_TOTP_LOCK_MAX ? FERRY_TOTP_LOCK_MAX : want * 2;
        retry = fail_n("alice", s, 5, now, FERRY_TOTP_BAD_CODE);
        cr_assert_eq(retry, want, "lock-out %d: %lld s, want %lld", k, (long long)retry,
                     (long long)want);
        cr_assert_eq(info_of("alice", now).lockouts, (unsigned)k);
    }
    cr_assert_eq(want, 3600);

    /* After the lock a success resets everything: the next lock-out is 30 s again. */
    now = info_of("alice", now).locked_until;
    code_for(s, now / 30, code);
    cr_assert_eq(verify_at("alice", code, now, &retry), FERRY_TOTP_OK);
    cr_assert_eq(retry, 0);
    info = info_of("alice", now);
    cr_assert_eq(info.failures, 0);
    cr_assert_eq(info.lockouts, 0);
    cr_assert_eq(info.locked_until, 0);
    cr_assert_eq(fail_n("alice", s, 5, now, FERRY_TOTP_BAD_CODE), 30);
}

Test(totp, code_refused_while_locked_is_still_usable_after)
{
    unsigned char s[20];
    char code[9];

    enroll("alice", s);
    cr_assert_eq(fail_n("alice", s, 5, NOW, FERRY_TOTP_BAD_CODE), 30);
    code_for(s, STEP, code);
    cr_assert_eq(verify_at("alice", code, NOW + 1, NULL), FERRY_TOTP_LOCKED);
    /* 30 s later that code belongs to t-1: still in the window and never used. */
    cr_assert_eq(verify_at("alice", code, NOW + 30, NULL), FERRY_TOTP_OK);
}

Test(totp, success_resets_the_failure_count)
{
    unsigned char s[20];
    char code[9];

    enroll("alice", s);
    fail_n("alice", s, 4, NOW, FERRY_TOTP_BAD_CODE);
    code_for(s, STEP, code);
    cr_assert_eq(verify_at("alice", code, NOW, NULL), FERRY_TOTP_OK);
    cr_assert_eq(info_of("alice", NOW).failures, 0);
    /* Four more failures do not lock: the count started over. */
    cr_assert_eq(fail_n("alice", s, 4, NOW, FERRY_TOTP_BAD_CODE), 0);
    /* Replays count as failures too. */
    cr_assert_eq(verify_at("alice", code, NOW, NULL), FERRY_TOTP_REPLAYED);
    cr_assert_eq(info_of("alice", NOW).lockouts, 1);
}

/* ---- hostile state ------------------------------------------------------------------ */

static const char good_fmt[] =
    "{\"version\": 1, \"algorithm\": \"SHA1\", \"digits\": 6, \"period\": 30, "
    "\"issuer\": \"ferry\", \"secret\": \"GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ\", \"created\": 1, "
    "\"last_counter\": -1, \"failures\": 0, \"lockouts\": 0, \"locked_until\": 0%s}";

static int verify_raw(const char *acct, int64_t now, char *err, size_t errlen,
                      ferry_totp_status *st)
{
    return ferry_totp_verify(state, acct, "123456", now, st, NULL, err, errlen);
}

Test(totp, a_handwritten_record_works)
{
    /* The secret above is base32("12345678901234567890"): RFC 4226 Appendix D. */
    char text[1024];
    ferry_totp_status st;
    char err[256];

    mkdir_in("totp");
    snprintf(text, sizeof(text), good_fmt, "");
    write_file("totp/rfc.json", text, strlen(text), 0600);
    /* Counter 1 = "287082", at any time in [30, 60). */
    cr_assert_eq(ferry_totp_verify(state, "rfc", "287082", 45, &st, NULL, err, sizeof(err)), 0,
                 "%s", err);
    cr_assert_eq(st, FERRY_TOTP_OK);
    cr_assert_eq(mode_of("totp/rfc.json"), 0600);
}

Test(totp, hostile_records_are_refused)
{
    static const struct {
        const char *text;
        int want;
        const char *msg;
    } cases[] = {
        { "not json", -FERRY_EMALFORMED, "not valid JSON" },
        { "", -FERRY_EMALFORMED, "not valid JSON" },
        { "[]", -FERRY_EMALFORMED, "not a JSON object" },
        { "{\"version\": 1}", -FERRY_EMALFORMED, "is missing" },
        { "{\"version\": 1, \"version\": 1}", -FERRY_EMALFORMED, "not valid JSON" },
        { "{\"version\": {\"a\": 1}}", -FERRY_EMALFORMED, "not valid JSON" },
        { "{\"version\": 2, \"algorithm\": \"SHA1\", \"digits\": 6, \"period\": 30, "
          "\"issuer\": \"ferry\", \"secret\": \"GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ\", \"created\": "
          "1, \"last_counter\": -1, \"failures\": 0, \"lockouts\": 0, \"locked_until\": 0}",
          -FERRY_EMALFORMED, "\"version\"" },
        { "{\"version\": 1, \"algorithm\": \"SHA256\", \"digits\": 6, \"period\": 30, "
          "\"issuer\": \"ferry\", \"secret\": \"GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ\", \"created\": "
          "1, \"last_counter\": -1, \"failures\": 0, \"lockouts\": 0, \"locked_until\": 0}",
          -FERRY_EMALFORMED, "\"algorithm\"" },
        { "{\"version\": 1, \"algorithm\": \"SHA1\", \"digits\": \"6\", \"period\": 30, "
          "\"issuer\": \"ferry\", \"secret\": \"GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ\", \"created\": "
          "1, \"last_counter\": -1, \"failures\": 0, \"lockouts\": 0, \"locked_until\": 0}",
          -FERRY_EMALFORMED, "\"digits\"" },
        { "{\"version\": 1, \"algorithm\": \"SHA1\", \"digits\": 6, \"period\": 0, "
          "\"issuer\": \"ferry\", \"secret\": \"GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ\", \"created\": "
          "1, \"last_counter\": -1, \"failures\": 0, \"lockouts\": 0, \"locked_until\": 0}",
          -FERRY_EMALFORMED, "\"period\"" },
        { "{\"version\": 1, \"algorithm\": \"SHA1\", \"digits\": 6, \"period\": 30, "
          "\"issuer\": \"ferry\", \"secret\": \"gezdgnbvgy3tqojqgezdgnbvgy3tqojq\", \"created\": "
          "1, \"last_counter\": -1, \"failures\": 0, \"lockouts\": 0, \"locked_until\": 0}",
          -FERRY_EMALFORMED, "\"secret\"" },
        { "{\"version\": 1, \"algorithm\": \"SHA1\", \"digits\": 6, \"period\": 30, "
          "\"issuer\": \"ferry\", \"secret\": \"GEZDGNBVGY3TQOJQ\", \"created\": "
          "1, \"last_counter\": -1, \"failures\": 0, \"lockouts\": 0, \"locked_until\": 0}",
          -FERRY_EMALFORMED, "\"secret\"" },
        { "{\"version\": 1, \"algorithm\": \"SHA1\", \"digits\": 6, \"period\": 30, "
          "\"issuer\": \"ferry\", \"secret\": \"GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ\", \"created\": "
          "1, \"last_counter\": -2, \"failures\": 0, \"lockouts\": 0, \"locked_until\": 0}",
          -FERRY_EMALFORMED, "\"last_counter\"" },
        { "{\"version\": 1, \"algorithm\": \"SHA1\", \"digits\": 6, \"period\": 30, "
          "\"issuer\": \"ferry\", \"secret\": \"GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ\", \"created\": "
          "1, \"last_counter\": -1, \"failures\": 99, \"lockouts\": 0, \"locked_until\": 0}",
          -FERRY_EMALFORMED, "\"failures\"" },
        { "{\"version\": 1, \"algorithm\": \"SHA1\", \"digits\": 6, \"period\": 30, "
          "\"issuer\": \"ferry\", \"secret\": \"GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ\", \"created\": "
          "1, \"last_counter\": -1, \"failures\": 0, \"lockouts\": 0, \"locked_until\": 0.5}",
          -FERRY_EMALFORMED, "\"locked_until\"" },
        { "{\"version\": 1, \"algorithm\": \"SHA1\", \"digits\": 6, \"period\": 30, "
          "\"issuer\": \"fe:rry\", \"secret\": \"GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ\", \"created\": "
          "1, \"last_counter\": -1, \"failures\": 0, \"lockouts\": 0, \"locked_until\": 0}",
          -FERRY_EMALFORMED, "\"issuer\"" },
    };
    char err[256], text[1024];
    ferry_totp_status st = (ferry_totp_status)77;

    mkdir_in("totp");
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        write_file("totp/x.json", cases[i].text, strlen(cases[i].text), 0600);
        cr_assert_eq(verify_raw("x", NOW, err, sizeof(err), &st), cases[i].want, "case %zu", i);
        cr_assert(strstr(err, cases[i].msg), "case %zu: %s", i, err);
        cr_assert_null(strstr(err, "GEZDGNBV"), "secret in the message: %s", err);
        /* The record is left as it was: nothing is decided or rewritten. */
        char *back = read_text("totp/x.json");
        cr_assert_str_eq(back, cases[i].text, "case %zu rewritten", i);
        free(back);
    }
    cr_assert_eq(st, (ferry_totp_status)77, "status written on failure");

    /* An unknown member, even alongside all the right ones. */
    snprintf(text, sizeof(text), good_fmt, ", \"extra\\u0001\": true");
    write_file("totp/x.json", text, strlen(text), 0600);
    cr_assert_eq(verify_raw("x", NOW, err, sizeof(err), &st), -FERRY_EMALFORMED);
    cr_assert(strstr(err, "unknown member \"extra?\""), "%s", err);

    /* Oversized: a valid record padded past 4096 bytes. */
    char big[6000];
    snprintf(text, sizeof(text), good_fmt, "");
    memset(big, ' ', sizeof(big));
    memcpy(big, text, strlen(text));
    write_file("totp/x.json", big, sizeof(big), 0600);
    cr_assert_eq(verify_raw("x", NOW, err, sizeof(err), &st), -FERRY_ETOOBIG);
    cr_assert(strstr(err, "larger than"), "%s", err);

    /* The same valid record at 4096 bytes exactly is fine. */
    write_file("totp/x.json", big, 4096, 0600);
    cr_assert_eq(verify_raw("x", NOW, err, sizeof(err), &st), 0, "%s", err);
}

Test(totp, record_open_to_others_is_refused)
{
    static const mode_t modes[] = { 0644, 0640, 0604, 0620, 0602, 0601, 0610 };
    char err[256], text[1024];
    ferry_totp_status st;
    ferry_totp_info info;

    mkdir_in("totp");
    snprintf(text, sizeof(text), good_fmt, "");
    for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
        write_file("totp/x.json", text, strlen(text), modes[i]);
        cr_assert_eq(verify_raw("x", NOW, err, sizeof(err), &st), -EPERM, "mode %o", modes[i]);
        cr_assert(strstr(err, "group/other"), "%s", err);
        cr_assert_eq(ferry_totp_inspect(state, "x", NOW, &info, err, sizeof(err)), -EPERM);
    }
    write_file("totp/x.json", text, strlen(text), 0400);
    cr_assert_eq(verify_raw("x", NOW, err, sizeof(err), &st), 0, "%s", err);
}

Test(totp, record_that_is_not_a_regular_file_is_refused)
{
    char err[256], *p;
    ferry_totp_status st;

    mkdir_in("totp");
    /* A symlink to a perfectly good record elsewhere. */
    char text[1024];
    snprintf(text, sizeof(text), good_fmt, "");
    write_file("elsewhere.json", text, strlen(text), 0600);
    p = path_in("elsewhere.json");
    char *l = path_in("totp/link.json");
    cr_assert_eq(symlink(p, l), 0);
    cr_assert_eq(verify_raw("link", NOW, err, sizeof(err), &st), -EPERM);
    cr_assert(strstr(err, "symlink"), "%s", err);
    free(p);
    free(l);
    /* A FIFO must neither hang nor be read. */
    p = path_in("totp/fifo.json");
    cr_assert_eq(mkfifo(p, 0600), 0);
    cr_assert_eq(verify_raw("fifo", NOW, err, sizeof(err), &st), -EPERM);
    cr_assert(strstr(err, "not a regular file"), "%s", err);
    free(p);
    /* A directory. */
    p = path_in("totp/dir.json");
    cr_assert_eq(mkdir(p, 0700), 0);
    cr_assert_eq(verify_raw("dir", NOW, err, sizeof(err), &st), -EPERM);
    free(p);
}

Test(totp, state_folder_must_be_private)
{
    char err[256], *uri = NULL, *p = path_in("totp");
    unsigned char s[20];
    ferry_totp_status st;

    enroll("alice", s);
    cr_assert_eq(chmod(p, 0755), 0);
    cr_assert_eq(verify_raw("alice", NOW, err, sizeof(err), &st), -EPERM);
    cr_assert(strstr(err, "state folder"), "%s", err);
    cr_assert_eq(ferry_totp_enroll(state, "bob", NULL, false, &uri, err, sizeof(err)), -EPERM);
    cr_assert_null(uri);
    cr_assert_eq(chmod(p, 0700), 0);
    free(p);

    /* totp as a symlink to a private folder elsewhere is refused too. */
    char *real = path_in("real"), *t = path_in("totp");
    cr_assert_eq(rename(t, real), 0);
    cr_assert_eq(symlink(real, t), 0);
    cr_assert_eq(verify_raw("alice", NOW, err, sizeof(err), &st), -EPERM);
    cr_assert(strstr(err, "symlink"), "%s", err);
    free(real);
    free(t);
}

/* ---- persistence failures fail closed ----------------------------------------------- */

Test(totp, a_decision_that_cannot_be_saved_is_not_given)
{
    unsigned char s[20];
    char code[9], err[256], *tmp = path_in("totp/.alice.tmp");
    ferry_totp_status st = (ferry_totp_status)77;

    enroll("alice", s);
    code_for(s, STEP, code);
    /* A directory where the temp file goes: the record cannot be replaced (even as root). */
    cr_assert_eq(mkdir(tmp, 0700), 0);
    cr_assert_lt(ferry_totp_verify(state, "alice", code, NOW, &st, NULL, err, sizeof(err)), 0);
    cr_assert_eq(st, (ferry_totp_status)77);
    cr_assert(strstr(err, ".alice.tmp"), "%s", err);
    cr_assert_null(strstr(err, code), "code in the message");
    cr_assert_lt(ferry_totp_verify(state, "alice", "000000", NOW, &st, NULL, err, sizeof(err)),
                 0);
    cr_assert_eq(info_of("alice", NOW).failures, 0, "a failure that was not saved counted");
    cr_assert_eq(rmdir(tmp), 0);
    /* Nothing was saved, so the code was not used up. */
    cr_assert_eq(verify_at("alice", code, NOW, NULL), FERRY_TOTP_OK);

    /* A symlink planted as the temp file is neither written through nor kept. */
    char *victim = path_in("victim");
    write_file("victim", "untouched", 9, 0600);
    cr_assert_eq(symlink(victim, tmp), 0);
    cr_assert_lt(ferry_totp_verify(state, "alice", "000000", NOW, &st, NULL, err, sizeof(err)),
                 0);
    char *v = read_text("victim");
    cr_assert_str_eq(v, "untouched");
    free(v);
    cr_assert(!exists("totp/.alice.tmp"), "planted symlink left in place");
    cr_assert_eq(verify_at("alice", "000000", NOW, NULL) == FERRY_TOTP_OK, false);
    free(victim);
    free(tmp);
}

/* ---- concurrency -------------------------------------------------------------------- */

#define RACERS 8

Test(totp, concurrent_processes_one_code_one_success)
{
    unsigned char s[20];
    char code[9];
    pid_t pids[RACERS];
    int ok = 0, replayed = 0, locked = 0;

    enroll("alice", s);
    code_for(s, STEP, code);
    for (int i = 0; i < RACERS; i++) {
        pids[i] = fork();
        cr_assert_geq(pids[i], 0);
        if (pids[i] == 0) {
            ferry_totp_status st;
            int r = ferry_totp_verify(state, "alice", code, NOW, &st, NULL, NULL, 0);
            _exit(r < 0 ? 100 : (int)st);
        }
    }
    for (int i = 0; i < RACERS; i++) {
        int ws;
        cr_assert_eq(waitpid(pids[i], &ws, 0), pids[i]);
        cr_assert(WIFEXITED(ws));
        ok += WEXITSTATUS(ws) == FERRY_TOTP_OK;
        replayed += WEXITSTATUS(ws) == FERRY_TOTP_REPLAYED;
        locked += WEXITSTATUS(ws) == FERRY_TOTP_LOCKED;
    }
    /* Serialised whatever the order: one success, then replays until the fifth locks the
     * account, then locked. */
    cr_assert_eq(ok, 1, "%d processes accepted the same code", ok);
    cr_assert_eq(replayed, FERRY_TOTP_MAX_FAILURES);
    cr_assert_eq(locked, RACERS - 1 - FERRY_TOTP_MAX_FAILURES);
    ferry_totp_info info = info_of("alice", NOW);
    cr_assert_eq(info.last_counter, STEP);
    cr_assert_eq(info.lockouts, 1);
}

struct racer {
    const char *code;
    pthread_barrier_t *bar;
    int r;
    ferry_totp_status st;
};

static void *race(void *arg)
{
    struct racer *rc = arg;

    pthread_barrier_wait(rc->bar);
    rc->r = ferry_totp_verify(state, "alice", rc->code, NOW, &rc->st, NULL, NULL, 0);
    return NULL;
}

Test(totp, concurrent_threads_one_code_one_success)
{
    unsigned char s[20];
    char code[9];
    pthread_t th[RACERS];
    struct racer rc[RACERS];
    pthread_barrier_t bar;
    int ok = 0, replayed = 0;

    enroll("alice", s);
    code_for(s, STEP + 1, code);
    pthread_barrier_init(&bar, NULL, RACERS);
    for (int i = 0; i < RACERS; i++) {
        rc[i] = (struct racer){ .code = code, .bar = &bar };
        cr_assert_eq(pthread_create(&th[i], NULL, race, &rc[i]), 0);
    }
    for (int i = 0; i < RACERS; i++) {
        pthread_join(th[i], NULL);
        cr_assert_eq(rc[i].r, 0);
        ok += rc[i].st == FERRY_TOTP_OK;
        replayed += rc[i].st == FERRY_TOTP_REPLAYED;
        if (rc[i].st != FERRY_TOTP_OK && rc[i].st != FERRY_TOTP_REPLAYED)
            cr_assert_eq(rc[i].st, FERRY_TOTP_LOCKED);
    }
    pthread_barrier_destroy(&bar);
    cr_assert_eq(ok, 1);
    cr_assert_eq(replayed, FERRY_TOTP_MAX_FAILURES);
    cr_assert_eq(info_of("alice", NOW).last_counter, STEP + 1);
}

/* Inspection (`ferry totp status`) is read-only: it creates no lock file (and changes no
 * record) even when the lock file is missing, e.g. after a restore from a backup. */
Test(totp, inspect_creates_and_changes_nothing)
{
    unsigned char s[20];
    char *before, *after, *lock;
    ferry_totp_info info;

    enroll("alice", s);
    fail_n("alice", s, 2, NOW, FERRY_TOTP_BAD_CODE);
    cr_assert(exists("totp/alice.lock"));
    lock = path_in("totp/alice.lock");
    cr_assert_eq(unlink(lock), 0);
    free(lock);
    before = read_text("totp/alice.json");
    info = info_of("alice", NOW);
    cr_expect_eq(info.failures, 2);
    cr_expect(!exists("totp/alice.lock"), "inspect created a lock file");
    after = read_text("totp/alice.json");
    cr_expect_str_eq(after, before);
    free(before);
    free(after);
    /* A writer still works and brings the lock file back. */
    cr_expect_eq(fail_n("alice", s, 1, NOW, FERRY_TOTP_BAD_CODE), 0);
    cr_expect(exists("totp/alice.lock"));
}
