/* tests/unit/test_basic.c - unit tests of src/basic (base64url, bounded buffer, memory
 * helpers) and of ferry_strerror(). Includes every rejected base64url form of
 * SECURITY-TESTS A3. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "basic/b64.h"
#include "basic/buf.h"
#include "basic/fileio.h"
#include "basic/macro.h"
#include "basic/mem.h"
#include "basic/utf8.h"
#include "ferry/error.h"

/* ---- base64url ---------------------------------------------------------------------------- */

/* RFC 4648 §10 test vectors, in the URL-safe alphabet without padding. */
static const struct {
    const char *plain;
    const char *enc;
} rfc4648[] = {
    {"", ""},          {"f", "Zg"},         {"fo", "Zm8"},       {"foo", "Zm9v"},
    {"foob", "Zm9vYg"}, {"fooba", "Zm9vYmE"}, {"foobar", "Zm9vYmFy"},
};

Test(b64url, rfc4648_vectors)
{
    for (size_t i = 0; i < ARRAY_SIZE(rfc4648); i++) {
        size_t n = strlen(rfc4648[i].plain), len = 99;
        char out[16];
        unsigned char dec[16];

        cr_assert_eq(ferry_b64url_encoded_len(n), strlen(rfc4648[i].enc));
        cr_assert_eq(ferry_b64url_encode(rfc4648[i].plain, n, out), strlen(rfc4648[i].enc));
        cr_assert_str_eq(out, rfc4648[i].enc);
        cr_assert_eq(ferry_b64url_decode(rfc4648[i].enc, strlen(rfc4648[i].enc), dec, &len), 0);
        cr_assert_eq(len, n);
        cr_assert_eq(memcmp(dec, rfc4648[i].plain, n), 0);
    }
}

Test(b64url, url_alphabet)
{
    static const unsigned char in[] = {0xfb, 0xff, 0xbf, 0xfe};
    unsigned char dec[4];
    size_t len = 0;
    char out[8];

    /* 0xfb 0xff 0xbf -> "-_-_" in the URL alphabet ("+/+/" in the standard one). */
    ferry_b64url_encode(in, 3, out);
    cr_assert_str_eq(out, "-_-_");
    ferry_b64url_encode(in, 4, out);
    cr_assert_str_eq(out, "-_-__g");
    cr_assert_eq(ferry_b64url_decode("-_-__g", 6, dec, &len), 0);
    cr_assert_eq(len, 4);
    cr_assert_eq(memcmp(dec, in, 4), 0);
    cr_assert_eq(ferry_b64url_decode("+/+/", 4, dec, &len), -EINVAL);
}

Test(b64url, roundtrip_all_lengths)
{
    unsigned char in[300];

    for (size_t i = 0; i < sizeof(in); i++)
        in[i] = (unsigned char)(i * 131 + 7);
    for (size_t n = 0; n <= sizeof(in); n++) {
        size_t elen = ferry_b64url_encoded_len(n), dlen = 0;
        char *enc = malloc(elen + 1);
        /* exactly the documented output size: n * 3 / 4 of the encoded length */
        unsigned char *dec = malloc(elen * 3 / 4 + 1);
        unsigned char *dec2 = NULL;

        cr_assert(enc && dec);
        cr_assert_eq(ferry_b64url_encode(in, n, enc), elen);
        cr_assert_eq(enc[elen], '\0');
        cr_assert_eq(strlen(enc), elen);
        cr_assert_neq(elen % 4, 1);
        cr_assert_eq(ferry_b64url_decode(enc, elen, dec, &dlen), 0);
        cr_assert_eq(dlen, n);
        cr_assert_eq(memcmp(dec, in, n), 0);
        cr_assert_eq(ferry_b64url_decode_alloc(enc, elen, &dec2, &dlen), 0);
        cr_assert_eq(dlen, n);
        cr_assert_eq(memcmp(dec2, in, n), 0);
        cr_assert_eq(dec2[n], '\0', "decode_alloc NUL-terminates");
        free(dec2);
        {
            char *e2 = ferry_b64url_encode_alloc(in, n);
            cr_assert_not_null(e2);
            cr_assert_str_eq(e2, enc);
            free(e2);
        }
        free(enc);
        free(dec);
    }
}

