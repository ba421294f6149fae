/* lib/jose.c - strict compact JWS, JWK and JWKS on OpenSSL 3 EVP.
 *
 * Design:
 * - Every key becomes an EVP_PKEY exactly once (JWK import, PEM import or generation) and then
 *   goes through one function, key_new(), whatever its source, so the key policy (types,
 *   curves, sizes, exponent, point validity, private/public consistency) cannot drift between
 *   import paths.
 * - Verification hashes the signing input with an EVP_MD fetched once per process and calls
 *   EVP_PKEY_verify() on the digest, with an EVP_PKEY_CTX initialised once per (key, alg,
 *   operation) and handed out through a tiny lock-free cache inside the key. That is what
 *   `openssl speed` measures, so a whole token verification stays close to the raw crypto cost.
 *   Ed25519 has no prehash mode and uses one-shot EVP_DigestVerify().
 * - RSA "n" and "e" with leading zero octets are tolerated on import (RFC 7518 §6.3.1.1 notes
 *   that some producers emit them; the integer is the same). Export and thumbprints always use
 *   the minimal encoding. EC coordinates and Ed25519 keys must have their exact length.
 * - Errors from OpenSSL are cleared from the thread's error queue before returning, so a
 *   refused token leaves no state behind for unrelated OpenSSL users (curl, ...).
 */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <strings.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/decoder.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include "basic/b64.h"
#include "basic/buf.h"
#include "basic/macro.h"
#include "basic/mem.h"
#include "ferry/error.h"
#include "ferry/jose.h"
#include "ferry/json.h"

/* ---- algorithms, hashes, curves ------------------------------------------------------ */

enum key_type { KEY_NONE = 0, KEY_RSA, KEY_P256, KEY_P384, KEY_ED25519 };
enum hash_id { HASH_SHA256 = 0, HASH_SHA384, HASH_SHA512, HASH_MAX, HASH_NONE = -1 };

static const struct alg_info {
    const char *name;
    enum key_type key; /* KEY_RSA for RS* and PS* */
    int hash;
    bool pss;
} algs[FERRY_ALG_MAX] = {
    [FERRY_ALG_RS256] = {"RS256", KEY_RSA, HASH_SHA256, false},
    [FERRY_ALG_RS384] = {"RS384", KEY_RSA, HASH_SHA384, false},
    [FERRY_ALG_RS512] = {"RS512", KEY_RSA, HASH_SHA512, false},
    [FERRY_ALG_PS256] = {"PS256", KEY_RSA, HASH_SHA256, true},
    [FERRY_ALG_PS384] = {"PS384", KEY_RSA, HASH_SHA384, true},
    [FERRY_ALG_PS512] = {"PS512", KEY_RSA, HASH_SHA512, true},
    [FERRY_ALG_ES256] = {"ES256", KEY_P256, HASH_SHA256, false},
    [FERRY_ALG_ES384] = {"ES384", KEY_P384, HASH_SHA384, false},
    [FERRY_ALG_EDDSA] = {"EdDSA", KEY_ED25519, HASH_NONE, false},
};

static const char *const hash_names[HASH_MAX] = {"SHA256", "SHA384", "SHA512"};
static EVP_MD *hash_mds[HASH_MAX];
static pthread_once_t hash_once = PTHREAD_ONCE_INIT;

/* Fetching an EVP_MD walks the provider store under a lock; do it once per process. The
 * objects stay alive until exit (reachable, not leaked). */
static void hash_init(void)
{
    for (size_t i = 0; i < HASH_MAX; i++)
        hash_mds[i] = EVP_MD_fetch(NULL, hash_names[i], NULL);
}

static const EVP_MD *hash_md(int h)
{
    if (h < 0 || h >= HASH_MAX)
        return NULL;
    (void)pthread_once(&hash_once, hash_init);
    return hash_mds[h];
}

/* Group orders, big-endian, for the r, s < n range check done before OpenSSL sees a
 * signature. */
static const unsigned char p256_order[32] = {
    0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51,
};
static const unsigned char p384_order[48] = {
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xc7, 0x63, 0x4d, 0x81, 0xf4, 0x37, 0x2d, 0xdf,
    0x58, 0x1a, 0x0d, 0xb2, 0x48, 0xb0, 0xa7, 0x7a, 0xec, 0xec, 0x19, 0x6a, 0xcc, 0xc5, 0x29, 0x73,
};
/* Ed25519 group order L = 2^252 + 27742317777372353535851937790883648493, little-endian. */
static const unsigned char ed25519_order_le[32] = {
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10,
};

static const struct curve_info {
    const char *jwk_name;
    const char *group;
    size_t field_len;
    const unsigned char *order;
} curves[] = {
    [KEY_P256] = {"P-256", "prime256v1", 32, p256_order},
    [KEY_P384] = {"P-384", "secp384r1", 48, p384_order},
    [KEY_ED25519] = {"Ed25519", NULL, 32, NULL},
};

#define PEM_MAX_LEN (64 * 1024)
#define RSA_MAX_BYTES (FERRY_RSA_MAX_BITS / 8)
#define RSA_E_MAX_BYTES 8
#define ECDSA_MAX_FIELD 66
#define DER_SIG_MAX (3 + 2 * (2 + ECDSA_MAX_FIELD + 1))
#define CTX_SLOTS 4

enum { OP_VERIFY = 0, OP_SIGN, OP_MAX };

struct ferry_jwk {
    atomic_uint n_ref;
    enum key_type type;
    bool priv;
    ferry_alg alg;  /* declared alg or FERRY_ALG_UNKNOWN */
    size_t sig_len; /* exact signature length: modulus bytes, 2 * field, 64 */
    char *kid;
    EVP_PKEY *pkey;
    char *pub_a; /* minimal base64url members: RSA n, EC x, OKP x */
    char *pub_b; /* RSA e, EC y, OKP NULL */
    /* Prepared EVP_PKEY_CTXs (init + md + padding done), see ctx_take(). */
    _Atomic(EVP_PKEY_CTX *) ctx_cache[OP_MAX][FERRY_ALG_MAX][CTX_SLOTS];
};

struct ferry_jwks {
    atomic_uint n_ref;
    size_t n;
    ferry_jwk *keys[];
};

/* The public ferry_jws plus the size of the single allocation that holds it and its
 * decoded segments, so ferry_jws_free() can wipe the token copy (a bearer credential). */
struct jws_block {
    ferry_jws pub;
    size_t alloc;
    unsigned char data[];
};

DEFINE_TRIVIAL_CLEANUP_FUNC(EVP_PKEY *, EVP_PKEY_free)
DEFINE_TRIVIAL_CLEANUP_FUNC(EVP_PKEY_CTX *, EVP_PKEY_CTX_free)
DEFINE_TRIVIAL_CLEANUP_FUNC(EVP_MD_CTX *, EVP_MD_CTX_free)
DEFINE_TRIVIAL_CLEANUP_FUNC(BIO *, BIO_free)
DEFINE_TRIVIAL_CLEANUP_FUNC(BIGNUM *, BN_clear_free)
DEFINE_TRIVIAL_CLEANUP_FUNC(OSSL_PARAM_BLD *, OSSL_PARAM_BLD_free)
DEFINE_TRIVIAL_CLEANUP_FUNC(OSSL_PARAM *, OSSL_PARAM_free)
DEFINE_TRIVIAL_CLEANUP_FUNC(ferry_jwk *, ferry_jwk_unref)
static inline void buf_releasep(ferry_buf *b)
{
    ferry_buf_release(b);
}

/* ---- alg names --------------------------------------------------------------------------- */

FERRY_EXPORT ferry_alg ferry_alg_from_name(const char *name)
{
    if (!name)
        return FERRY_ALG_UNKNOWN;
    for (int a = FERRY_ALG_UNKNOWN + 1; a < FERRY_ALG_MAX; a++)
        if (strcmp(name, algs[a].name) == 0)
            return (ferry_alg)a;
    return FERRY_ALG_UNKNOWN;
}

FERRY_EXPORT const char *ferry_alg_name(ferry_alg alg)
{
    if (alg <= FERRY_ALG_UNKNOWN || alg >= FERRY_ALG_MAX)
        return NULL;
    return algs[alg].name;
}

static bool alg_valid(ferry_alg alg)
{
    return alg > FERRY_ALG_UNKNOWN && alg < FERRY_ALG_MAX;
}

/* ---- ECDSA signature encodings --------------------------------------------------------- */

/* Big-endian a < b for equal lengths. Operates on public values only. */
static bool be_less(const unsigned char *a, const unsigned char *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (a[i] != b[i])
            return a[i] < b[i];
    return false;
}

static bool all_zero(const unsigned char *p, size_t n)
{
    unsigned char acc = 0;

    for (size_t i = 0; i < n; i++)
        acc |= p[i];
    return acc == 0;
}

/* Write one DER INTEGER holding the unsigned big-endian magnitude p[0..n) (not zero). */
static size_t der_put_int(unsigned char *out, const unsigned char *p, size_t n)
{
    size_t pad, o = 0;

    while (n > 1 && p[0] == 0)
        p++, n--;
    pad = (p[0] & 0x80) ? 1 : 0;
    out[o++] = 0x02;
    out[o++] = (unsigned char)(n + pad);
    if (pad)
        out[o++] = 0x00;
    memcpy(out + o, p, n);
    return o + n;
}

/* P1363 r||s to DER into out (DER_SIG_MAX bytes). r and s must each be non-zero. */
static int p1363_to_der_buf(const unsigned char *sig, size_t len, unsigned char *out,
                            size_t *ret_len)
{
    unsigned char body[DER_SIG_MAX];
    size_t half = len / 2, blen, o = 0;

    if (len == 0 || len % 2 || half > ECDSA_MAX_FIELD)
        return -FERRY_EMALFORMED;
    if (all_zero(sig, half) || all_zero(sig + half, half))
        return -FERRY_EMALFORMED;
    blen = der_put_int(body, sig, half);
    blen += der_put_int(body + blen, sig + half, half);
    out[o++] = 0x30;
    if (blen >= 0x80)
        out[o++] = 0x81;
    out[o++] = (unsigned char)blen;
    memcpy(out + o, body, blen);
    *ret_len = o + blen;
    return 0;
}

