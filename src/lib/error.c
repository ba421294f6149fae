/* lib/error.c - names for ferry error codes. */
#include "config.h"

#include <limits.h>
#include <string.h>

#include "basic/macro.h"
#include "ferry/error.h"

static const char *const names[] = {
    [FERRY_EMALFORMED - FERRY_EBASE] = "malformed input",
    [FERRY_ETOOBIG - FERRY_EBASE] = "input exceeds a limit",
    [FERRY_EUNSUPPORTED - FERRY_EBASE] = "unsupported or disallowed algorithm or feature",
    [FERRY_EWEAKKEY - FERRY_EBASE] = "key refused (weak or invalid parameters)",
    [FERRY_EKEYMISMATCH - FERRY_EBASE] = "key does not match the algorithm",
    [FERRY_ENOKEY - FERRY_EBASE] = "no usable key",
    [FERRY_EBADSIG - FERRY_EBASE] = "signature verification failed",
    [FERRY_EDUPLICATE - FERRY_EBASE] = "duplicate entry",
    [FERRY_EREFUSED - FERRY_EBASE] = "refused",
    [FERRY_EFETCH - FERRY_EBASE] = "remote fetch failed",
    [FERRY_EPOLICY - FERRY_EBASE] = "refused by security policy",
    [FERRY_ECONFIG - FERRY_EBASE] = "invalid configuration",
    [FERRY_ECRYPTO - FERRY_EBASE] = "cryptographic library failure",
    [FERRY_EFULL - FERRY_EBASE] = "table full",
    [FERRY_EWOULDBLOCK - FERRY_EBASE] = "would wait",
};

FERRY_EXPORT const char *ferry_strerror(int err)
{
    if (err == INT_MIN)
        return "unknown error";
    if (err < 0)
        err = -err;
    if (err > FERRY_EBASE && err < FERRY_EMAX) {
        const char *s = names[err - FERRY_EBASE];
        return s ? s : "unknown ferry error";
    }
    if (err == 0)
        return "success";
    if (err < FERRY_EBASE)
        return strerrordesc_np(err) ? strerrordesc_np(err) : "unknown error";
    return "unknown error";
}