/* Decode must fail for s; with decode_alloc too, leaving the outputs untouched. */
static void assert_rejected(const char *s, size_t n)
{
    unsigned char out[256], *p = (unsigned char *)0x1;
    size_t len = 12345;

    cr_assert_eq(ferry_b64url_decode(s, n, out, &len), -EINVAL, "'%.*s' accepted", (int)n, s);
    cr_assert_eq(len, 12345, "ret_len written on failure");
    cr_assert_eq(ferry_b64url_decode_alloc(s, n, &p, &len), -EINVAL);
    cr_assert_eq(p, (unsigned char *)0x1, "ret written on failure");
}

/* SECURITY-TESTS A3: every rejected form. */
Test(b64url, a3_rejected_forms)
{
    static const char *const bad[] = {
        "Zg==",      /* padding */
        "Zg=",       "Zm8=",     "Zm9vYg==", "=",     "====",
        "Zm+v",      /* standard alphabet */
        "Zm/v",      "Zm9v Yg",  /* inner whitespace */
        "Zm9v\nYg",  "Zm9v\r\nYg", "Zm9v\tYg", " Zm9v", /* leading/trailing whitespace */
        "Zm9v ",     "Zm9v\n",   "\nZm9v",   "Zm9!",  /* other punctuation */
        "Zm9.",      "Zm9*",     "Zm9%",     "Zm9\\", "Zm9\"",
        "\xef\xbb\xbfZm9v",      /* UTF-8 BOM */
        "Zm9\xc3\xa9",           /* non-ASCII */
        "Zm9\x80",   "Zm9\xff",
        "Z",         /* length % 4 == 1 */
        "Zm9vY",     "Zm9vYmFyZ",
        "Zh",        /* non-canonical: unused low 4 bits set ("Zg" is canonical) */
        "Zm9",       /* non-canonical: unused low 2 bits set ("Zm8" is canonical) */
        "Zm9vYh",    "Zm9vYmF",
    };

    for (size_t i = 0; i < ARRAY_SIZE(bad); i++)
        assert_rejected(bad[i], strlen(bad[i]));
    /* A raw NUL inside the given length. */
    assert_rejected("Zm\0v", 4);
    assert_rejected("\0\0\0\0", 4);
}

/* Of the characters that could end a 2- or 3-character group, exactly the canonical ones
 * (unused bits zero) decode. */
Test(b64url, a3_canonical_tail_exhaustive)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    int ok2 = 0, ok3 = 0;

    for (int c = 0; c < 256; c++) {
        char two[2] = {'Z', (char)c}, three[3] = {'Z', 'm', (char)c};
        unsigned char out[4];
        size_t len;
        const char *pos = c ? strchr(alphabet, c) : NULL;
        int r2 = ferry_b64url_decode(two, 2, out, &len);
        int r3 = ferry_b64url_decode(three, 3, out, &len);

        if (r2 == 0) {
            ok2++;
            cr_assert_not_null(pos);
            cr_assert_eq((pos - alphabet) & 0x0f, 0, "'%c' accepted in a 2-char tail", c);
        }
        if (r3 == 0) {
            ok3++;
            cr_assert_not_null(pos);
            cr_assert_eq((pos - alphabet) & 0x03, 0, "'%c' accepted in a 3-char tail", c);
        }
    }
    cr_assert_eq(ok2, 4);
    cr_assert_eq(ok3, 16);
}

Test(b64url, every_byte_in_every_position)
{
    /* Any byte outside the alphabet, at any position of a 4- or 8-char input, is refused. */
    static const char good[] = "Zm9vYmFy";
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

    for (size_t pos = 0; pos < 8; pos++) {
        for (int c = 0; c < 256; c++) {
            char s[8];
            unsigned char out[8];
            size_t len;
            memcpy(s, good, 8);
            s[pos] = (char)c;
            int r = ferry_b64url_decode(s, 8, out, &len);
            if (c && strchr(alphabet, c))
                cr_assert_eq(r, 0);
            else
                cr_assert_eq(r, -EINVAL, "byte 0x%02x at %zu", c, pos);
        }
    }
}