/* Parse one strict DER INTEGER into out, left-padded to field_len. */
static int der_get_int(const unsigned char **pp, const unsigned char *end, size_t field_len,
                       unsigned char *out)
{
    const unsigned char *p = *pp;
    size_t len;

    if (end - p < 2 || p[0] != 0x02)
        return -FERRY_EMALFORMED;
    len = p[1];
    p += 2;
    /* No long form: an INTEGER of at most 67 octets never needs it, so it is non-minimal. */
    if (len & 0x80 || len == 0 || len > (size_t)(end - p))
        return -FERRY_EMALFORMED;
    if (p[0] & 0x80)
        return -FERRY_EMALFORMED; /* negative */
    if (p[0] == 0 && len > 1) {
        if (!(p[1] & 0x80))
            return -FERRY_EMALFORMED; /* non-minimal leading zero */
        p++, len--;
    }
    if (len > field_len || all_zero(p, len))
        return -FERRY_EMALFORMED; /* too wide for the field, or zero */
    memset(out, 0, field_len - len);
    memcpy(out + field_len - len, p, len);
    *pp = p + len;
    return 0;
}

FERRY_EXPORT int ferry_ecdsa_der_to_p1363(const void *der, size_t der_len, size_t field_len,
                                          unsigned char *ret_p1363)
{
    const unsigned char *p = der, *end;
    unsigned char tmp[2 * ECDSA_MAX_FIELD];
    size_t body, hdr;
    int r;

    if (!der || !ret_p1363 || field_len == 0 || field_len > ECDSA_MAX_FIELD)
        return -EINVAL;
    if (der_len < 2 || p[0] != 0x30)
        return -FERRY_EMALFORMED;
    if (p[1] < 0x80) {
        body = p[1];
        hdr = 2;
    } else if (p[1] == 0x81 && der_len >= 3 && p[2] >= 0x80) {
        body = p[2];
        hdr = 3;
    } else {
        return -FERRY_EMALFORMED; /* non-minimal or oversized length */
    }
    if (hdr + body != der_len)
        return -FERRY_EMALFORMED; /* truncated or trailing bytes */
    p += hdr;
    end = p + body;
    r = der_get_int(&p, end, field_len, tmp);
    if (r < 0)
        return r;
    r = der_get_int(&p, end, field_len, tmp + field_len);
    if (r < 0)
        return r;
    if (p != end)
        return -FERRY_EMALFORMED;
    memcpy(ret_p1363, tmp, 2 * field_len);
    return 0;
}

FERRY_EXPORT int ferry_ecdsa_p1363_to_der(const void *p1363, size_t len, unsigned char **ret_der,
                                          size_t *ret_der_len)
{
    unsigned char der[DER_SIG_MAX], *out;
    size_t der_len;
    int r;

    if (!p1363 || !ret_der || !ret_der_len)
        return -EINVAL;
    r = p1363_to_der_buf(p1363, len, der, &der_len);
    if (r < 0)
        return r;
    out = malloc(der_len);
    if (!out)
        return -ENOMEM;
    memcpy(out, der, der_len);
    *ret_der = out;
    *ret_der_len = der_len;
    return 0;
}

/* ---- prepared EVP_PKEY_CTX cache -------------------------------------------------------- */

static EVP_PKEY_CTX *ctx_prepare(const ferry_jwk *key, int op, ferry_alg alg)
{
    const struct alg_info *ai = &algs[alg];
    const EVP_MD *md = hash_md(ai->hash);
    EVP_PKEY_CTX *ctx;

    if (!md)
        return NULL;
    ctx = EVP_PKEY_CTX_new_from_pkey(NULL, key->pkey, NULL);
    if (!ctx)
        return NULL;
    if ((op == OP_VERIFY ? EVP_PKEY_verify_init(ctx) : EVP_PKEY_sign_init(ctx)) <= 0)
        goto fail;
    if (EVP_PKEY_CTX_set_signature_md(ctx, md) <= 0)
        goto fail;
    if (ai->key == KEY_RSA) {
        if (EVP_PKEY_CTX_set_rsa_padding(ctx, ai->pss ? RSA_PKCS1_PSS_PADDING
                                                      : RSA_PKCS1_PADDING) <= 0)
            goto fail;
        /* Salt length pinned to the digest length both ways: OpenSSL's default for
         * verification (AUTO) would accept any salt length (Wycheproof mgf1_0). */
        if (ai->pss && (EVP_PKEY_CTX_set_rsa_pss_saltlen(ctx, RSA_PSS_SALTLEN_DIGEST) <= 0 ||
                        EVP_PKEY_CTX_set_rsa_mgf1_md(ctx, md) <= 0))
            goto fail;
    }
    return ctx;
fail:
    EVP_PKEY_CTX_free(ctx);
    return NULL;
}

/* Take a prepared context for (op, alg) out of the key's cache, or make a new one. The key is
 * logically const: the cache only holds interchangeable prepared objects. Each context is
 * owned by exactly one thread between ctx_take() and ctx_put(). */
static EVP_PKEY_CTX *ctx_take(const ferry_jwk *key, int op, ferry_alg alg)
{
    ferry_jwk *k = (ferry_jwk *)key;

    for (size_t i = 0; i < CTX_SLOTS; i++) {
        _Atomic(EVP_PKEY_CTX *) *slot = &k->ctx_cache[op][alg][i];
        if (atomic_load_explicit(slot, memory_order_relaxed)) {
            EVP_PKEY_CTX *c = atomic_exchange_explicit(slot, NULL, memory_order_acquire);
            if (c)
                return c;
        }
    }
    return ctx_prepare(key, op, alg);
}

/* Return a context after a successful operation; a context that saw a failure is dropped so
 * that no error state can leak into the next call. */
static void ctx_put(const ferry_jwk *key, int op, ferry_alg alg, EVP_PKEY_CTX *c)
{
    ferry_jwk *k = (ferry_jwk *)key;

    for (size_t i = 0; i < CTX_SLOTS; i++) {
        EVP_PKEY_CTX *expected = NULL;
        if (atomic_compare_exchange_strong_explicit(&k->ctx_cache[op][alg][i], &expected, c,
                                                    memory_order_release,
                                                    memory_order_relaxed))
            return;
    }
    EVP_PKEY_CTX_free(c);
}

/* ---- signature layer ------------------------------------------------------------------- */

static int digest(int h, const void *msg, size_t msg_len, unsigned char *out, size_t *ret_len)
{
    const EVP_MD *md = hash_md(h);
    unsigned int n = 0;

    if (!md)
        return -FERRY_ECRYPTO;
    if (EVP_Digest(msg ? msg : "", msg_len, out, &n, md, NULL) != 1)
        return -FERRY_ECRYPTO;
    *ret_len = n;
    return 0;
}

/* S < L, checked on the little-endian scalar of an Ed25519 signature (RFC 8032 §5.1.7). */
static bool ed25519_s_canonical(const unsigned char *s)
{
    for (size_t i = 32; i-- > 0;)
        if (s[i] != ed25519_order_le[i])
            return s[i] < ed25519_order_le[i];
    return false;
}

/* Classify an OpenSSL failure: -ENOMEM when the error queue shows an allocation failure, so
 * that running out of memory is never reported as a bad signature or a weak key; fallback
 * otherwise. The queue is left for the public entry points to clear. */
static int ossl_failure(int fallback)
{
    unsigned long e;
    int r = fallback;

    /* OpenSSL's error queue is a small ring: this loop is bounded. */
    while ((e = ERR_get_error()) != 0)
        if (ERR_GET_REASON(e) == ERR_R_MALLOC_FAILURE)
            r = -ENOMEM;
    return r;
}

/* The same for a key OpenSSL refused to build or check: a refusal for the key's own sake
 * always leaves a reason on the queue (point not on the curve, bad encoding, ...). An empty
 * queue, like an allocation failure, means OpenSSL itself failed, and the caller must not
 * mistake that for a weak key and silently drop the key from a set. */
static int ossl_key_failure(void)
{
    if (ERR_peek_error() == 0)
        return -FERRY_ECRYPTO;
    return ossl_failure(-FERRY_EWEAKKEY);
}

static int verify_eddsa(const ferry_jwk *key, const void *msg, size_t msg_len,
                        const unsigned char *sig)
{
    _cleanup_(EVP_MD_CTX_freep) EVP_MD_CTX *mctx = NULL;
    int r;

    if (!ed25519_s_canonical(sig + 32))
        return -FERRY_EBADSIG;
    mctx = EVP_MD_CTX_new();
    if (!mctx)
        return -ENOMEM;
    if (EVP_DigestVerifyInit_ex(mctx, NULL, NULL, NULL, NULL, key->pkey, NULL) != 1)
        return ossl_failure(-FERRY_ECRYPTO);
    r = EVP_DigestVerify(mctx, sig, 64, msg ? msg : (const void *)"", msg_len);
    if (r != 1)
        return ossl_failure(-FERRY_EBADSIG);
    return 0;
}

