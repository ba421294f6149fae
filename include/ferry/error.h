/* ferry/error.h - error codes shared by every libferry module.
 *
 * Fallible functions return 0 on success and a negative -FERRY_E* value (or -errno for
 * system errors such as -ENOMEM, -ENOENT, -EACCES) on failure. ferry_strerror() names both.
 */
#ifndef FERRY_ERROR_H
#define FERRY_ERROR_H

#ifdef __cplusplus
extern "C" {
#endif

/* Values start above any errno so the two ranges never collide. */
enum {
    FERRY_EBASE = 10000,
    FERRY_EMALFORMED,   /* input is not well-formed (base64url, JSON, JWS shape, PEM) */
    FERRY_ETOOBIG,      /* input exceeds a size, count or depth limit */
    FERRY_EUNSUPPORTED, /* algorithm, key type, curve or feature not supported/allowed */
    FERRY_EWEAKKEY,     /* key refused: too small, bad parameters, point off curve */
    FERRY_EKEYMISMATCH, /* key type/curve does not match the algorithm */
    FERRY_ENOKEY,       /* no usable key (unknown kid, empty key set, NULL key) */
    FERRY_EBADSIG,      /* signature did not verify */
    FERRY_EDUPLICATE,   /* duplicate member, kid or entry */
    FERRY_EREFUSED,     /* token refused by claim or policy rules; see the verify result */
    FERRY_EFETCH,       /* remote fetch failed (network, TLS, HTTP status, timeout) */
    FERRY_EPOLICY,      /* URL or operation refused by the local security policy */
    FERRY_ECONFIG,      /* configuration is invalid */
    FERRY_ECRYPTO,      /* the crypto library failed unexpectedly */
    FERRY_EFULL,        /* a bounded cache or table is full */
    FERRY_EWOULDBLOCK,  /* asked not to wait, the call would have had to (I/O): nothing was
                           done; call again where waiting is allowed (not -EAGAIN, which
                           means "unavailable now, retry later") */
    FERRY_EMAX
};

/* Human-readable name of a (negative or positive) ferry error or errno value.
 * Returns a static string; never NULL. Thread-safe. */
const char *ferry_strerror(int err);

#ifdef __cplusplus
}
#endif
#endif
