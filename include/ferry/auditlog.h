/* ferry/auditlog.h - tamper-evident audit log: hash-chained JSON lines with signed checkpoints.
 *
 * One record per line. Every record carries a sequence number (1, 2, 3, ... without gaps), the
 * hash of the previous record and its own hash, SHA-256(previous hash || canonical bytes of the
 * record without "hash"). Every checkpoint_every records, on request and when the log is closed,
 * a checkpoint record (itself part of the chain) carries a compact JWS, signed with ferry's
 * signing key, over the range of records it covers, the chain head and its own seq and time.
 * The exact format, the canonical bytes and the verification rules are in
 * docs/internals/auditlog.md; an independent verifier lives in tests/integration/test_cli_log.py.
 *
 * Tokens and secrets never enter the log: a token is referenced by its jti and the SHA-256 of
 * its bytes (ferry_auditlog_ref_token), and any string that looks like a compact JWS/JWT, and
 * any field over its length limit, is refused.
 *
 * A failed write or sync makes ferry_auditlog_append fail, and the log then refuses every
 * further append (-EBADFD) until it is closed and reopened: the caller must fail closed.
 */
#ifndef FERRY_AUDITLOG_H
#define FERRY_AUDITLOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

#include "ferry/jose.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Limits. A record line (newline included) never exceeds FERRY_AUDITLOG_MAX_LINE bytes; the
 * verifier refuses longer lines. */
#define FERRY_AUDITLOG_MAX_LINE 16384
#define FERRY_AUDITLOG_TYPE_MAX 64        /* event type: [a-z0-9][a-z0-9._-]* */
#define FERRY_AUDITLOG_SUBJECT_MAX 512    /* bytes of UTF-8 */
#define FERRY_AUDITLOG_JTI_MAX 128        /* bytes of UTF-8 */
#define FERRY_AUDITLOG_STRING_MAX 1024    /* any string inside details */
#define FERRY_AUDITLOG_KEY_MAX 64         /* any member name inside details */
#define FERRY_AUDITLOG_DETAILS_MEMBERS 64 /* values in details, all levels together */
#define FERRY_AUDITLOG_DETAILS_DEPTH 4    /* details object is level 1 */
#define FERRY_AUDITLOG_DEFAULT_CHECKPOINT_EVERY 1000
#define FERRY_AUDITLOG_MAX_CHECKPOINT_EVERY 10000000
#define FERRY_AUDITLOG_REASON_LEN 256
/* JWS "typ" of a checkpoint signature. */
#define FERRY_AUDITLOG_CHECKPOINT_TYP "ferry-auditlog-checkpoint"

typedef struct ferry_auditlog ferry_auditlog;

/* When appended records are flushed to stable storage (fdatasync). Whatever the mode, every
 * checkpoint and the close are synced before they return. */
typedef enum ferry_auditlog_sync_mode {
    FERRY_AUDITLOG_SYNC_ALWAYS = 0, /* after every record, before append returns (default) */
    FERRY_AUDITLOG_SYNC_BATCH,      /* every sync_every_records records or when sync_interval_ms
                                       passed since the last sync (checked at each append) */
    FERRY_AUDITLOG_SYNC_CHECKPOINT, /* only at checkpoints, ferry_auditlog_flush and close */
    FERRY_AUDITLOG_SYNC_MAX
} ferry_auditlog_sync_mode;

typedef enum ferry_auditlog_decision {
    FERRY_AUDITLOG_ALLOW = 0,
    FERRY_AUDITLOG_DENY,
    FERRY_AUDITLOG_ERROR,
    FERRY_AUDITLOG_INFO,
    FERRY_AUDITLOG_DECISION_MAX
} ferry_auditlog_decision;

/* "allow", "deny", "error", "info", or NULL for a value out of range. */
const char *ferry_auditlog_decision_name(ferry_auditlog_decision d);

typedef struct ferry_auditlog_options {
    const char *path;          /* the log file; created (0600) when missing */
    unsigned checkpoint_every; /* records between checkpoints; 0 = default (1000) */
    ferry_auditlog_sync_mode sync;
    unsigned sync_every_records; /* BATCH: 0 = 100 */
    unsigned sync_interval_ms;   /* BATCH: 0 = 1000 */
    /* Private key that signs checkpoints (borrowed; the log takes its own reference). It must
     * have a kid. Required. */
    ferry_jwk *signing_key;
    /* Optional public keys (borrowed; the log takes a reference) of earlier signing keys: on
     * reopen, checkpoints they signed are verified too. Without them only the checkpoints of
     * signing_key are verified on reopen, and those of other kids are skipped. */
    const ferry_jwks *verify_keys;
    /* On reopen, a last line without its newline (a crash in the middle of a write) is
     * refused by default. With repair_tail it is cut off, and the auditlog.open record that
     * starts the new session says how many bytes were removed and their SHA-256. */
    bool repair_tail;
    /* Clock in microseconds since the Unix epoch (UTC); NULL = CLOCK_REALTIME. */
    int64_t (*clock)(void *userdata);
    void *clock_userdata;
} ferry_auditlog_options;