/* Verify without argument checks; errors left on the OpenSSL queue are cleared by callers. */
static int verify_raw(ferry_alg alg, const ferry_jwk *key, const void *msg, size_t msg_len,
                      const unsigned char *sig, size_t sig_len)
{
    const struct alg_info *ai = &algs[alg];
    unsigned char dgst[EVP_MAX_MD_SIZE], der[DER_SIG_MAX];
    const unsigned char *s = sig;
    size_t dlen, slen = sig_len;
    EVP_PKEY_CTX *ctx;
    int r;

    if (sig_len != key->sig_len)
        return -FERRY_EBADSIG;
    if (ai->key == KEY_ED25519)
        return verify_eddsa(key, msg, msg_len, sig);
    if (ai->key == KEY_P256 || ai->key == KEY_P384) {
        const struct curve_info *ci = &curves[ai->key];
        size_t f = ci->field_len;
        /* 0 < r, s < n before OpenSSL sees them (CVE-2022-21449 family). */
        if (all_zero(sig, f) || all_zero(sig + f, f) || !be_less(sig, ci->order, f) ||
            !be_less(sig + f, ci->order, f))
            return -FERRY_EBADSIG;
        r = p1363_to_der_buf(sig, sig_len, der, &slen);
        if (r < 0)
            return -FERRY_EBADSIG;
        s = der;
    }
    r = digest(ai->hash, msg, msg_len, dgst, &dlen);
    if (r < 0)
        return r;
    ctx = ctx_take(key, OP_VERIFY, alg);
    if (!ctx)
        return ossl_failure(-FERRY_ECRYPTO);
    r = EVP_PKEY_verify(ctx, s, slen, dgst, dlen);
    if (r != 1) {
        /* 0 or negative: the signature does not verify (OpenSSL also returns -1 for some
         * hostile inputs, e.g. an ECDSA key sharing x with the generator), unless the queue
         * shows that memory ran out. */
        EVP_PKEY_CTX_free(ctx);
        return ossl_failure(-FERRY_EBADSIG);
    }
    ctx_put(key, OP_VERIFY, alg, ctx);
    return 0;
}

/* Contract in jose.h. Order of refusals: NULL key (-FERRY_ENOKEY, nothing else looked at),
 * alg outside the enum, key/alg mismatch, then the signature. Thread-safe for a shared key:
 * the only state touched is the key's lock-free context cache. */
FERRY_EXPORT int ferry_jose_verify(ferry_alg alg, const ferry_jwk *key, const void *msg,
                                   size_t msg_len, const void *sig, size_t sig_len)
{
    int r;

    if (!key)
        return -FERRY_ENOKEY;
    if (!alg_valid(alg))
        return -FERRY_EUNSUPPORTED;
    if (!ferry_jwk_allows(key, alg))
        return -FERRY_EKEYMISMATCH;
    if ((!msg && msg_len) || !sig)
        return -EINVAL;
    r = verify_raw(alg, key, msg, msg_len, sig, sig_len);
    if (r < 0)
        ERR_clear_error();
    return r;
}

static int sign_raw(ferry_alg alg, const ferry_jwk *key, const void *msg, size_t msg_len,
                    unsigned char *out /* key->sig_len bytes */)
{
    const struct alg_info *ai = &algs[alg];
    unsigned char dgst[EVP_MAX_MD_SIZE], der[DER_SIG_MAX + 8];
    size_t dlen, olen;
    EVP_PKEY_CTX *ctx;
    int r;

    if (ai->key == KEY_ED25519) {
        _cleanup_(EVP_MD_CTX_freep) EVP_MD_CTX *mctx = EVP_MD_CTX_new();
        if (!mctx)
            return -ENOMEM;
        olen = 64;
        if (EVP_DigestSignInit_ex(mctx, NULL, NULL, NULL, NULL, key->pkey, NULL) != 1 ||
            EVP_DigestSign(mctx, out, &olen, msg ? msg : (const void *)"", msg_len) != 1 ||
            olen != 64)
            return ossl_failure(-FERRY_ECRYPTO);
        return 0;
    }
    r = digest(ai->hash, msg, msg_len, dgst, &dlen);
    if (r < 0)
        return r;
    ctx = ctx_take(key, OP_SIGN, alg);
    if (!ctx)
        return ossl_failure(-FERRY_ECRYPTO);
    if (ai->key == KEY_RSA) {
        olen = key->sig_len;
        r = EVP_PKEY_sign(ctx, out, &olen, dgst, dlen) == 1 && olen == key->sig_len
                ? 0 : ossl_failure(-FERRY_ECRYPTO);
    } else {
        olen = sizeof(der);
        r = EVP_PKEY_sign(ctx, der, &olen, dgst, dlen) == 1 ? 0 : ossl_failure(-FERRY_ECRYPTO);
        if (r == 0)
            r = ferry_ecdsa_der_to_p1363(der, olen, curves[ai->key].field_len, out) < 0
                    ? -FERRY_ECRYPTO : 0;
    }
    if (r < 0)
        EVP_PKEY_CTX_free(ctx);
    else
        ctx_put(key, OP_SIGN, alg, ctx);
    return r;
}

/* Contract in jose.h. A public-only key gives -FERRY_ENOKEY. RSA-PSS uses salt length =
 * digest length; ES* output is P1363 left-padded to the field size. */
FERRY_EXPORT int ferry_jose_sign(ferry_alg alg, const ferry_jwk *key, const void *msg,
                                 size_t msg_len, unsigned char **ret_sig, size_t *ret_sig_len)
{
    _cleanup_free_ unsigned char *sig = NULL;
    int r;

    if (!key)
        return -FERRY_ENOKEY;
    if (!alg_valid(alg))
        return -FERRY_EUNSUPPORTED;
    if (!ferry_jwk_allows(key, alg))
        return -FERRY_EKEYMISMATCH;
    if (!key->priv)
        return -FERRY_ENOKEY;
    if ((!msg && msg_len) || !ret_sig || !ret_sig_len)
        return -EINVAL;
    sig = malloc(key->sig_len);
    if (!sig)
        return -ENOMEM;
    r = sign_raw(alg, key, msg, msg_len, sig);
    if (r < 0) {
        ERR_clear_error();
        return r;
    }
    *ret_sig_len = key->sig_len;
    *ret_sig = TAKE_PTR(sig);
    return 0;
}

/* ---- JWK objects ------------------------------------------------------------------------- */

FERRY_EXPORT ferry_jwk *ferry_jwk_ref(ferry_jwk *jwk)
{
    if (jwk)
        atomic_fetch_add_explicit(&jwk->n_ref, 1, memory_order_relaxed);
    return jwk;
}

FERRY_EXPORT void ferry_jwk_unref(ferry_jwk *jwk)
{
    if (!jwk)
        return;
    if (atomic_fetch_sub_explicit(&jwk->n_ref, 1, memory_order_acq_rel) != 1)
        return;
    for (size_t op = 0; op < OP_MAX; op++)
        for (size_t a = 0; a < FERRY_ALG_MAX; a++)
            for (size_t i = 0; i < CTX_SLOTS; i++)
                EVP_PKEY_CTX_free(atomic_load(&jwk->ctx_cache[op][a][i]));
    EVP_PKEY_free(jwk->pkey); /* OpenSSL clears private components on free */
    free(jwk->kid);
    free(jwk->pub_a);
    free(jwk->pub_b);
    free(jwk);
}

FERRY_EXPORT const char *ferry_jwk_kid(const ferry_jwk *jwk)
{
    return jwk ? jwk->kid : NULL;
}

FERRY_EXPORT ferry_alg ferry_jwk_alg(const ferry_jwk *jwk)
{
    return jwk ? jwk->alg : FERRY_ALG_UNKNOWN;
}

FERRY_EXPORT bool ferry_jwk_is_private(const ferry_jwk *jwk)
{
    return jwk && jwk->priv;
}

FERRY_EXPORT bool ferry_jwk_allows(const ferry_jwk *jwk, ferry_alg alg)
{
    if (!jwk || !alg_valid(alg))
        return false;
    if (algs[alg].key != jwk->type)
        return false;
    return jwk->alg == FERRY_ALG_UNKNOWN || jwk->alg == alg;
}

FERRY_EXPORT void *ferry_jwk_evp_pkey(const ferry_jwk *jwk)
{
    return jwk ? jwk->pkey : NULL;
}

static char *bn_to_b64(const BIGNUM *bn, size_t pad_to)
{
    unsigned char buf[RSA_MAX_BYTES + 8];
    size_t n = pad_to ? pad_to : (size_t)BN_num_bytes(bn);

    if (n == 0 || n > sizeof(buf) || BN_bn2binpad(bn, buf, (int)n) != (int)n)
        return NULL;
    return ferry_b64url_encode_alloc(buf, n);
}

/* Fill the public member strings from the EVP_PKEY (minimal, canonical encodings). */
static int key_export_members(ferry_jwk *k)
{
    _cleanup_(BN_clear_freep) BIGNUM *a = NULL;
    _cleanup_(BN_clear_freep) BIGNUM *b = NULL;

    switch (k->type) {
    case KEY_RSA:
        if (EVP_PKEY_get_bn_param(k->pkey, OSSL_PKEY_PARAM_RSA_N, &a) != 1 ||
            EVP_PKEY_get_bn_param(k->pkey, OSSL_PKEY_PARAM_RSA_E, &b) != 1)
            return -FERRY_ECRYPTO;
        k->pub_a = bn_to_b64(a, 0);
        k->pub_b = bn_to_b64(b, 0);
        break;
    case KEY_P256:
    case KEY_P384:
        if (EVP_PKEY_get_bn_param(k->pkey, OSSL_PKEY_PARAM_EC_PUB_X, &a) != 1 ||
            EVP_PKEY_get_bn_param(k->pkey, OSSL_PKEY_PARAM_EC_PUB_Y, &b) != 1)
            return -FERRY_ECRYPTO;
        k->pub_a = bn_to_b64(a, curves[k->type].field_len);
        k->pub_b = bn_to_b64(b, curves[k->type].field_len);
        break;
    case KEY_ED25519: {
        unsigned char raw[32];
        size_t n = sizeof(raw);
        if (EVP_PKEY_get_raw_public_key(k->pkey, raw, &n) != 1 || n != 32)
            return -FERRY_ECRYPTO;
        k->pub_a = ferry_b64url_encode_alloc(raw, n);
        k->pub_b = NULL;
        return k->pub_a ? 0 : -ENOMEM;
    }
    default:
        return -FERRY_EUNSUPPORTED;
    }
    return k->pub_a && k->pub_b ? 0 : -ENOMEM;
}