Test(b64url, empty)
{
    unsigned char out[1], *p = NULL;
    size_t len = 7;

    cr_assert_eq(ferry_b64url_decode("", 0, out, &len), 0);
    cr_assert_eq(len, 0);
    cr_assert_eq(ferry_b64url_decode_alloc("", 0, &p, &len), 0);
    cr_assert_not_null(p);
    cr_assert_eq(p[0], '\0');
    free(p);
    cr_assert_eq(ferry_b64url_encoded_len(0), 0);
}

/* ---- bounded buffer ----------------------------------------------------------------------- */

Test(buf, max_enforced)
{
    ferry_buf b;
    char *s;
    size_t len = 0;

    ferry_buf_init(&b, 10, false);
    cr_assert_null(b.data);
    cr_assert_eq(b.len, 0);
    cr_assert_eq(ferry_buf_append(&b, "hello", 5), 0);
    cr_assert_str_eq(b.data, "hello");
    cr_assert_eq(ferry_buf_append_str(&b, "world"), 0);
    cr_assert_eq(b.len, 10);
    cr_assert_str_eq(b.data, "helloworld");
    /* Full: any non-empty append is refused and leaves the content unchanged. */
    cr_assert_eq(ferry_buf_append(&b, "!", 1), -E2BIG);
    cr_assert_eq(b.len, 10);
    cr_assert_str_eq(b.data, "helloworld");
    cr_assert_eq(ferry_buf_append(&b, "", 0), 0);
    cr_assert_eq(b.len, 10);
    s = ferry_buf_steal(&b, &len);
    cr_assert_str_eq(s, "helloworld");
    cr_assert_eq(len, 10);
    cr_assert_null(b.data);
    cr_assert_eq(b.len, 0);
    free(s);
    /* After steal the buffer is reusable with the same max. */
    cr_assert_eq(ferry_buf_append(&b, "0123456789A", 11), -E2BIG);
    cr_assert_null(b.data, "refused append allocates nothing");
    cr_assert_eq(ferry_buf_append(&b, "0123456789", 10), 0);
    ferry_buf_release(&b);
    cr_assert_null(b.data);
    cr_assert_eq(b.len, 0);
    ferry_buf_release(&b); /* twice is fine */
}

Test(buf, partial_append_refused)
{
    ferry_buf b;

    ferry_buf_init(&b, 8, false);
    cr_assert_eq(ferry_buf_append(&b, "abcdef", 6), 0);
    cr_assert_eq(ferry_buf_append(&b, "xyz", 3), -E2BIG);
    cr_assert_eq(b.len, 6);
    cr_assert_str_eq(b.data, "abcdef");
    cr_assert_eq(ferry_buf_append(&b, "xy", 2), 0);
    cr_assert_str_eq(b.data, "abcdefxy");
    /* Lengths that would overflow size_t arithmetic are refused, not wrapped. */
    cr_assert_eq(ferry_buf_append(&b, "x", SIZE_MAX), -E2BIG);
    cr_assert_eq(ferry_buf_append(&b, "x", SIZE_MAX - 3), -E2BIG);
    cr_assert_eq(b.len, 8);
    ferry_buf_release(&b);
}

/* Form pairs: '&' between them, all but unreserved bytes percent-encoded (UTF-8 too). */
Test(buf, append_form)
{
    ferry_buf b;
    size_t n;
    char *s;

    ferry_buf_init(&b, 1024, false);
    cr_assert_eq(ferry_buf_append_form(&b, "grant_type", "urn:ietf:params:oauth:x"), 0);
    cr_assert_eq(ferry_buf_append_form(&b, "scope", "a b+c/d=e&f~g.h_i-j\xc3\xa9"), 0);
    cr_assert_eq(ferry_buf_append_form(&b, "empty", ""), 0);
    s = ferry_buf_steal(&b, &n);
    cr_assert_str_eq(s, "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Ax&"
                        "scope=a%20b%2Bc%2Fd%3De%26f~g.h_i-j%C3%A9&empty=");
    free(s);
    ferry_buf_init(&b, 8, false);
    cr_assert_eq(ferry_buf_append_form(&b, "k", "\x01\x02\x03"), -E2BIG);
    ferry_buf_release(&b);
}