/* A token named by reference only: its jti (when it has one) and the SHA-256 of its bytes. */
typedef struct ferry_auditlog_token_ref {
    char jti[FERRY_AUDITLOG_JTI_MAX + 1]; /* "" when unknown */
    char sha256[65];                      /* lowercase hex; "" when unknown */
} ferry_auditlog_token_ref;

/* One event to append. All members are borrowed for the duration of the call. */
typedef struct ferry_auditlog_event {
    const char *type; /* required, e.g. "token.exchange"; the prefix
                         "auditlog." is reserved */
    ferry_auditlog_decision decision;
    const char *subject;                   /* required (may be ""), UTF-8 */
    const ferry_auditlog_token_ref *token; /* optional */
    const json_t *details;                 /* optional object: strings, integers, booleans,
                                              null, arrays and objects (no reals) */
} ferry_auditlog_event;

/* Compute the reference of a raw token: sha256 = hex SHA-256 of the len bytes; jti = the
 * payload's "jti" when the token parses as a compact JWS (not verified: the reference is only a
 * name), its payload is a JSON object and its jti is a string of at most FERRY_AUDITLOG_JTI_MAX
 * bytes that the log would accept; otherwise "". The token itself is not kept.
 * Returns 0, -EINVAL (NULL arguments) or -FERRY_ECRYPTO (the digest failed). Thread-safe. */
int ferry_auditlog_ref_token(const char *token, size_t len, ferry_auditlog_token_ref *ret);

/* The same reference for a token whose payload the caller has already parsed (e.g. verified):
 * sha256 = hex SHA-256 of the len bytes, as above; jti = the jti_len bytes of jti when the log
 * would accept them (the same rule as above: no NUL, at most FERRY_AUDITLOG_JTI_MAX bytes of
 * UTF-8, not token-shaped), otherwise "". jti NULL = the token has no jti. The token is not
 * parsed: the caller vouches that jti is the "jti" member of this token's payload, so pass it
 * only for a token whose payload was parsed (a refused token goes to ferry_auditlog_ref_token).
 * Returns 0, -EINVAL (NULL arguments) or -FERRY_ECRYPTO. Thread-safe. */
int ferry_auditlog_ref_token_jti(const char *token, size_t len, const char *jti, size_t jti_len,
                                 ferry_auditlog_token_ref *ret);

/* Open (or create) the log at opts->path and lock it against other writers (flock). An
 * existing log is verified from its first line (cost: linear in the file, see
 * docs/internals/auditlog.md) and continued: the chain, sequence and checkpoint range go on
 * where it ended. Any broken record, a partial last line (unless repair_tail) or a checkpoint
 * that does not verify refuses the open. Every open appends an "auditlog.open" record.
 * On success *ret_log is a new log (ferry_auditlog_close). errbuf (optional) gets a one-line
 * reason naming the line and seq at fault.
 * Returns 0, -EINVAL (options), -FERRY_ENOKEY (no private signing key, or one without kid),
 * -EBUSY (locked by another writer), -FERRY_EMALFORMED (a broken record or partial tail),
 * -FERRY_EBADSIG (a checkpoint signature), -errno (I/O), -ENOMEM. */
int ferry_auditlog_open(const ferry_auditlog_options *opts, ferry_auditlog **ret_log, char *errbuf,
                        size_t errlen);

/* Append one event; *ret_seq (optional) gets its sequence number. Writes a checkpoint after it
 * when checkpoint_every records have accumulated. Durable per the sync mode when it returns 0.
 * Returns 0; -EINVAL / -FERRY_ETOOBIG / -FERRY_EMALFORMED / -FERRY_EPOLICY (the event is
 * refused: bad type, too long, not UTF-8, a real number, a value that looks like a JWT; the
 * log is unchanged and stays usable); -errno from write or fdatasync (-ENOSPC, -EFBIG, -EIO),
 * after which the log is poisoned; -EBADFD for a poisoned log. Thread-safe. */
int ferry_auditlog_append(ferry_auditlog *log, const ferry_auditlog_event *ev, uint64_t *ret_seq);