/* Small primes for the ROCA fingerprint (CVE-2017-15361, Nemec et al., CCS 2017). Keys
 * from the vulnerable Infineon generator have primes congruent to a power of 65537 modulo
 * the primorial of these (and more) primes, so n mod p lies in the subgroup of (Z/pZ)*
 * generated by 65537 for every one of them; for an honest modulus that happens with
 * negligible probability. */
static const unsigned short roca_primes[] = {
    3,  5,  7,  11, 13, 17, 19,  23,  29,  31,  37,  41,  43,  47,  53,  59,  61,  67,  71,
    73, 79, 83, 89, 97, 101, 103, 107, 109, 113, 127, 131, 137, 139, 149, 151, 157, 163, 167,
};

/* -FERRY_EWEAKKEY when n has a small prime factor or carries the ROCA fingerprint. */
static int rsa_check_modulus(const BIGNUM *n)
{
    size_t in_subgroup = 0;

    for (size_t i = 0; i < ARRAY_SIZE(roca_primes); i++) {
        unsigned p = roca_primes[i], g = 65537 % p, x = 1;
        BN_ULONG r = BN_mod_word(n, p);

        if (r == (BN_ULONG)-1)
            return -FERRY_ECRYPTO;
        if (r == 0)
            return -FERRY_EWEAKKEY; /* divisible by a small prime */
        do {
            if (x == r) {
                in_subgroup++;
                break;
            }
            x = x * g % p;
        } while (x != 1);
    }
    return in_subgroup == ARRAY_SIZE(roca_primes) ? -FERRY_EWEAKKEY : 0;
}

/* Key policy common to every source. RSA: 2048..8192 bits, n and e odd, 3 <= e < 2^64, no
 * small factor, no ROCA fingerprint.
 * EC: full public-key validation (on curve, in the prime-order subgroup). */
static int key_check(EVP_PKEY *pkey, enum key_type type)
{
    switch (type) {
    case KEY_RSA: {
        _cleanup_(BN_clear_freep) BIGNUM *e = NULL;
        _cleanup_(BN_clear_freep) BIGNUM *n = NULL;
        int bits = EVP_PKEY_get_bits(pkey);
        if (bits < FERRY_RSA_MIN_BITS)
            return -FERRY_EWEAKKEY;
        if (bits > FERRY_RSA_MAX_BITS)
            return -FERRY_EUNSUPPORTED;
        if (EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_RSA_E, &e) != 1)
            return -FERRY_ECRYPTO;
        if (!BN_is_odd(e) || BN_num_bits(e) < 2 || BN_num_bits(e) > 64)
            return -FERRY_EWEAKKEY;
        if (EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_RSA_N, &n) != 1)
            return -FERRY_ECRYPTO;
        if (!BN_is_odd(n)) /* a product of two large primes is odd */
            return -FERRY_EWEAKKEY;
        return rsa_check_modulus(n);
    }
    case KEY_P256:
    case KEY_P384: {
        _cleanup_(EVP_PKEY_CTX_freep) EVP_PKEY_CTX *c = EVP_PKEY_CTX_new_from_pkey(NULL, pkey,
                                                                                  NULL);
        if (!c)
            return -FERRY_ECRYPTO;
        return EVP_PKEY_public_check(c) == 1 ? 0 : ossl_key_failure();
    }
    case KEY_ED25519:
        return 0;
    default:
        return -FERRY_EUNSUPPORTED;
    }
}

/* Imported private keys must be consistent: RSA p * q = n, d, CRT values and primality
 * (OpenSSL's RSA_check_key logic); EC d in range and d * G = Q; Ed25519 public = f(private).
 * Without this, a wrong CRT value would be silently repaired by OpenSSL's fault-attack
 * fallback and an EC key whose d does not match its x, y would sign unverifiable tokens. */
static int key_check_pair(EVP_PKEY *pkey)
{
    _cleanup_(EVP_PKEY_CTX_freep) EVP_PKEY_CTX *c = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);

    if (!c)
        return -FERRY_ECRYPTO;
    return EVP_PKEY_pairwise_check(c) == 1 ? 0 : ossl_key_failure();
}

/* Check a key and wrap it (stolen from *pkey on success) into a new ferry_jwk. kid may be
 * NULL; with thumbprint_kid the kid becomes the RFC 7638 thumbprint. check_pair: verify
 * private/public consistency (imported keys; freshly generated ones are consistent). */
static int key_new(EVP_PKEY **pkey, enum key_type type, bool priv, bool check_pair,
                   ferry_alg alg, const char *kid, bool thumbprint_kid, ferry_jwk **ret)
{
    _cleanup_(ferry_jwk_unrefp) ferry_jwk *k = NULL;
    int r;

    r = key_check(*pkey, type);
    if (r < 0)
        return r;
    if (priv && check_pair) {
        r = key_check_pair(*pkey);
        if (r < 0)
            return r;
    }
    k = calloc(1, sizeof(*k));
    if (!k)
        return -ENOMEM;
    atomic_init(&k->n_ref, 1);
    k->type = type;
    k->priv = priv;
    k->alg = alg;
    switch (type) {
    case KEY_RSA:
        k->sig_len = (size_t)EVP_PKEY_get_size(*pkey);
        break;
    case KEY_P256:
    case KEY_P384:
        k->sig_len = 2 * curves[type].field_len;
        break;
    default:
        k->sig_len = 64;
        break;
    }
    k->pkey = TAKE_PTR(*pkey);
    if (kid) {
        k->kid = strdup(kid);
        if (!k->kid)
            return -ENOMEM;
    }
    r = key_export_members(k);
    if (r < 0)
        return r;
    if (thumbprint_kid) {
        char tp[FERRY_THUMBPRINT_LEN + 1];
        r = ferry_jwk_thumbprint(k, tp);
        if (r < 0)
            return r;
        free(k->kid);
        k->kid = strdup(tp);
        if (!k->kid)
            return -ENOMEM;
    }
    *ret = TAKE_PTR(k);
    return 0;
}

/* Which of our key types an EVP_PKEY is (for PEM import and generation). */
static int key_classify(EVP_PKEY *pkey, enum key_type *ret_type, bool *ret_priv)
{
    _cleanup_(BN_clear_freep) BIGNUM *bn = NULL;

    if (EVP_PKEY_is_a(pkey, "RSA")) {
        *ret_type = KEY_RSA;
        *ret_priv = EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_RSA_D, &bn) == 1;
    } else if (EVP_PKEY_is_a(pkey, "EC")) {
        char group[64];
        size_t glen = 0;
        if (EVP_PKEY_get_group_name(pkey, group, sizeof(group), &glen) != 1)
            return -FERRY_EUNSUPPORTED; /* explicit curve parameters */
        if (strcmp(group, "prime256v1") == 0 || strcmp(group, "P-256") == 0)
            *ret_type = KEY_P256;
        else if (strcmp(group, "secp384r1") == 0 || strcmp(group, "P-384") == 0)
            *ret_type = KEY_P384;
        else
            return -FERRY_EUNSUPPORTED;
        *ret_priv = EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_PRIV_KEY, &bn) == 1;
    } else if (EVP_PKEY_is_a(pkey, "ED25519")) {
        size_t n = 0;
        *ret_type = KEY_ED25519;
        *ret_priv = EVP_PKEY_get_raw_private_key(pkey, NULL, &n) == 1 && n == 32;
    } else {
        return -FERRY_EUNSUPPORTED;
    }
    ERR_clear_error(); /* the failed private-member probes */
    return 0;
}

/* ---- JWK import -------------------------------------------------------------------------- */

/* A decoded base64url member; private ones are wiped before free. */
struct member {
    unsigned char *p;
    size_t len;
    bool secret;
};

static void member_release(struct member *m)
{
    if (m->p && m->secret)
        ferry_wipe(m->p, m->len);
    free(m->p);
    m->p = NULL;
    m->len = 0;
}

/* Decode string member `name` (at most max decoded bytes, else -FERRY_ETOOBIG before any
 * decoding). Missing: 0 with m->p NULL. */
static int member_get(const json_t *obj, const char *name, size_t max, bool secret,
                      struct member *m)
{
    const json_t *v = json_object_get(obj, name);
    const char *s;
    size_t n, len = 0;

    m->p = NULL;
    m->len = 0;
    m->secret = secret;
    if (!v)
        return 0;
    if (!json_is_string(v))
        return -FERRY_EMALFORMED;
    s = json_string_value(v);
    n = json_string_length(v);
    if (n == 0)
        return -FERRY_EMALFORMED;
    if (n > ferry_b64url_encoded_len(max))
        return -FERRY_ETOOBIG; /* callers say what "too long" means for their member */
    m->p = malloc(n / 4 * 3 + 3);
    if (!m->p)
        return -ENOMEM;
    if (ferry_b64url_decode(s, n, m->p, &len) < 0) {
        ferry_wipe(m->p, n / 4 * 3 + 3);
        free(m->p);
        m->p = NULL;
        return -FERRY_EMALFORMED;
    }
    m->len = len;
    return 0;
}

static int push_bn(OSSL_PARAM_BLD *bld, const char *key, const struct member *m,
                   BIGNUM **slot)
{
    *slot = m->secret ? BN_secure_new() : BN_new();
    if (!*slot || !BN_bin2bn(m->p, (int)m->len, *slot))
        return -ENOMEM;
    return OSSL_PARAM_BLD_push_BN(bld, key, *slot) == 1 ? 0 : -ENOMEM;
}