Test(buf, zero_max_and_steal_empty)
{
    ferry_buf b;
    size_t len = 99;

    ferry_buf_init(&b, 0, false);
    cr_assert_eq(ferry_buf_append(&b, "a", 1), -E2BIG);
    cr_assert_eq(ferry_buf_append(&b, "", 0), 0);
    cr_assert_str_eq(b.data, "", "empty append gives an empty, terminated string");
    ferry_buf_release(&b);
    ferry_buf_init(&b, 4, false);
    cr_assert_null(ferry_buf_steal(&b, &len));
    cr_assert_eq(len, 0);
    cr_assert_null(ferry_buf_steal(&b, NULL));
}

Test(buf, growth_and_secret)
{
    ferry_buf b;
    char chunk[100];

    for (int secret = 0; secret < 2; secret++) {
        ferry_buf_init(&b, 100000, secret);
        for (int i = 0; i < 1000; i++) {
            memset(chunk, 'a' + i % 26, sizeof(chunk));
            cr_assert_eq(ferry_buf_append(&b, chunk, sizeof(chunk)), 0);
        }
        cr_assert_eq(b.len, 100000);
        cr_assert_leq(b.alloc, 100001, "allocation never exceeds max + 1");
        cr_assert_eq(b.data[b.len], '\0');
        for (size_t i = 0; i < b.len; i++)
            cr_assert_eq(b.data[i], 'a' + (int)(i / 100) % 26);
        cr_assert_eq(ferry_buf_append(&b, "x", 1), -E2BIG);
        ferry_buf_release(&b);
    }
}

/* Clearing empties the content, keeps the allocation for reuse, wipes a secret, and leaves
 * the same limit: what fitted before fits again after a clear. */
Test(buf, clear_keeps_allocation)
{
    ferry_buf b;

    for (int secret = 0; secret < 2; secret++) {
        ferry_buf_init(&b, 8, secret);
        ferry_buf_clear(&b); /* nothing allocated yet: a no-op */
        cr_assert_null(b.data);
        cr_assert_eq(ferry_buf_append(&b, "12345678", 8), 0);
        char *before = b.data;
        size_t alloc = b.alloc;
        ferry_buf_clear(&b);
        cr_assert_eq(b.len, 0);
        cr_assert_eq(b.data, before, "the allocation is kept");
        cr_assert_eq(b.alloc, alloc);
        cr_assert_str_eq(b.data, "", "empty and terminated");
        if (secret)
            for (size_t i = 0; i < 8; i++)
                cr_assert_eq(b.data[i], 0, "byte %zu not wiped", i);
        cr_assert_eq(ferry_buf_append(&b, "abcdefgh", 8), 0, "the whole max is available again");
        cr_assert_eq(ferry_buf_append(&b, "x", 1), -E2BIG);
        cr_assert_str_eq(b.data, "abcdefgh");
        ferry_buf_release(&b);
    }
}

/* A buffer without a practical limit (max = SIZE_MAX) must still allocate room for what it
 * holds: max + 1 must not wrap to a zero-byte allocation. */
