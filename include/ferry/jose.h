/* ferry/jose.h - strict compact JWS, JWK and JWKS on OpenSSL EVP.
 *
 * Keys are parsed once into EVP_PKEY and cached inside ferry_jwk objects; nothing here parses
 * a PEM or JWK per signature. All functions are thread-safe for distinct objects; ferry_jwk
 * and ferry_jwks are immutable after creation and reference counted, so they may be shared
 * between threads (ref/unref are atomic).
 *
 * Nothing in this module fetches anything: `jku`, `jwk`, `x5u` and `x5c` headers are refused.
 */
#ifndef FERRY_JOSE_H
#define FERRY_JOSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Hard limits. A compact token longer than FERRY_JWS_MAX_LEN is refused before any decoding. */
#define FERRY_JWS_MAX_LEN       (8 * 1024)
#define FERRY_JWS_MAX_HEADER    (2 * 1024)   /* decoded protected header bytes */
#define FERRY_JSON_MAX_DEPTH    16           /* nesting depth allowed in header and claims */
#define FERRY_JWKS_MAX_LEN      (256 * 1024) /* serialized key set */
#define FERRY_JWKS_MAX_KEYS     50
#define FERRY_RSA_MIN_BITS      2048
#define FERRY_RSA_MAX_BITS      8192
#define FERRY_KID_MAX_LEN       256
#define FERRY_THUMBPRINT_LEN    43           /* base64url(SHA-256) without padding */

typedef enum ferry_alg {
    FERRY_ALG_UNKNOWN = 0,
    FERRY_ALG_RS256,
    FERRY_ALG_RS384,
    FERRY_ALG_RS512,
    FERRY_ALG_PS256,
    FERRY_ALG_PS384,
    FERRY_ALG_PS512,
    FERRY_ALG_ES256,
    FERRY_ALG_ES384,
    FERRY_ALG_EDDSA,
    FERRY_ALG_MAX
} ferry_alg;

/* Exact, case-sensitive JWA name ("RS256", "EdDSA"). Returns FERRY_ALG_UNKNOWN for anything
 * else, including "none", "HS256", "rs256" and names with surrounding spaces. */
ferry_alg ferry_alg_from_name(const char *name);
/* Static JWA name of a supported alg, or NULL. */
const char *ferry_alg_name(ferry_alg alg);

/* ---- JWK ---------------------------------------------------------------------------- */

typedef struct ferry_jwk ferry_jwk;

/* Flags for ferry_jwk_from_json(). */
enum {
    FERRY_JWK_ALLOW_PRIVATE = 1 << 0, /* accept (and keep) private members; default: public only,
                                         private members are an error */
};

/* Import one JWK (RFC 7517) from a JSON object (borrowed). Supported: kty RSA (n, e; >= 2048
 * bits, e odd and > 1), EC (P-256, P-384; point validated), OKP (Ed25519). Refused: oct keys,
 * use other than "sig", key_ops without "verify"/"sign", alg naming an algorithm that does not
 * fit the key, kid that is not a string or too long, members of the wrong JSON type.
 * On success *ret_jwk is a new reference (free with ferry_jwk_unref). */
int ferry_jwk_from_json(const json_t *obj, unsigned flags, ferry_jwk **ret_jwk);

/* Import a PEM public or private key (SubjectPublicKeyInfo, PKCS#8 or traditional). The kid
 * is set to the RFC 7638 thumbprint. Same key policy as ferry_jwk_from_json. */
int ferry_jwk_from_pem(const void *pem, size_t len, ferry_jwk **ret_jwk);

/* Generate a fresh private key for alg (ES256: P-256, ES384: P-384, EdDSA: Ed25519,
 * RS*, PS*: RSA 3072). kid = thumbprint, alg set. New reference in *ret_jwk. */
int ferry_jwk_generate(ferry_alg alg, ferry_jwk **ret_jwk);

ferry_jwk *ferry_jwk_ref(ferry_jwk *jwk);
/* Drop a reference; the last one frees (private material is wiped). Accepts NULL. */
void ferry_jwk_unref(ferry_jwk *jwk);