static int pkey_fromdata(const char *type, OSSL_PARAM_BLD *bld, bool priv, EVP_PKEY **ret)
{
    _cleanup_(OSSL_PARAM_freep) OSSL_PARAM *params = NULL;
    _cleanup_(EVP_PKEY_CTX_freep) EVP_PKEY_CTX *ctx = NULL;

    params = OSSL_PARAM_BLD_to_param(bld);
    if (!params)
        return -ENOMEM;
    ctx = EVP_PKEY_CTX_new_from_name(NULL, type, NULL);
    if (!ctx || EVP_PKEY_fromdata_init(ctx) != 1)
        return -FERRY_ECRYPTO;
    if (EVP_PKEY_fromdata(ctx, ret, priv ? EVP_PKEY_KEYPAIR : EVP_PKEY_PUBLIC_KEY, params) != 1)
        return ossl_key_failure();
    return 0;
}

static const char *const rsa_priv_names[] = {"d", "p", "q", "dp", "dq", "qi"};
static const char *const rsa_priv_params[] = {
    OSSL_PKEY_PARAM_RSA_D,         OSSL_PKEY_PARAM_RSA_FACTOR1,
    OSSL_PKEY_PARAM_RSA_FACTOR2,   OSSL_PKEY_PARAM_RSA_EXPONENT1,
    OSSL_PKEY_PARAM_RSA_EXPONENT2, OSSL_PKEY_PARAM_RSA_COEFFICIENT1,
};

static size_t strip_zeros(const struct member *m)
{
    size_t i = 0;

    while (i < m->len && m->p[i] == 0)
        i++;
    return i;
}

static int jwk_build_rsa(const json_t *obj, bool priv, EVP_PKEY **ret)
{
    _cleanup_(OSSL_PARAM_BLD_freep) OSSL_PARAM_BLD *bld = NULL;
    struct member n = {0}, e = {0}, pm[ARRAY_SIZE(rsa_priv_names)] = {{0}};
    BIGNUM *bns[2 + ARRAY_SIZE(rsa_priv_names)] = {0};
    size_t z;
    int r;

    r = member_get(obj, "n", RSA_MAX_BYTES + 1, false, &n);
    if (r < 0)
        goto out;
    r = member_get(obj, "e", RSA_E_MAX_BYTES, false, &e);
    if (r < 0)
        goto out;
    if (!n.p || !e.p) {
        r = -FERRY_EMALFORMED;
        goto out;
    }
    /* Size and exponent checks before any bignum work; key_check() repeats them on the
     * EVP_PKEY for every source. */
    z = strip_zeros(&n);
    if ((n.len - z) * 8 < FERRY_RSA_MIN_BITS) {
        r = -FERRY_EWEAKKEY;
        goto out;
    }
    if (!(e.p[e.len - 1] & 1) || (e.len - strip_zeros(&e) == 1 && e.p[e.len - 1] < 3)) {
        r = -FERRY_EWEAKKEY;
        goto out;
    }
    if (priv) {
        for (size_t i = 0; i < ARRAY_SIZE(rsa_priv_names); i++) {
            r = member_get(obj, rsa_priv_names[i], RSA_MAX_BYTES + 1, true, &pm[i]);
            if (r < 0)
                goto out;
            if (!pm[i].p) {
                r = -FERRY_EUNSUPPORTED; /* d without all CRT members is not supported */
                goto out;
            }
        }
    }
    bld = OSSL_PARAM_BLD_new();
    if (!bld) {
        r = -ENOMEM;
        goto out;
    }
    r = push_bn(bld, OSSL_PKEY_PARAM_RSA_N, &n, &bns[0]);
    if (r >= 0)
        r = push_bn(bld, OSSL_PKEY_PARAM_RSA_E, &e, &bns[1]);
    for (size_t i = 0; priv && r >= 0 && i < ARRAY_SIZE(rsa_priv_names); i++)
        r = push_bn(bld, rsa_priv_params[i], &pm[i], &bns[2 + i]);
    if (r >= 0)
        r = pkey_fromdata("RSA", bld, priv, ret);
out:
    if (r == -FERRY_ETOOBIG)
        r = -FERRY_EUNSUPPORTED; /* modulus above FERRY_RSA_MAX_BITS, e above 64 bits */
    member_release(&n);
    member_release(&e);
    for (size_t i = 0; i < ARRAY_SIZE(pm); i++)
        member_release(&pm[i]);
    for (size_t i = 0; i < ARRAY_SIZE(bns); i++)
        BN_clear_free(bns[i]);
    return r;
}

static int jwk_build_ec(const json_t *obj, enum key_type type, bool priv, EVP_PKEY **ret)
{
    const struct curve_info *ci = &curves[type];
    _cleanup_(OSSL_PARAM_BLD_freep) OSSL_PARAM_BLD *bld = NULL;
    struct member x = {0}, y = {0}, d = {0};
    unsigned char pub[1 + 2 * ECDSA_MAX_FIELD];
    BIGNUM *dbn = NULL;
    int r;

    r = member_get(obj, "x", ci->field_len, false, &x);
    if (r >= 0)
        r = member_get(obj, "y", ci->field_len, false, &y);
    if (r >= 0 && priv)
        r = member_get(obj, "d", ci->field_len, true, &d);
    if (r < 0)
        goto out;
    if (!x.p || !y.p || x.len != ci->field_len || y.len != ci->field_len ||
        (priv && (!d.p || d.len != ci->field_len))) {
        r = -FERRY_EMALFORMED;
        goto out;
    }
    pub[0] = 0x04;
    memcpy(pub + 1, x.p, ci->field_len);
    memcpy(pub + 1 + ci->field_len, y.p, ci->field_len);
    bld = OSSL_PARAM_BLD_new();
    if (!bld ||
        OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, ci->group, 0) != 1 ||
        OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, pub,
                                         1 + 2 * ci->field_len) != 1) {
        r = -ENOMEM;
        goto out;
    }
    if (priv) {
        r = push_bn(bld, OSSL_PKEY_PARAM_PRIV_KEY, &d, &dbn);
        if (r < 0)
            goto out;
    }
    r = pkey_fromdata("EC", bld, priv, ret);
out:
    if (r == -FERRY_ETOOBIG)
        r = -FERRY_EMALFORMED; /* a coordinate longer than the field */
    member_release(&x);
    member_release(&y);
    member_release(&d);
    BN_clear_free(dbn);
    return r;
}

static int jwk_build_okp(const json_t *obj, bool priv, EVP_PKEY **ret)
{
    _cleanup_(OSSL_PARAM_BLD_freep) OSSL_PARAM_BLD *bld = NULL;
    struct member x = {0}, d = {0};
    unsigned char derived[32];
    size_t dn = sizeof(derived);
    int r;

    r = member_get(obj, "x", 32, false, &x);
    if (r >= 0 && priv)
        r = member_get(obj, "d", 32, true, &d);
    if (r == -FERRY_ETOOBIG)
        r = -FERRY_EMALFORMED;
    if (r < 0)
        goto out;
    if (!x.p || x.len != 32 || (priv && (!d.p || d.len != 32))) {
        r = -FERRY_EMALFORMED;
        goto out;
    }
    /* With d, import only d and let OpenSSL derive the public key: signing with a d and a
     * mismatched x would leak d (the Ed25519 double-public-key oracle). d goes in directly,
     * not through an OSSL_PARAM_BLD: the builder copies octet strings into ordinary memory
     * that OSSL_PARAM_free() does not wipe. */
    if (priv) {
        *ret = EVP_PKEY_new_raw_private_key_ex(NULL, "ED25519", NULL, d.p, 32);
        r = *ret ? 0 : ossl_key_failure();
        if (r < 0)
            goto out;
    } else {
        bld = OSSL_PARAM_BLD_new();
        if (!bld ||
            OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, x.p, 32) != 1) {
            r = -ENOMEM;
            goto out;
        }
        r = pkey_fromdata("ED25519", bld, false, ret);
        goto out;
    }
    if (EVP_PKEY_get_raw_public_key(*ret, derived, &dn) != 1 || dn != 32 ||
        !ferry_memeq_ct(derived, x.p, 32)) {
        EVP_PKEY_free(*ret);
        *ret = NULL;
        r = -FERRY_EWEAKKEY;
    }
out:
    member_release(&x);
    member_release(&d);
    return r;
}

static const char *const private_members[] = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"};

/* Common members: kid, use, key_ops, alg. On success *ret_alg holds the declared alg. */
static int jwk_check_common(const json_t *obj, ferry_alg *ret_alg, const char **ret_kid)
{
    const json_t *kid = json_object_get(obj, "kid");
    const json_t *use = json_object_get(obj, "use");
    const json_t *ops = json_object_get(obj, "key_ops");
    const json_t *alg = json_object_get(obj, "alg");

    *ret_kid = NULL;
    *ret_alg = FERRY_ALG_UNKNOWN;
    if (kid) {
        /* An embedded NUL (possible in a json_t built by a caller) would truncate the kid
         * we store and let the key be found under another kid. */
        if (!json_is_string(kid) || json_string_length(kid) == 0 ||
            strlen(json_string_value(kid)) != json_string_length(kid))
            return -FERRY_EMALFORMED;
        if (json_string_length(kid) > FERRY_KID_MAX_LEN)
            return -FERRY_ETOOBIG;
        *ret_kid = json_string_value(kid);
    }
    if (use) {
        if (!json_is_string(use))
            return -FERRY_EMALFORMED;
        if (strcmp(json_string_value(use), "sig") != 0)
            return -FERRY_EUNSUPPORTED;
    }
    if (ops) {
        bool usable = false;
        size_t i, j;
        if (!json_is_array(ops))
            return -FERRY_EMALFORMED;
        for (i = 0; i < json_array_size(ops); i++) {
            const json_t *op = json_array_get(ops, i);
            if (!json_is_string(op))
                return -FERRY_EMALFORMED;
            for (j = 0; j < i; j++)
                if (json_equal(op, json_array_get(ops, j)))
                    return -FERRY_EMALFORMED; /* RFC 7517 §4.3: no duplicates */
            if (strcmp(json_string_value(op), "verify") == 0 ||
                strcmp(json_string_value(op), "sign") == 0)
                usable = true;
        }
        if (!usable)
            return -FERRY_EUNSUPPORTED;
    }
    if (alg) {
        if (!json_is_string(alg))
            return -FERRY_EMALFORMED;
        *ret_alg = ferry_alg_from_name(json_string_value(alg));
        if (*ret_alg == FERRY_ALG_UNKNOWN)
            return -FERRY_EUNSUPPORTED;
    }
    return 0;
}

