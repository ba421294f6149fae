/* ferry/totp.h - TOTP step-up (RFC 6238 over RFC 4226 HOTP, codes made by liboath):
 * enrolment, one-time verification with a persisted replay counter, lock-out with back-off.
 *
 * One account = one file <state_dir>/totp/<account>.json (mode 0600, directory 0700), holding
 * the shared secret and the verifier's state (last accepted time step, consecutive failures,
 * lock-out). Every change is written atomically (temp file, fsync, rename, fsync of the
 * directory) under an exclusive flock(2) on <account>.lock, so several processes may verify
 * codes for the same account at once. Design note: docs/internals/totp.md.
 *
 * Parameters: HMAC-SHA-1, 20-byte secret, 6 digits, 30-second period (what every
 * authenticator app supports); a code is accepted for the time steps t-1, t and t+1 only,
 * once: a time step at or below the last accepted one is refused as a replay.
 */
#ifndef FERRY_TOTP_H
#define FERRY_TOTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Account names become file names: 1..FERRY_TOTP_ACCOUNT_MAX bytes of A-Z a-z 0-9 and
 * ". _ - @ +", not starting with '.' or '-', and without "..". */
#define FERRY_TOTP_ACCOUNT_MAX 64
/* Issuer labels: 1..FERRY_TOTP_ISSUER_MAX bytes of printable ASCII without ':'. */
#define FERRY_TOTP_ISSUER_MAX 64
#define FERRY_TOTP_DEFAULT_ISSUER "ferry"

#define FERRY_TOTP_SECRET_LEN 20 /* bytes; SHA-1 block-size friendly, RFC 4226 §4 R6 */
#define FERRY_TOTP_DIGITS 6
#define FERRY_TOTP_PERIOD 30 /* seconds */
#define FERRY_TOTP_WINDOW 1  /* time steps accepted either side of the current one */

/* Lock-out: after FERRY_TOTP_MAX_FAILURES consecutive refused attempts the account is locked
 * for FERRY_TOTP_LOCK_BASE seconds, doubled at each further lock-out, at most
 * FERRY_TOTP_LOCK_MAX. A success resets both the failure count and the doubling. */
#define FERRY_TOTP_MAX_FAILURES 5
#define FERRY_TOTP_LOCK_BASE 30
#define FERRY_TOTP_LOCK_MAX 3600

/* Outcome of one verification attempt. Only FERRY_TOTP_OK means the code was accepted. */
typedef enum {
    FERRY_TOTP_OK = 0,          /* accepted; its time step is now used up */
    FERRY_TOTP_BAD_CODE,        /* well-formed but matches none of t-1, t, t+1 */
    FERRY_TOTP_REPLAYED,        /* matches a time step at or below the last accepted one */
    FERRY_TOTP_LOCKED,          /* account locked: the code was not looked at */
    FERRY_TOTP_MALFORMED,       /* not exactly FERRY_TOTP_DIGITS ASCII digits (or NULL) */
    FERRY_TOTP_UNKNOWN_ACCOUNT, /* no such enrolled account */
} ferry_totp_status;

/* Stable lower-case name of a status ("ok", "bad_code", "replayed", "locked", "malformed",
 * "unknown_account"; "invalid" for values outside the enum). Static string. */
const char *ferry_totp_status_name(ferry_totp_status status);

/* Check an account name against the rules above. 0 or -EINVAL. Thread-safe. */
int ferry_totp_account_check(const char *account);