Test(buf, unlimited_max)
{
    ferry_buf b;

    ferry_buf_init(&b, SIZE_MAX, false);
    cr_assert_eq(ferry_buf_append(&b, "hello", 5), 0);
    cr_assert_geq(b.alloc, 6, "allocated %zu bytes for 6", b.alloc);
    cr_assert_str_eq(b.data, "hello");
    cr_assert_eq(ferry_buf_append_str(&b, " world"), 0);
    cr_assert_geq(b.alloc, 12);
    cr_assert_str_eq(b.data, "hello world");
    /* Lengths whose terminating NUL cannot be counted in size_t are refused unchanged. */
    cr_assert_lt(ferry_buf_append(&b, "x", SIZE_MAX - 11), 0);
    cr_assert_lt(ferry_buf_append(&b, "x", SIZE_MAX), 0);
    cr_assert_eq(b.len, 11);
    cr_assert_str_eq(b.data, "hello world");
    ferry_buf_release(&b);
}

/* ---- memory helpers ----------------------------------------------------------------------- */

Test(mem, memeq_ct)
{
    unsigned char a[64], b[64];

    for (size_t i = 0; i < sizeof(a); i++)
        a[i] = b[i] = (unsigned char)i;
    cr_assert(ferry_memeq_ct(a, b, sizeof(a)));
    cr_assert(ferry_memeq_ct(a, b, 0));
    cr_assert(ferry_memeq_ct(NULL, NULL, 0));
    for (size_t i = 0; i < sizeof(a); i++) {
        for (unsigned bit = 0; bit < 8; bit++) {
            b[i] ^= (unsigned char)(1u << bit);
            cr_assert_not(ferry_memeq_ct(a, b, sizeof(a)), "byte %zu bit %u", i, bit);
            /* A difference beyond n is not looked at. */
            if (i > 0)
                cr_assert(ferry_memeq_ct(a, b, i));
            b[i] ^= (unsigned char)(1u << bit);
        }
    }
    cr_assert(ferry_memeq_ct(a, b, sizeof(a)));
}

Test(mem, wipe)
{
    unsigned char s[32];
    char *str = strdup("secret value");

    memset(s, 0xa5, sizeof(s));
    ferry_wipe(s, 16);
    for (size_t i = 0; i < 16; i++)
        cr_assert_eq(s[i], 0);
    for (size_t i = 16; i < 32; i++)
        cr_assert_eq(s[i], 0xa5, "wipe stays within n");
    ferry_wipe(NULL, 10);
    ferry_wipe(s, 0);
    cr_assert_not_null(str);
    ferry_free_secret_str(str);
    ferry_free_secret_str(NULL);
}

Test(mem, parse_int64_valid)
{
    static const struct {
        const char *s;
        long long v;
    } ok[] = {
        {"0", 0},
        {"-0", 0},
        {"1", 1},
        {"-1", -1},
        {"007", 7},
        {"1700000000", 1700000000LL},
        {"9223372036854775807", LLONG_MAX},
        {"-9223372036854775808", LLONG_MIN},
        {"-9223372036854775807", -LLONG_MAX},
    };

    for (size_t i = 0; i < ARRAY_SIZE(ok); i++) {
        long long v = 42;
        cr_assert_eq(ferry_parse_int64(ok[i].s, &v), 0, "%s", ok[i].s);
        cr_assert_eq(v, ok[i].v, "%s", ok[i].s);
    }
}

Test(mem, parse_int64_invalid)
{
    static const char *const einval[] = {
        "", "+1", " 1", "1 ", "\t1", "1\n", "1a", "a1", "0x10", "1e3", "1.0", "1.", ".5",
        "-", "--1", "-+1", "+-1", "- 1", "1-", "1,000", "1_000", "\xef\xbc\x91", /* fullwidth 1 */
        "inf", "nan", "0b1",
    };
    static const char *const erange[] = {
        "9223372036854775808", "-9223372036854775809", "99999999999999999999999",
        "-99999999999999999999999",
    };

    for (size_t i = 0; i < ARRAY_SIZE(einval); i++) {
        long long v = 42;
        cr_assert_eq(ferry_parse_int64(einval[i], &v), -EINVAL, "'%s'", einval[i]);
        cr_assert_eq(v, 42, "ret written on failure");
    }
    for (size_t i = 0; i < ARRAY_SIZE(erange); i++) {
        long long v = 42;
        cr_assert_eq(ferry_parse_int64(erange[i], &v), -ERANGE, "'%s'", erange[i]);
        cr_assert_eq(v, 42);
    }
    {
        long long v = 42;
        cr_assert_eq(ferry_parse_int64(NULL, &v), -EINVAL);
        cr_assert_eq(v, 42);
    }
}