/* Borrowed kid string or NULL when the key has none. Valid while the key lives. */
const char *ferry_jwk_kid(const ferry_jwk *jwk);
/* The key's declared "alg", or FERRY_ALG_UNKNOWN when it declared none. */
ferry_alg ferry_jwk_alg(const ferry_jwk *jwk);
bool ferry_jwk_is_private(const ferry_jwk *jwk);
/* True when alg may be used with this key: kty and curve fit, and if the key declares an alg
 * it is exactly this one. */
bool ferry_jwk_allows(const ferry_jwk *jwk, ferry_alg alg);
/* Borrowed EVP_PKEY (type-erased to keep OpenSSL out of this header). */
void *ferry_jwk_evp_pkey(const ferry_jwk *jwk);

/* RFC 7638 thumbprint (SHA-256, base64url) into ret (FERRY_THUMBPRINT_LEN + 1 bytes). */
int ferry_jwk_thumbprint(const ferry_jwk *jwk, char ret[FERRY_THUMBPRINT_LEN + 1]);

/* Public JWK as a new JSON object (kty, crv/n/e/x/y, kid, alg, use "sig"); never contains
 * private members. Caller owns *ret_json (json_decref). */
int ferry_jwk_to_public_json(const ferry_jwk *jwk, json_t **ret_json);

/* PEM (PKCS#8 private when the key is private, else SPKI public). Caller frees *ret_pem
 * (wiped with OPENSSL_clear_free semantics by ferry_jwk_pem_free). */
int ferry_jwk_to_pem(const ferry_jwk *jwk, char **ret_pem, size_t *ret_len);
void ferry_jwk_pem_free(char *pem, size_t len);

/* ---- JWKS --------------------------------------------------------------------------- */

typedef struct ferry_jwks ferry_jwks;

/* Import a JWK Set. `doc` must be an object whose "keys" is an array of at most
 * FERRY_JWKS_MAX_KEYS objects. Individual keys that are weak, unsupported or malformed are
 * skipped (counted in *ret_skipped when non-NULL); keys sharing a kid are all refused.
 * Fails with -FERRY_EMALFORMED when the document shape is wrong and -FERRY_ETOOBIG when it
 * holds too many keys. A set with zero usable keys is returned successfully (empty).
 * New reference in *ret_jwks. */
int ferry_jwks_from_json(const json_t *doc, ferry_jwks **ret_jwks, size_t *ret_skipped);
/* Same from serialized bytes (at most FERRY_JWKS_MAX_LEN, parsed with
 * JSON_REJECT_DUPLICATES). */
int ferry_jwks_from_buffer(const void *buf, size_t len, ferry_jwks **ret_jwks,
                           size_t *ret_skipped);
/* Build a set from keys (each borrowed; the set takes its own references). Duplicate kids
 * are an error here (-FERRY_EDUPLICATE). */
int ferry_jwks_from_keys(ferry_jwk *const *keys, size_t n, ferry_jwks **ret_jwks);

ferry_jwks *ferry_jwks_ref(ferry_jwks *jwks);
void ferry_jwks_unref(ferry_jwks *jwks); /* accepts NULL */

size_t ferry_jwks_count(const ferry_jwks *jwks);
/* Borrowed key at index i (< count), or NULL. */
ferry_jwk *ferry_jwks_get(const ferry_jwks *jwks, size_t i);
/* Borrowed key whose kid equals kid exactly, or NULL. */
ferry_jwk *ferry_jwks_find(const ferry_jwks *jwks, const char *kid);
/* {"keys":[...public JWKs...]} as a new JSON object. */
int ferry_jwks_to_public_json(const ferry_jwks *jwks, json_t **ret_json);

/* ---- signature layer ------------------------------------------------------------------ */