/* Write a (non-final) checkpoint now, even when no record came since the last one.
 * Returns 0, -errno (the log is then poisoned) or -EBADFD. Thread-safe. */
int ferry_auditlog_checkpoint(ferry_auditlog *log);

/* fdatasync now (for the BATCH and CHECKPOINT modes, e.g. from a timer). Thread-safe. */
int ferry_auditlog_flush(ferry_auditlog *log);

/* Sign later checkpoints with key (borrowed; the log takes a reference), e.g. after a key
 * rotation. key must be private and have a kid. Thread-safe. */
int ferry_auditlog_set_signing_key(ferry_auditlog *log, ferry_jwk *key);

/* Sequence number of the last record written (0 for none). Thread-safe. */
uint64_t ferry_auditlog_last_seq(ferry_auditlog *log);

/* Write the final checkpoint, sync, unlock and free the log. Not concurrent with other calls
 * on the same log. Returns 0, or the error of the final checkpoint (-EBADFD when the log was
 * poisoned: it is then closed unsealed); the log is freed in every case. Accepts NULL. */
int ferry_auditlog_close(ferry_auditlog *log);

/* ---- verification ------------------------------------------------------------------------ */

typedef struct ferry_auditlog_problem {
    uint64_t line;      /* 1-based line number */
    uint64_t seq;       /* the record's seq, 0 when unknown */
    const char *reason; /* one line, borrowed for the duration of the callback */
    bool warning;       /* live mode: the unsigned tail; not a failure */
} ferry_auditlog_problem;

typedef struct ferry_auditlog_verify_options {
    /* A log still being written: the last record need not be a final checkpoint; records after
     * the last checkpoint (and an incomplete last line) are warnings, not problems. */
    bool live;
    /* Called once per problem or warning, in file order (optional). */
    void (*on_problem)(void *userdata, const ferry_auditlog_problem *p);
    void *userdata;
    /* Stop reporting after this many problems (0 = 100); counting continues. */
    unsigned max_problems;
    /* The least seq the log must reach (0 = no requirement): a log cut back to an earlier
     * checkpoint, e.g. the final checkpoint of an earlier session, is otherwise a valid log.
     * Pass the last seq of an earlier verification (or one known from elsewhere). */
    uint64_t min_last_seq;
    /* Called with each record other than a checkpoint whose seq, chain link and hash verified,
     * in file order (optional; `ferry audit --usage` reads the log through it). rec is the
     * parsed record without "hash", borrowed for the call. A negative return stops the
     * verification, which then returns it. */
    int (*on_record)(void *userdata, const json_t *rec);
    /* Check the checkpoints of kids that are not in keys for shape, range, head and payload
     * only, without their signature (a verification of the chain by a reader who has no public
     * key; anyone can rewrite such a log whole). */
    bool skip_unknown_kid;
} ferry_auditlog_verify_options;

typedef struct ferry_auditlog_report {
    uint64_t lines;               /* lines read (an incomplete last line included) */
    uint64_t records;             /* records whose chain link and hash verified */
    uint64_t first_seq, last_seq; /* seq of the first and last record read (0 when none) */
    uint64_t checkpoints;         /* checkpoints whose signature and range verified */
    uint64_t last_checkpoint_seq; /* seq of the last verified checkpoint, 0 when none */
    bool last_checkpoint_final;
    bool sealed;               /* the last record is a verified final checkpoint */
    uint64_t unsigned_records; /* records after the last checkpoint */
    uint64_t problems;         /* problems found (warnings not counted) */
    uint64_t warnings;
    uint64_t first_bad_line, first_bad_seq; /* the first problem (0 when none) */
    char first_bad_reason[FERRY_AUDITLOG_REASON_LEN];
} ferry_auditlog_report;

/* Verify the log at path against keys (public keys of every signing key it may name; borrowed):
 * every line's canonical form, seq, prev link and hash, every checkpoint's signature, range and
 * head, and (unless opts->live) that the log ends with a final checkpoint. Streaming: memory is
 * bounded whatever the file size; lines over FERRY_AUDITLOG_MAX_LINE are problems.
 * opts may be NULL. *report is always filled.
 * Returns 0 when the log verified, -FERRY_EREFUSED when it has problems (see report and
 * on_problem), -EINVAL, -errno when the file cannot be read, -ENOMEM. Thread-safe. */
int ferry_auditlog_verify(const char *path, const ferry_jwks *keys,
                          const ferry_auditlog_verify_options *opts, ferry_auditlog_report *report);

#ifdef __cplusplus
}
#endif
#endif