/* ---- ferry_strerror ----------------------------------------------------------------------- */

Test(error, strerror)
{
    const char *seen[FERRY_EMAX - FERRY_EBASE] = {0};

    for (int e = FERRY_EBASE + 1; e < FERRY_EMAX; e++) {
        const char *s = ferry_strerror(-e);
        cr_assert_not_null(s);
        cr_assert_gt(strlen(s), 0);
        cr_assert_null(strstr(s, "unknown"), "code %d has no name", e);
        cr_assert_eq(ferry_strerror(e), s, "sign does not matter");
        for (int j = FERRY_EBASE + 1; j < e; j++)
            cr_assert_str_neq(seen[j - FERRY_EBASE], s, "codes %d and %d share a name", j, e);
        seen[e - FERRY_EBASE] = s;
    }
    cr_assert_str_eq(ferry_strerror(0), "success");
    cr_assert_str_eq(ferry_strerror(-ENOMEM), strerror(ENOMEM));
    cr_assert_str_eq(ferry_strerror(-ENOENT), strerror(ENOENT));
    cr_assert_str_eq(ferry_strerror(ENOENT), strerror(ENOENT));
    cr_assert_not_null(ferry_strerror(-FERRY_EBASE));
    cr_assert_not_null(ferry_strerror(-FERRY_EMAX));
    cr_assert_not_null(strstr(ferry_strerror(-FERRY_EMAX), "unknown"));
    cr_assert_not_null(strstr(ferry_strerror(FERRY_EMAX + 1000), "unknown"));
    cr_assert_not_null(strstr(ferry_strerror(9999), "unknown"), "%s", ferry_strerror(9999));
    cr_assert_not_null(ferry_strerror(INT_MAX));
    cr_assert_not_null(ferry_strerror(-INT_MAX));
}

/* ---- fileio ------------------------------------------------------------------------------ */

Test(fileio, write_all_then_read_exact)
{
    char path[] = "/tmp/ferry-fileio-XXXXXX", big[70000], *back = NULL;
    int fd = mkstemp(path);

    cr_assert_geq(fd, 0);
    for (size_t i = 0; i < sizeof(big); i++)
        big[i] = (char)('a' + i % 26);
    cr_assert_eq(ferry_write_all(fd, big, sizeof(big)), 0);
    cr_assert_eq(lseek(fd, 0, SEEK_SET), 0);
    cr_assert_eq(ferry_read_exact(fd, sizeof(big), &back), 0);
    cr_assert_eq(memcmp(back, big, sizeof(big)), 0);
    cr_assert_eq(back[sizeof(big)], '\0', "NUL-terminated");
    free(back);
    back = NULL;
    /* a file shorter than announced (it shrank after fstat) is an error, nothing returned */
    cr_assert_eq(lseek(fd, 0, SEEK_SET), 0);
    cr_assert_eq(ferry_read_exact(fd, sizeof(big) + 1, &back), -EIO);
    cr_assert_null(back);
    cr_assert_eq(ferry_read_exact(fd, SIZE_MAX, &back), -EFBIG);
    cr_assert_eq(close(fd), 0);
    /* errors from the descriptor come back as -errno */
    cr_assert_eq(ferry_write_all(fd, "x", 1), -EBADF);
    cr_assert_eq(ferry_read_exact(fd, 1, &back), -EBADF);
    cr_assert_null(back);
    cr_assert_eq(unlink(path), 0);
}

Test(fileio, write_all_reports_a_full_disk)
{
    int fd = open("/dev/full", O_WRONLY | O_CLOEXEC);

    cr_assert_geq(fd, 0, "/dev/full: %s", strerror(errno));
    cr_assert_eq(ferry_write_all(fd, "abc", 3), -ENOSPC);
    close(fd);
}

/* ---- utf8 -------------------------------------------------------------------------------- */