/* Verify sig over msg with key under alg. ES*: sig must be IEEE P1363 r||s of exactly
 * 2 * field size bytes (converted to DER internally); RS*, PS*: sig length must equal the
 * modulus length; PS*: salt length pinned to the hash length; EdDSA: 64 bytes.
 * Returns 0 when valid, -FERRY_EBADSIG when not, -FERRY_ENOKEY for a NULL key,
 * -FERRY_EKEYMISMATCH when the key does not allow alg. */
int ferry_jose_verify(ferry_alg alg, const ferry_jwk *key, const void *msg, size_t msg_len,
                      const void *sig, size_t sig_len);

/* Sign msg with a private key. ES* output is P1363 r||s. Caller frees *ret_sig (free()). */
int ferry_jose_sign(ferry_alg alg, const ferry_jwk *key, const void *msg, size_t msg_len,
                    unsigned char **ret_sig, size_t *ret_sig_len);

/* ECDSA signature conversions. field_len is 32 (P-256) or 48 (P-384).
 * der_to_p1363 refuses trailing bytes, non-minimal or negative integers, r or s of 0 or
 * wider than field_len. It does not know the curve order: r, s >= n is refused by
 * ferry_jose_verify, and a minting path that converts a KMS signature must verify it (or
 * check r, s < n) before publishing it. */
int ferry_ecdsa_der_to_p1363(const void *der, size_t der_len, size_t field_len,
                             unsigned char *ret_p1363 /* 2 * field_len bytes */);
int ferry_ecdsa_p1363_to_der(const void *p1363, size_t len, unsigned char **ret_der,
                             size_t *ret_der_len);

/* ---- compact JWS ---------------------------------------------------------------------- */

/* A parsed (not yet verified) compact JWS. Read-only for callers; free with ferry_jws_free. */
typedef struct ferry_jws {
    json_t *header;               /* protected header object (owned) */
    ferry_alg alg;                /* from header "alg" */
    const char *kid;              /* borrowed from header, or NULL */
    const char *typ;              /* borrowed from header, or NULL */
    unsigned char *payload;       /* decoded payload bytes (owned, NUL-terminated) */
    size_t payload_len;
    unsigned char *sig;           /* decoded signature (owned) */
    size_t sig_len;
    char *signing_input;          /* "b64(header).b64(payload)" (owned copy) */
    size_t signing_input_len;
} ferry_jws;

/* Parse a compact JWS strictly: len <= FERRY_JWS_MAX_LEN checked first; exactly three
 * segments, each strict unpadded base64url (no '=', '+', '/', whitespace, non-canonical
 * trailing bits, length % 4 == 1); header and signature non-empty; header an object parsed
 * with JSON_REJECT_DUPLICATES, depth-limited, no NUL; "alg" a supported exact name; no
 * "crit", "b64", "zip", "enc", "jku", "jwk", "x5u", "x5c" ("x5t"/"x5t#S256" must be strings and
 * are ignored: GitHub Actions tokens carry x5t); "cty" if present
 * must not be "JWT"; "kid" and "typ" strings when present. The payload may be any bytes.
 * Returns -FERRY_ETOOBIG (size, depth, kid length), -FERRY_EMALFORMED (shape, encoding, JSON,
 * member types), -FERRY_EUNSUPPORTED (alg) or -FERRY_EPOLICY (a forbidden header member or a
 * nested JWT) on refusal.
 * New object in *ret_jws. */
int ferry_jws_parse(const char *token, size_t len, ferry_jws **ret_jws);
void ferry_jws_free(ferry_jws *jws); /* accepts NULL */

/* Verify a parsed JWS with key (borrowed). The key must allow jws->alg. */
int ferry_jws_verify(const ferry_jws *jws, const ferry_jwk *key);

/* Produce a compact JWS: header {"alg", "kid" (when the key has one), "typ" (when non-NULL)},
 * payload bytes as given. Caller frees *ret_token (free()). */
int ferry_jws_sign(const ferry_jwk *key, ferry_alg alg, const char *typ, const void *payload,
                   size_t payload_len, char **ret_token);

#ifdef __cplusplus
}
#endif
#endif