/* Contract in jose.h. Errors: -FERRY_EMALFORMED (shape, JSON types, base64url, lengths),
 * -FERRY_EUNSUPPORTED (kty, crv, alg name, use, key_ops, private members without the flag,
 * multi-prime RSA), -FERRY_EKEYMISMATCH (alg declared for another key type),
 * -FERRY_EWEAKKEY (size, exponent, point, ROCA, inconsistent private key). */
FERRY_EXPORT int ferry_jwk_from_json(const json_t *obj, unsigned flags, ferry_jwk **ret_jwk)
{
    _cleanup_(EVP_PKEY_freep) EVP_PKEY *pkey = NULL;
    const json_t *kty, *crv;
    enum key_type type = KEY_NONE;
    const char *kid, *s;
    bool priv = false;
    ferry_alg alg;
    int r;

    if (!obj || !ret_jwk || (flags & ~(unsigned)FERRY_JWK_ALLOW_PRIVATE))
        return -EINVAL;
    if (!json_is_object(obj))
        return -FERRY_EMALFORMED;
    kty = json_object_get(obj, "kty");
    if (!json_is_string(kty))
        return -FERRY_EMALFORMED;
    r = jwk_check_common(obj, &alg, &kid);
    if (r < 0)
        goto out;
    s = json_string_value(kty);
    crv = json_object_get(obj, "crv");
    if (crv && !json_is_string(crv)) {
        r = -FERRY_EMALFORMED;
        goto out;
    }
    if (strcmp(s, "RSA") == 0) {
        type = KEY_RSA;
    } else if (strcmp(s, "EC") == 0 && crv) {
        if (strcmp(json_string_value(crv), "P-256") == 0)
            type = KEY_P256;
        else if (strcmp(json_string_value(crv), "P-384") == 0)
            type = KEY_P384;
    } else if (strcmp(s, "OKP") == 0 && crv) {
        if (strcmp(json_string_value(crv), "Ed25519") == 0)
            type = KEY_ED25519;
    }
    if (type == KEY_NONE) {
        /* oct (symmetric), unknown kty, P-521, secp256k1, X25519, Ed448, missing crv. */
        r = (strcmp(s, "EC") == 0 || strcmp(s, "OKP") == 0) && !crv ? -FERRY_EMALFORMED
                                                                   : -FERRY_EUNSUPPORTED;
        goto out;
    }
    if (alg != FERRY_ALG_UNKNOWN && algs[alg].key != type) {
        r = -FERRY_EKEYMISMATCH;
        goto out;
    }
    for (size_t i = 0; i < ARRAY_SIZE(private_members); i++)
        if (json_object_get(obj, private_members[i]))
            priv = true;
    if (priv && !(flags & FERRY_JWK_ALLOW_PRIVATE)) {
        r = -FERRY_EUNSUPPORTED;
        goto out;
    }
    if (priv && json_object_get(obj, "oth")) {
        r = -FERRY_EUNSUPPORTED; /* multi-prime RSA */
        goto out;
    }
    if (priv && type != KEY_RSA && !json_object_get(obj, "d")) {
        r = -FERRY_EMALFORMED; /* an RSA or oct private member on an EC/OKP key */
        goto out;
    }
    switch (type) {
    case KEY_RSA:
        r = jwk_build_rsa(obj, priv, &pkey);
        break;
    case KEY_P256:
    case KEY_P384:
        r = jwk_build_ec(obj, type, priv, &pkey);
        break;
    default:
        r = jwk_build_okp(obj, priv, &pkey);
        break;
    }
    if (r < 0)
        goto out;
    r = key_new(&pkey, type, priv, true, alg, kid, false, ret_jwk);
out:
    if (r < 0)
        ERR_clear_error();
    return r;
}

static int refuse_passphrase(char *pass, size_t pass_size, size_t *pass_len,
                             const OSSL_PARAM params[], void *arg)
{
    return 0;
}

/* Contract in jose.h. Input capped at 64 KiB; encrypted PEM is refused (no prompt). */
FERRY_EXPORT int ferry_jwk_from_pem(const void *pem, size_t len, ferry_jwk **ret_jwk)
{
    _cleanup_(EVP_PKEY_freep) EVP_PKEY *pkey = NULL;
    _cleanup_(BIO_freep) BIO *bio = NULL;
    OSSL_DECODER_CTX *dctx = NULL;
    enum key_type type;
    bool priv;
    int r;

    if (!pem || !ret_jwk)
        return -EINVAL;
    if (len > PEM_MAX_LEN)
        return -FERRY_ETOOBIG;
    bio = BIO_new_mem_buf(pem, (int)len);
    if (!bio)
        return -ENOMEM;
    dctx = OSSL_DECODER_CTX_new_for_pkey(&pkey, "PEM", NULL, NULL, 0, NULL, NULL);
    if (!dctx) {
        r = -FERRY_ECRYPTO;
        goto out;
    }
    /* Encrypted PEM is refused instead of prompting on a terminal. */
    if (OSSL_DECODER_CTX_set_passphrase_cb(dctx, refuse_passphrase, NULL) != 1) {
        r = -FERRY_ECRYPTO;
        goto out;
    }
    if (OSSL_DECODER_from_bio(dctx, bio) != 1 || !pkey) {
        r = -FERRY_EMALFORMED;
        goto out;
    }
    r = key_classify(pkey, &type, &priv);
    if (r < 0)
        goto out;
    r = key_new(&pkey, type, priv, true, FERRY_ALG_UNKNOWN, NULL, true, ret_jwk);
out:
    OSSL_DECODER_CTX_free(dctx);
    if (r < 0)
        ERR_clear_error();
    return r;
}

FERRY_EXPORT int ferry_jwk_generate(ferry_alg alg, ferry_jwk **ret_jwk)
{
    _cleanup_(EVP_PKEY_freep) EVP_PKEY *pkey = NULL;
    enum key_type type;
    int r;

    if (!ret_jwk)
        return -EINVAL;
    if (!alg_valid(alg))
        return -FERRY_EUNSUPPORTED;
    type = algs[alg].key;
    switch (type) {
    case KEY_RSA:
        pkey = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)3072);
        break;
    case KEY_P256:
        pkey = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
        break;
    case KEY_P384:
        pkey = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");
        break;
    default:
        pkey = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
        break;
    }
    if (!pkey) {
        r = -FERRY_ECRYPTO;
        goto out;
    }
    r = key_new(&pkey, type, true, false, alg, NULL, true, ret_jwk);
out:
    if (r < 0)
        ERR_clear_error();
    return r;
}

/* ---- thumbprints and export ---------------------------------------------------------- */

/* RFC 7638 §3.2: required members only, lexicographic order, no whitespace. The member
 * values are base64url or fixed names, so no JSON escaping is ever needed. */
static int thumbprint_input(const ferry_jwk *k, ferry_buf *b)
{
    int r;

    switch (k->type) {
    case KEY_RSA:
        r = ferry_buf_append_str(b, "{\"e\":\"");
        if (r >= 0)
            r = ferry_buf_append_str(b, k->pub_b);
        if (r >= 0)
            r = ferry_buf_append_str(b, "\",\"kty\":\"RSA\",\"n\":\"");
        if (r >= 0)
            r = ferry_buf_append_str(b, k->pub_a);
        if (r >= 0)
            r = ferry_buf_append_str(b, "\"}");
        return r;
    case KEY_P256:
    case KEY_P384:
        r = ferry_buf_append_str(b, "{\"crv\":\"");
        if (r >= 0)
            r = ferry_buf_append_str(b, curves[k->type].jwk_name);
        if (r >= 0)
            r = ferry_buf_append_str(b, "\",\"kty\":\"EC\",\"x\":\"");
        if (r >= 0)
            r = ferry_buf_append_str(b, k->pub_a);
        if (r >= 0)
            r = ferry_buf_append_str(b, "\",\"y\":\"");
        if (r >= 0)
            r = ferry_buf_append_str(b, k->pub_b);
        if (r >= 0)
            r = ferry_buf_append_str(b, "\"}");
        return r;
    case KEY_ED25519:
        r = ferry_buf_append_str(b, "{\"crv\":\"Ed25519\",\"kty\":\"OKP\",\"x\":\"");
        if (r >= 0)
            r = ferry_buf_append_str(b, k->pub_a);
        if (r >= 0)
            r = ferry_buf_append_str(b, "\"}");
        return r;
    default:
        return -FERRY_EUNSUPPORTED;
    }
}

FERRY_EXPORT int ferry_jwk_thumbprint(const ferry_jwk *jwk, char ret[FERRY_THUMBPRINT_LEN + 1])
{
    _cleanup_(buf_releasep) ferry_buf b;
    unsigned char h[EVP_MAX_MD_SIZE];
    size_t hlen;
    int r;

    ferry_buf_init(&b, 4096, false);
    if (!jwk || !ret)
        return -EINVAL;
    r = thumbprint_input(jwk, &b);
    if (r < 0)
        return r == -E2BIG ? -FERRY_ETOOBIG : r;
    r = digest(HASH_SHA256, b.data, b.len, h, &hlen);
    if (r < 0) {
        ERR_clear_error();
        return r;
    }
    ferry_b64url_encode(h, hlen, ret);
    return 0;
}