Test(utf8, strict_decoding)
{
    static const struct {
        const char *s;
        size_t n;
        bool valid, text;
    } cases[] = {
        { "abc", 3, true, true },
        { "caf\xc3\xa9", 5, true, true },
        { "\xe2\x82\xac", 3, true, true },             /* U+20AC */
        { "\xf0\x9f\x98\x80", 4, true, true },         /* U+1F600 */
        { "\xf4\x8f\xbf\xbf", 4, true, true },         /* U+10FFFF */
        { "a\0b", 3, true, false },                    /* NUL: UTF-8, not text */
        { "a\nb", 3, true, false },
        { "\x7f", 1, true, false },                    /* DEL */
        { "\xc2\x85", 2, true, false },                /* NEL, a C1 control */
        { "\xc2\xa0", 2, true, true },                 /* NBSP: first after C1 */
        { "\xc0\xaf", 2, false, false },               /* overlong '/' */
        { "\xe0\x80\xaf", 3, false, false },           /* overlong */
        { "\xf0\x80\x80\xaf", 4, false, false },       /* overlong */
        { "\xed\xa0\x80", 3, false, false },           /* U+D800 surrogate */
        { "\xf4\x90\x80\x80", 4, false, false },       /* U+110000 */
        { "\xf5\x80\x80\x80", 4, false, false },
        { "\xe2\x82", 2, false, false },               /* truncated */
        { "\x80", 1, false, false },                   /* lone continuation */
        { "\xc3\x28", 2, false, false },               /* bad continuation */
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        cr_assert_eq(ferry_utf8_valid(cases[i].s, cases[i].n), cases[i].valid, "case %zu", i);
        cr_assert_eq(ferry_text_ok(cases[i].s, cases[i].n), cases[i].text, "case %zu", i);
    }
    {
        uint32_t cp = 0;

        cr_assert_eq(ferry_utf8_next((const unsigned char *)"\xf0\x9f\x98\x80", 4, &cp), 4);
        cr_assert_eq(cp, 0x1f600);
        cr_assert_eq(ferry_utf8_next((const unsigned char *)"\xf0\x9f\x98\x80", 3, &cp), 0);
        cr_assert_eq(ferry_utf8_next((const unsigned char *)"x", 0, &cp), 0);
        cr_assert(ferry_utf8_valid("", 0) && ferry_text_ok("", 0));
    }
}

Test(fileio, read_regular_file_limits)
{
    char dir[] = "/tmp/ferry-fileio-XXXXXX", path[64], fifo[64], *buf = NULL;
    size_t len = 0;
    FILE *f;

    cr_assert_not_null(mkdtemp(dir));
    (void)snprintf(path, sizeof(path), "%s/f", dir);
    (void)snprintf(fifo, sizeof(fifo), "%s/p", dir);
    f = fopen(path, "w");
    cr_assert_not_null(f);
    cr_assert_geq(fputs("hello", f), 0);
    cr_assert_eq(fclose(f), 0);
    cr_assert_eq(ferry_read_regular_file(path, 5, &buf, &len), 0);
    cr_assert_eq(len, 5);
    cr_assert_str_eq(buf, "hello");
    free(buf);
    buf = NULL;
    cr_assert_eq(ferry_read_regular_file(path, 4, &buf, &len), -EFBIG);
    cr_assert_null(buf);
    cr_assert_eq(ferry_read_regular_file(dir, 1 << 20, &buf, &len), -EINVAL, "a directory");
    cr_assert_eq(mkfifo(fifo, 0600), 0);
    cr_assert_eq(ferry_read_regular_file(fifo, 1 << 20, &buf, &len), -EINVAL,
                 "a FIFO is refused, not waited on");
    cr_assert_null(buf);
    cr_assert_eq(unlink(fifo), 0);
    cr_assert_eq(unlink(path), 0);
    cr_assert_eq(ferry_read_regular_file(path, 1 << 20, &buf, &len), -ENOENT);
    cr_assert_eq(rmdir(dir), 0);
}