/* Enrol account: make a new random secret, store it in <state_dir>/totp/<account>.json and
 * return the otpauth:// URI for an authenticator app.
 *
 * state_dir: existing directory (borrowed); the totp/ folder is created 0700 when missing, and
 *   refused when it is a symlink, not owned by the caller, or open to group/other.
 * account: see ferry_totp_account_check. issuer: label shown by the app (NULL = "ferry").
 * force: replace an existing enrolment (its secret, counter and lock-out state are dropped);
 *   without it an existing account is refused with -EEXIST.
 * ret_uri: on success a new string "otpauth://totp/ISSUER:ACCOUNT?secret=BASE32&issuer=ISSUER
 *   &algorithm=SHA1&digits=6&period=30" (label and issuer percent-encoded). It holds the
 *   secret: free it with ferry_free_secret_str() or wipe it before free().
 * errbuf/errlen: optional; a one-line reason on failure (never containing the secret).
 *
 * Returns 0, -EINVAL (bad account, issuer or argument), -EEXIST, -EPERM (insecure state
 * folder), -FERRY_ECRYPTO (no randomness), -ENOMEM or another -errno from the file system.
 * Safe against concurrent enrolments and verifications of the same account. */
int ferry_totp_enroll(const char *state_dir, const char *account, const char *issuer,
                      bool force, char **ret_uri, char *errbuf, size_t errlen);

/* Verify one code for account at time now (seconds since the epoch; pass time(NULL)).
 *
 * code: the user's input, borrowed; must be exactly FERRY_TOTP_DIGITS ASCII digits, nothing
 *   else (no spaces, sign or newline). NULL is a malformed code.
 * On return 0 a decision was made: *ret_status says which (accepted only when FERRY_TOTP_OK)
 *   and *ret_retry_after (optional) the seconds until the account unlocks (0 when not locked;
 *   set when this attempt caused a lock-out, and with FERRY_TOTP_LOCKED). The new state
 *   (counter, failures, lock-out) is on disk before the function returns.
 * On a negative return nothing was decided and the caller MUST treat the attempt as refused:
 *   -EINVAL (bad account name, now < 0, NULL argument), -FERRY_EMALFORMED (state file is not
 *   a well-formed ferry TOTP record), -FERRY_ETOOBIG (state file too large), -EPERM (state
 *   file or folder open to group/other, not owned by the caller, or not a regular file),
 *   -EIO or another -errno (the state could not be read or persisted: fail closed).
 * errbuf/errlen: optional; a one-line reason on failure, never containing the secret or the
 *   code.
 * Thread- and process-safe for the same account (exclusive flock on <account>.lock). */
int ferry_totp_verify(const char *state_dir, const char *account, const char *code,
                      int64_t now, ferry_totp_status *ret_status, int64_t *ret_retry_after,
                      char *errbuf, size_t errlen);

/* What an operator may see of an account (no secret). */
typedef struct ferry_totp_info {
    char issuer[FERRY_TOTP_ISSUER_MAX + 1];
    int64_t created;      /* enrolment time (seconds since the epoch) */
    int64_t last_counter; /* last accepted time step, -1 when none yet */
    unsigned failures;    /* consecutive refused attempts since the last lock-out/success */
    unsigned lockouts;    /* lock-outs since the last success (drives the doubling) */
    int64_t locked_until; /* epoch seconds; locked while now < locked_until */
    int64_t retry_after;  /* locked_until - now when locked, else 0 */
} ferry_totp_info;

/* Read an account's state without changing or creating anything (takes the lock shared when
 * the lock file exists; never creates it).
 * ret_info: written only on success. Returns 0, -ENOENT (not enrolled) or the errors of
 * ferry_totp_verify. Thread-safe. */
int ferry_totp_inspect(const char *state_dir, const char *account, int64_t now,
                       ferry_totp_info *ret_info, char *errbuf, size_t errlen);

/* RFC 4226 HOTP value of secret for counter with HMAC-SHA-1 (through liboath), as digits
 * ASCII digits plus a NUL into out (at least digits + 1 bytes). digits: 6..8. The TOTP code
 * for time T is the HOTP value for counter floor(T / period). Returns 0, -EINVAL or
 * -FERRY_ECRYPTO. Thread-safe. */
int ferry_totp_hotp(const void *secret, size_t secret_len, uint64_t counter, unsigned digits,
                    char *out);

#ifdef __cplusplus
}
#endif
#endif