FERRY_EXPORT int ferry_jwk_to_public_json(const ferry_jwk *jwk, json_t **ret_json)
{
    _cleanup_(json_decrefp) json_t *o = NULL;
    int r = 0;

    if (!jwk || !ret_json)
        return -EINVAL;
    switch (jwk->type) {
    case KEY_RSA:
        o = json_pack("{s:s, s:s, s:s}", "kty", "RSA", "n", jwk->pub_a, "e", jwk->pub_b);
        break;
    case KEY_P256:
    case KEY_P384:
        o = json_pack("{s:s, s:s, s:s, s:s}", "kty", "EC", "crv", curves[jwk->type].jwk_name,
                      "x", jwk->pub_a, "y", jwk->pub_b);
        break;
    default:
        o = json_pack("{s:s, s:s, s:s}", "kty", "OKP", "crv", "Ed25519", "x", jwk->pub_a);
        break;
    }
    if (!o)
        return -ENOMEM;
    if (jwk->kid)
        r = json_object_set_new(o, "kid", json_string(jwk->kid));
    if (r == 0 && jwk->alg != FERRY_ALG_UNKNOWN)
        r = json_object_set_new(o, "alg", json_string(algs[jwk->alg].name));
    if (r == 0)
        r = json_object_set_new(o, "use", json_string("sig"));
    if (r != 0)
        return -ENOMEM;
    *ret_json = TAKE_PTR(o);
    return 0;
}

FERRY_EXPORT int ferry_jwk_to_pem(const ferry_jwk *jwk, char **ret_pem, size_t *ret_len)
{
    _cleanup_(BIO_freep) BIO *bio = NULL;
    char *data = NULL, *out;
    long n;
    int r = 0;

    if (!jwk || !ret_pem)
        return -EINVAL;
    /* secmem BIOs wipe their buffer when freed. */
    bio = BIO_new(jwk->priv ? BIO_s_secmem() : BIO_s_mem());
    if (!bio)
        return -ENOMEM;
    if (jwk->priv)
        r = PEM_write_bio_PrivateKey(bio, jwk->pkey, NULL, NULL, 0, NULL, NULL) == 1 ? 0 : -1;
    else
        r = PEM_write_bio_PUBKEY(bio, jwk->pkey) == 1 ? 0 : -1;
    if (r < 0) {
        ERR_clear_error();
        return -FERRY_ECRYPTO;
    }
    n = BIO_get_mem_data(bio, &data);
    if (n <= 0 || !data)
        return -FERRY_ECRYPTO;
    out = malloc((size_t)n + 1);
    if (!out)
        return -ENOMEM;
    memcpy(out, data, (size_t)n);
    out[n] = '\0';
    *ret_pem = out;
    if (ret_len)
        *ret_len = (size_t)n;
    return 0;
}

FERRY_EXPORT void ferry_jwk_pem_free(char *pem, size_t len)
{
    if (!pem)
        return;
    ferry_wipe(pem, len);
    free(pem);
}

/* ---- JWKS ---------------------------------------------------------------------------- */

static ferry_jwks *jwks_alloc(size_t n)
{
    ferry_jwks *s = calloc(1, sizeof(*s) + n * sizeof(s->keys[0]));

    if (s)
        atomic_init(&s->n_ref, 1);
    return s;
}

FERRY_EXPORT ferry_jwks *ferry_jwks_ref(ferry_jwks *jwks)
{
    if (jwks)
        atomic_fetch_add_explicit(&jwks->n_ref, 1, memory_order_relaxed);
    return jwks;
}

FERRY_EXPORT void ferry_jwks_unref(ferry_jwks *jwks)
{
    if (!jwks)
        return;
    if (atomic_fetch_sub_explicit(&jwks->n_ref, 1, memory_order_acq_rel) != 1)
        return;
    for (size_t i = 0; i < jwks->n; i++)
        ferry_jwk_unref(jwks->keys[i]);
    free(jwks);
}

static inline void jwks_unrefp(ferry_jwks **p)
{
    ferry_jwks_unref(*p);
}

/* True when another entry of keys (a JSON array) has the same string kid as entry i. */
static bool kid_shared(const json_t *keys, size_t i)
{
    const json_t *kid = json_object_get(json_array_get(keys, i), "kid");

    if (!json_is_string(kid))
        return false;
    for (size_t j = 0; j < json_array_size(keys); j++) {
        const json_t *other = json_object_get(json_array_get(keys, j), "kid");
        if (j != i && json_is_string(other) && json_equal(kid, other))
            return true;
    }
    return false;
}

/* Contract in jose.h. Every entry whose string kid appears more than once in the document
 * is refused, whether or not the other entries would have imported. -ENOMEM and
 * -FERRY_ECRYPTO abort the import (our failure, not the key's). */
FERRY_EXPORT int ferry_jwks_from_json(const json_t *doc, ferry_jwks **ret_jwks,
                                      size_t *ret_skipped)
{
    _cleanup_(jwks_unrefp) ferry_jwks *set = NULL;
    const json_t *keys;
    size_t n, skipped = 0;
    int r;

    if (!doc || !ret_jwks)
        return -EINVAL;
    if (!json_is_object(doc))
        return -FERRY_EMALFORMED;
    keys = json_object_get(doc, "keys");
    if (!json_is_array(keys))
        return -FERRY_EMALFORMED;
    n = json_array_size(keys);
    if (n > FERRY_JWKS_MAX_KEYS)
        return -FERRY_ETOOBIG;
    set = jwks_alloc(n);
    if (!set)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        ferry_jwk *k = NULL;
        /* A kid shared by several entries is ambiguous: refuse every one of them, so that
         * nobody can shadow a real key by adding a second one with its kid. */
        if (kid_shared(keys, i)) {
            skipped++;
            continue;
        }
        r = ferry_jwk_from_json(json_array_get(keys, i), 0, &k);
        if (r == -ENOMEM || r == -FERRY_ECRYPTO)
            return r; /* our failure, not the key's: let the caller keep its old set */
        if (r < 0) {
            skipped++;
            continue;
        }
        set->keys[set->n++] = k;
    }
    if (ret_skipped)
        *ret_skipped = skipped;
    *ret_jwks = TAKE_PTR(set);
    return 0;
}

FERRY_EXPORT int ferry_jwks_from_buffer(const void *buf, size_t len, ferry_jwks **ret_jwks,
                                        size_t *ret_skipped)
{
    _cleanup_(json_decrefp) json_t *doc = NULL;
    int r;

    if ((!buf && len) || !ret_jwks)
        return -EINVAL;
    if (len > FERRY_JWKS_MAX_LEN)
        return -FERRY_ETOOBIG;
    r = ferry_json_parse(buf, len, FERRY_JWKS_MAX_LEN, FERRY_JSON_MAX_DEPTH, &doc, NULL, 0);
    if (r < 0)
        return r == -ENOMEM || r == -FERRY_ETOOBIG ? r : -FERRY_EMALFORMED;
    return ferry_jwks_from_json(doc, ret_jwks, ret_skipped);
}

FERRY_EXPORT int ferry_jwks_from_keys(ferry_jwk *const *keys, size_t n, ferry_jwks **ret_jwks)
{
    ferry_jwks *set;

    if ((!keys && n) || !ret_jwks)
        return -EINVAL;
    if (n > FERRY_JWKS_MAX_KEYS)
        return -FERRY_ETOOBIG;
    for (size_t i = 0; i < n; i++) {
        if (!keys[i])
            return -EINVAL;
        for (size_t j = 0; j < i; j++)
            if (keys[i]->kid && keys[j]->kid && strcmp(keys[i]->kid, keys[j]->kid) == 0)
                return -FERRY_EDUPLICATE;
    }
    set = jwks_alloc(n);
    if (!set)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++)
        set->keys[i] = ferry_jwk_ref(keys[i]);
    set->n = n;
    *ret_jwks = set;
    return 0;
}

FERRY_EXPORT size_t ferry_jwks_count(const ferry_jwks *jwks)
{
    return jwks ? jwks->n : 0;
}

FERRY_EXPORT ferry_jwk *ferry_jwks_get(const ferry_jwks *jwks, size_t i)
{
    return jwks && i < jwks->n ? jwks->keys[i] : NULL;
}

FERRY_EXPORT ferry_jwk *ferry_jwks_find(const ferry_jwks *jwks, const char *kid)
{
    if (!jwks || !kid)
        return NULL;
    for (size_t i = 0; i < jwks->n; i++)
        if (jwks->keys[i]->kid && strcmp(jwks->keys[i]->kid, kid) == 0)
            return jwks->keys[i];
    return NULL;
}

FERRY_EXPORT int ferry_jwks_to_public_json(const ferry_jwks *jwks, json_t **ret_json)
{
    _cleanup_(json_decrefp) json_t *arr = NULL;
    json_t *doc;
    int r;

    if (!jwks || !ret_json)
        return -EINVAL;
    arr = json_array();
    if (!arr)
        return -ENOMEM;
    for (size_t i = 0; i < jwks->n; i++) {
        json_t *k = NULL;
        r = ferry_jwk_to_public_json(jwks->keys[i], &k);
        if (r < 0)
            return r;
        if (json_array_append_new(arr, k) != 0)
            return -ENOMEM;
    }
    doc = json_pack("{s:O}", "keys", arr);
    if (!doc)
        return -ENOMEM;
    *ret_json = doc;
    return 0;
}

/* ---- compact JWS --------------------------------------------------------------------- */

/* Members that change how the token must be processed, or that name a key (RFC 8725 §3.10):
 * a token carrying any of them is refused. x5t and x5t#S256 only carry a certificate
 * thumbprint (GitHub Actions sends x5t); they are accepted as strings and never used. */
static const char *const forbidden_headers[] = {
    "crit", "b64", "zip", "enc", "jku", "jwk", "x5u", "x5c",
};
static const char *const ignored_string_headers[] = { "x5t", "x5t#S256" };

static int header_check(ferry_jws *jws)
{
    json_t *h = jws->header, *v;

    if (!json_is_object(h))
        return -FERRY_EMALFORMED;
    v = json_object_get(h, "alg");
    if (!json_is_string(v))
        return -FERRY_EMALFORMED;
    jws->alg = ferry_alg_from_name(json_string_value(v));
    if (jws->alg == FERRY_ALG_UNKNOWN)
        return -FERRY_EUNSUPPORTED;
    for (size_t i = 0; i < ARRAY_SIZE(forbidden_headers); i++)
        if (json_object_get(h, forbidden_headers[i]))
            return -FERRY_EPOLICY;
    for (size_t i = 0; i < ARRAY_SIZE(ignored_string_headers); i++) {
        v = json_object_get(h, ignored_string_headers[i]);
        if (v && !json_is_string(v))
            return -FERRY_EMALFORMED;
    }
    v = json_object_get(h, "cty");
    if (v) {
        if (!json_is_string(v))
            return -FERRY_EMALFORMED;
        /* A nested JWT (RFC 7519 §5.2; "application/" may be omitted). */
        if (strcasecmp(json_string_value(v), "JWT") == 0 ||
            strcasecmp(json_string_value(v), "application/jwt") == 0)
            return -FERRY_EPOLICY;
    }
    v = json_object_get(h, "kid");
    if (v) {
        if (!json_is_string(v) || json_string_length(v) == 0)
            return -FERRY_EMALFORMED;
        if (json_string_length(v) > FERRY_KID_MAX_LEN)
            return -FERRY_ETOOBIG;
        jws->kid = json_string_value(v);
    }
    v = json_object_get(h, "typ");
    if (v) {
        if (!json_is_string(v))
            return -FERRY_EMALFORMED;
        jws->typ = json_string_value(v);
    }
    return 0;
}

FERRY_EXPORT void ferry_jws_free(ferry_jws *jws)
{
    struct jws_block *b = (struct jws_block *)jws;

    if (!b)
        return;
    json_decref(b->pub.header);
    ferry_wipe(b->data, b->alloc);
    free(b);
}

static inline void jws_freep(ferry_jws **p)
{
    ferry_jws_free(*p);
}

/* Contract in jose.h. Checks run cheapest first: length, dots, segment sizes, base64url,
 * then JSON. One allocation holds the signing input copy, payload and signature; the header
 * is decoded on the stack (at most FERRY_JWS_MAX_HEADER bytes). */
FERRY_EXPORT int ferry_jws_parse(const char *token, size_t len, ferry_jws **ret_jws)
{
    _cleanup_(jws_freep) ferry_jws *jws = NULL;
    unsigned char hdr[FERRY_JWS_MAX_HEADER + 3];
    const char *d1, *d2, *end;
    size_t hlen, plen, slen, hdr_len, alloc;
    struct jws_block *b;
    unsigned char *p;
    int r;

    if (!token || !ret_jws)
        return -EINVAL;
    if (len > FERRY_JWS_MAX_LEN)
        return -FERRY_ETOOBIG;
    if (len == 0)
        return -FERRY_EMALFORMED;
    end = token + len;
    d1 = memchr(token, '.', len);
    if (!d1)
        return -FERRY_EMALFORMED;
    d2 = memchr(d1 + 1, '.', (size_t)(end - d1 - 1));
    if (!d2 || memchr(d2 + 1, '.', (size_t)(end - d2 - 1)))
        return -FERRY_EMALFORMED;
    hlen = (size_t)(d1 - token);
    plen = (size_t)(d2 - d1 - 1);
    slen = (size_t)(end - d2 - 1);
    if (hlen == 0 || slen == 0)
        return -FERRY_EMALFORMED;
    if (hlen > ferry_b64url_encoded_len(FERRY_JWS_MAX_HEADER))
        return -FERRY_ETOOBIG;
    if (ferry_b64url_decode(token, hlen, hdr, &hdr_len) < 0)
        return -FERRY_EMALFORMED;

    /* One allocation for the signing input copy, the payload and the signature. */
    alloc = (hlen + 1 + plen + 1) + (plen / 4 * 3 + 3) + (slen / 4 * 3 + 3);
    b = malloc(sizeof(*b) + alloc);
    if (!b)
        return -ENOMEM;
    memset(&b->pub, 0, sizeof(b->pub));
    b->alloc = alloc;
    jws = &b->pub;
    p = b->data;
    jws->signing_input = (char *)p;
    jws->signing_input_len = hlen + 1 + plen;
    memcpy(p, token, jws->signing_input_len);
    p[jws->signing_input_len] = '\0';
    p += jws->signing_input_len + 1;
    jws->payload = p;
    if (ferry_b64url_decode(d1 + 1, plen, jws->payload, &jws->payload_len) < 0)
        return -FERRY_EMALFORMED;
    jws->payload[jws->payload_len] = '\0';
    p += plen / 4 * 3 + 3;
    jws->sig = p;
    if (ferry_b64url_decode(d2 + 1, slen, jws->sig, &jws->sig_len) < 0)
        return -FERRY_EMALFORMED;

    r = ferry_json_parse(hdr, hdr_len, FERRY_JWS_MAX_HEADER, FERRY_JSON_MAX_DEPTH, &jws->header,
                         NULL, 0);
    if (r < 0)
        return r == -ENOMEM || r == -FERRY_ETOOBIG ? r : -FERRY_EMALFORMED;
    r = header_check(jws);
    if (r < 0)
        return r;
    *ret_jws = TAKE_PTR(jws);
    return 0;
}

FERRY_EXPORT int ferry_jws_verify(const ferry_jws *jws, const ferry_jwk *key)
{
    if (!jws)
        return -EINVAL;
    return ferry_jose_verify(jws->alg, key, jws->signing_input, jws->signing_input_len,
                             jws->sig, jws->sig_len);
}

/* Contract in jose.h. Refuses (-FERRY_ETOOBIG) to produce a token that ferry_jws_parse
 * would refuse for its size. */
FERRY_EXPORT int ferry_jws_sign(const ferry_jwk *key, ferry_alg alg, const char *typ,
                                const void *payload, size_t payload_len, char **ret_token)
{
    _cleanup_(json_decrefp) json_t *h = NULL;
    _cleanup_free_ char *hjson = NULL;
    _cleanup_free_ char *tok = NULL;
    unsigned char *sig = NULL;
    size_t hjlen, elen, plen_enc, slen_enc, sig_len = 0, o;
    int r;

    if (!key)
        return -FERRY_ENOKEY;
    if ((!payload && payload_len) || !ret_token)
        return -EINVAL;
    if (!alg_valid(alg))
        return -FERRY_EUNSUPPORTED;
    if (!ferry_jwk_allows(key, alg))
        return -FERRY_EKEYMISMATCH;
    if (!key->priv)
        return -FERRY_ENOKEY;
    if (payload_len > FERRY_JWS_MAX_LEN)
        return -FERRY_ETOOBIG;
    h = json_pack("{s:s}", "alg", algs[alg].name);
    if (!h)
        return -ENOMEM;
    if (key->kid && json_object_set_new(h, "kid", json_string(key->kid)) != 0)
        return -ENOMEM;
    if (typ) {
        json_t *t = json_string(typ);

        if (!t) {
            /* json_string refuses invalid UTF-8 and fails without memory: tell them apart */
            bool have_memory;

            t = json_stringn_nocheck(typ, strlen(typ));
            have_memory = t != NULL;
            json_decref(t);
            return have_memory ? -EINVAL : -ENOMEM;
        }
        if (json_object_set_new(h, "typ", t) != 0)
            return -ENOMEM;
    }
    hjson = json_dumps(h, JSON_COMPACT);
    if (!hjson)
        return -ENOMEM;
    {
        /* jansson 2.14 can lose a member name when an allocation fails inside json_dumps and
         * still return a string ('{"alg":"ES256",:"kid..."}'). Never sign a header that does
         * not read back as the one built; the only known cause is memory. */
        json_t *back = NULL;
        bool same = ferry_json_parse(hjson, strlen(hjson), FERRY_JWS_MAX_HEADER + 1, 2, &back,
                                     NULL, 0) == 0 &&
                    json_equal(back, h);

        json_decref(back);
        if (!same)
            return -ENOMEM;
    }
    hjlen = strlen(hjson);
    elen = ferry_b64url_encoded_len(hjlen);
    plen_enc = ferry_b64url_encoded_len(payload_len);
    slen_enc = ferry_b64url_encoded_len(key->sig_len);
    /* Never produce what our own strict parser would refuse. */
    if (elen + 1 + plen_enc + 1 + slen_enc > FERRY_JWS_MAX_LEN ||
        hjlen > FERRY_JWS_MAX_HEADER)
        return -FERRY_ETOOBIG;
    tok = malloc(elen + 1 + plen_enc + 1 + slen_enc + 1);
    if (!tok)
        return -ENOMEM;
    o = ferry_b64url_encode(hjson, hjlen, tok);
    tok[o++] = '.';
    o += ferry_b64url_encode(payload ? payload : "", payload_len, tok + o);
    r = ferry_jose_sign(alg, key, tok, o, &sig, &sig_len);
    if (r < 0)
        return r;
    tok[o++] = '.';
    ferry_b64url_encode(sig, sig_len, tok + o);
    free(sig);
    *ret_token = TAKE_PTR(tok);
    return 0;
}
