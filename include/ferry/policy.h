/* ferry/policy.h - least-privilege policy: load, index, decide, explain.
 *
 * A policy set is loaded from policy files (the *.json files of a directory such as
 * policies/; format in docs/policy.md and policies/policy.schema.json). Each policy matches a verified identity by issuer (exact),
 * subject (exact or glob), audience (any of) and claims (exact, glob or one-of) and grants
 * scopes, target audiences, a TTL cap, secret references and cloud roles, optionally only
 * after a TOTP step-up.
 *
 * Deny by default: a request is granted only when at least one policy matches, and then only
 * what was requested and granted. A request for a scope or audience that no matching policy
 * grants is refused (invalid_scope / invalid_target); it is never widened or silently cut.
 * Several matching policies combine by union of their grants; the TTL is the smallest cap of
 * the policies that contributed.
 *
 * This module sits below oidc: it takes the parts of an identity the caller has already
 * verified and never verifies a token itself.
 *
 * Loading collects every problem (file, line, reason) instead of stopping at the first one, so
 * `ferry policy lint` can report them all. A set with any problem is not built.
 *
 * Thread safety: a ferry_policy_set is immutable once built; any number of threads may decide
 * and explain on it at once. Its reference count is atomic. ferry_policy_store holds the
 * current set for a daemon that reloads on SIGHUP while other threads decide.
 */
#ifndef FERRY_POLICY_H
#define FERRY_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- limits (documented in docs/policy.md) ------------------------------------------------ */
#define FERRY_POLICY_FILE_MAX (1024 * 1024)  /* bytes per policy file */
#define FERRY_POLICY_FILES_MAX 1000          /* policy files per set */
#define FERRY_POLICY_PER_FILE_MAX 20000      /* policies per file */
#define FERRY_POLICY_TOTAL_MAX 100000        /* policies per set */
#define FERRY_POLICY_JSON_DEPTH 8            /* container nesting in a policy file */
#define FERRY_POLICY_ID_MAX 128              /* bytes of a policy id */
#define FERRY_POLICY_STRING_MAX 1024         /* bytes of an issuer, subject, glob, value */
#define FERRY_POLICY_LIST_MAX 256            /* entries of any list in one policy */
#define FERRY_POLICY_CLAIMS_MAX 32           /* claim constraints per policy */
#define FERRY_POLICY_CLAIM_PATH_MAX 8        /* members in a nested claim path */
#define FERRY_POLICY_TTL_MAX 43200           /* largest max_ttl, seconds (12 h) */
#define FERRY_POLICY_PROBLEMS_MAX 1000       /* problems kept by one load; then one more
                                                saying the rest were dropped */
#define FERRY_POLICY_REASON_MAX 256          /* bytes of a refusal reason, NUL included */

/* ---- problems found while loading --------------------------------------------------------- */

typedef struct ferry_policy_problem {
    const char *file; /* as given to the loader (path or buffer name) */
    unsigned line;    /* 1-based; 0 when the problem has no line (e.g. file unreadable) */
    const char *reason;
} ferry_policy_problem;

typedef struct ferry_policy_problems ferry_policy_problems;

/* New empty problem list. Returns 0 or -ENOMEM. Free with ferry_policy_problems_free. */
int ferry_policy_problems_new(ferry_policy_problems **ret_problems);
void ferry_policy_problems_free(ferry_policy_problems *p); /* accepts NULL */
size_t ferry_policy_problems_count(const ferry_policy_problems *p);
/* Problem i (borrowed from p, valid until p is freed), or NULL when i is out of range.
 * Problems are in the order found: files in load order, lines in increasing order within a
 * file except for cross-file checks (duplicate ids), which come after the file's own. */
const ferry_policy_problem *ferry_policy_problems_get(const ferry_policy_problems *p, size_t i);

/* ---- the policy set ----------------------------------------------------------------------- */

typedef struct ferry_policy_set ferry_policy_set;

/* Take / drop a reference. The set is freed when the last reference goes. Both accept NULL;
 * ref returns its argument. Thread-safe. */
ferry_policy_set *ferry_policy_set_ref(ferry_policy_set *set);
void ferry_policy_set_unref(ferry_policy_set *set);
size_t ferry_policy_set_count(const ferry_policy_set *set);

/* What one policy declares, for tools that list a set (`ferry audit --policies`). Every
 * pointer is borrowed from the set and valid while the caller holds a reference to it. */
typedef struct ferry_policy_info {
    const char *id;
    const char *file;    /* the file it was loaded from, as given to the loader */
    unsigned line;       /* line of the policy object */
    const char *issuer;  /* match.issuer */
    const char *subject; /* match.subject, or the match.subject_glob pattern */
    bool subject_glob;
    const char *const *secrets; /* grant.secrets, as written */
    size_t n_secrets;
    const struct ferry_policy_aws_role *aws; /* grant.aws */
    size_t n_aws;
    const struct ferry_policy_azure_app *azure; /* grant.azure */
    size_t n_azure;
    const char *const *gcp; /* grant.gcp service account e-mails */
    size_t n_gcp;
} ferry_policy_info;

/* Policy i of set (0 <= i < ferry_policy_set_count, in load order) into *ret_info.
 * Returns 0 or -EINVAL (set or ret_info NULL, i out of range). Thread-safe. */
int ferry_policy_set_get(const ferry_policy_set *set, size_t i, ferry_policy_info *ret_info);

/* A builder reads policy files one by one, then builds the indexed set. */
typedef struct ferry_policy_builder ferry_policy_builder;

int ferry_policy_builder_new(ferry_policy_builder **ret_builder);
void ferry_policy_builder_free(ferry_policy_builder *b); /* accepts NULL */

/* Parse one policy document of len bytes named name (used in problems; borrowed, copied).
 * Every problem found is appended to problems (required). Returns 0 when the document is
 * clean, -FERRY_ECONFIG when it had problems (its valid policies are still kept so that
 * cross-file checks can run, but finish will refuse), -FERRY_EFULL past the file or policy
 * count limits, -ENOMEM. */
int ferry_policy_builder_add_buffer(ferry_policy_builder *b, const char *name, const void *buf,
                                    size_t len, ferry_policy_problems *problems);

/* As add_buffer, reading path (a regular file, not a symbolic link, at most
 * FERRY_POLICY_FILE_MAX bytes; opened O_NOFOLLOW). An unreadable file is a problem (line 0)
 * and -FERRY_ECONFIG. */
int ferry_policy_builder_add_file(ferry_policy_builder *b, const char *path,
                                  ferry_policy_problems *problems);

/* Every "*.json" entry of dir in name order (C locale), except names starting with '.' and
 * names ending in ".schema.json"; other entries are ignored; subdirectories are not entered.
 * A "*.json" entry that is not a regular file (directory, symbolic link, fifo) is a problem.
 * A directory that cannot be opened is a problem (line 0) and -errno. */
int ferry_policy_builder_add_dir(ferry_policy_builder *b, const char *dir,
                                 ferry_policy_problems *problems);

/* Run the cross-file checks (duplicate ids) and build the index. When any problem was
 * recorded by this builder (or now), no set is built and -FERRY_ECONFIG is returned.
 * On success *ret_set is new (one reference). The builder is consumed either way (free it
 * afterwards; adding more is -EINVAL). */
int ferry_policy_builder_finish(ferry_policy_builder *b, ferry_policy_set **ret_set,
                                ferry_policy_problems *problems);

/* Conveniences: a whole directory (add_dir + finish) or one file (add_file + finish).
 * problems may be NULL when the caller wants only the return value. Returns 0, -FERRY_ECONFIG
 * (problems recorded), -errno for a directory that cannot be read, -ENOMEM. *ret_set is
 * written only on success. */
int ferry_policy_load_dir(const char *dir, ferry_policy_set **ret_set,
                          ferry_policy_problems *problems);
int ferry_policy_load_file(const char *path, ferry_policy_set **ret_set,
                           ferry_policy_problems *problems);

/* ---- a decision --------------------------------------------------------------------------- */

typedef struct ferry_policy_request {
    /* The verified identity (all borrowed). */
    const char *issuer;     /* required */
    const char *subject;    /* required */
    const json_t *audience; /* the token's "aud": an array of strings or a string; may be
                               NULL (no audience: only policies without one match) */
    const json_t *claims;   /* the verified claims object; may be NULL (no claims) */
    /* What is asked for (borrowed). Duplicates are allowed and granted once. */
    const char *const *audiences; /* requested target audiences */
    size_t n_audiences;
    const char *const *scopes;    /* requested scopes */
    size_t n_scopes;
    bool step_up_totp; /* a TOTP step-up was verified for this request */
} ferry_policy_request;

typedef enum ferry_policy_error {
    FERRY_POLICY_GRANTED = 0,
    FERRY_POLICY_ACCESS_DENIED,    /* no policy matched the identity (deny by default) */
    FERRY_POLICY_INVALID_SCOPE,    /* a requested scope is not granted */
    FERRY_POLICY_INVALID_TARGET,   /* a requested audience is not granted, or none was
                                      requested and several are granted */
    FERRY_POLICY_STEP_UP_REQUIRED, /* granted only after a TOTP step-up */
    FERRY_POLICY_ERROR_MAX
} ferry_policy_error;

/* "granted", "access_denied", "invalid_scope", "invalid_target", "step_up_required". Static. */
const char *ferry_policy_error_name(ferry_policy_error e);

typedef struct ferry_policy_refusal {
    ferry_policy_error error;
    char reason[FERRY_POLICY_REASON_MAX]; /* one line; names policy ids and requested values
                                             (control bytes masked), never claim values */
} ferry_policy_refusal;

typedef struct ferry_policy_aws_role {
    const char *role_arn;
    int64_t session_duration; /* seconds: the smallest when several policies grant the same
                                 role, and never above the grant's ttl (so below AWS's 900 s
                                 floor when the ttl is; AWS then refuses: fail closed) */
} ferry_policy_aws_role;

typedef struct ferry_policy_azure_app {
    const char *tenant_id; /* lowercase GUID */
    const char *client_id; /* lowercase GUID */
} ferry_policy_azure_app;

/* A grant. Every string is borrowed from the policy set, which the grant holds a reference
 * to: it stays valid until ferry_policy_grant_free, even across a reload. */
typedef struct ferry_policy_grant {
    const char **policies; /* ids of the policies that contributed, in load order */
    size_t n_policies;
    const char **scopes; /* the requested scopes, each granted, duplicates removed, in
                            request order; none when none were requested */
    size_t n_scopes;
    const char **audiences; /* the requested audiences, or the single granted one */
    size_t n_audiences;
    int64_t ttl;             /* seconds: the smallest max_ttl of the contributing policies */
    const char **secrets;    /* secret references or patterns, as granted, de-duplicated */
    size_t n_secrets;
    ferry_policy_aws_role *aws;
    size_t n_aws;
    ferry_policy_azure_app *azure;
    size_t n_azure;
    const char **gcp;        /* GCP service account e-mails */
    size_t n_gcp;
    bool step_up;            /* a contributing policy required TOTP step-up (and it was done) */
    ferry_policy_set *set_;  /* private: the reference that keeps the strings alive */
} ferry_policy_grant;

void ferry_policy_grant_free(ferry_policy_grant *g); /* accepts NULL */
/* The grant as a new JSON object {"policies","scopes","audiences","ttl","secrets","aws",
 * "azure","gcp","step_up"}. Returns 0 or -ENOMEM. */
int ferry_policy_grant_to_json(const ferry_policy_grant *g, json_t **ret_json);

/* Decide req against set. Returns 0 and a new grant in *ret_grant (ferry_policy_grant_free);
 * -FERRY_EREFUSED with *ret_refusal filled (error and reason) when refused; -EINVAL when set,
 * req, issuer or subject is NULL or a requested value is NULL; -ENOMEM. ret_refusal may be
 * NULL; when non-NULL it is always written (error FERRY_POLICY_GRANTED on success).
 * Thread-safe; cost does not grow with the number of policies of other issuers or with
 * subjects that share no literal prefix with the request's. */
int ferry_policy_decide(const ferry_policy_set *set, const ferry_policy_request *req,
                        ferry_policy_grant **ret_grant, ferry_policy_refusal *ret_refusal);

/* Explain a decision for operators (`ferry policy explain`): a new JSON object with
 *   "decision": "granted" | error name, "reason" (when refused), "grant" (when granted),
 *   "issuer_policies": number of policies naming the request's issuer,
 *   "considered": [{ "id", "file", "line", "matched": bool, "failed": "issuer" | "subject" |
 *       "audience" | "claim" | "step_up" (when not matched), "detail": one line,
 *       "grants": {...} (when matched), "contributed": bool (when matched) }, ...]
 *     every policy of that issuer, in load order (at most 1000; "considered_truncated": true
 *     past that),
 *   "known_issuers": [...] (when no policy names the request's issuer; at most 50).
 * The decision is ferry_policy_decide's; the per-policy lines come from a linear scan.
 * Returns 0, -EINVAL or -ENOMEM. */
int ferry_policy_explain(const ferry_policy_set *set, const ferry_policy_request *req,
                         json_t **ret_json);

/* ---- glob patterns (exposed for the CLI and tests) ----------------------------------------- */

/* Check a glob pattern of the policy language: '*' matches any run of characters (including
 * none, '/' and ':'), '?' exactly one character (a UTF-8 sequence counts as one), '\' makes
 * the next character literal and may precede only '*', '?', '\', '[', ']', '{' or '}'.
 * Refused: empty, longer than FERRY_POLICY_STRING_MAX, "**", a trailing or unknown escape,
 * unescaped '[', ']', '{', '}', control bytes, invalid UTF-8. Returns 0 or -FERRY_EMALFORMED
 * with a one-line reason in errbuf. */
int ferry_policy_glob_check(const char *pattern, char *errbuf, size_t errlen);
/* Match text against a checked pattern. Worst case O(len(pattern) * len(text)). */
bool ferry_policy_glob_match(const char *pattern, const char *text);

/* ---- the holder a daemon reloads ------------------------------------------------------------ */

typedef struct ferry_policy_store ferry_policy_store;

/* A store holding set (a new reference is taken; set may be NULL: every decision is then
 * access_denied). Returns 0 or -ENOMEM. */
int ferry_policy_store_new(ferry_policy_set *set, ferry_policy_store **ret_store);
void ferry_policy_store_free(ferry_policy_store *s); /* accepts NULL */
/* The current set, as a new reference (unref it), or NULL when empty. Thread-safe; a reader
 * keeps using its set while a swap happens. */
ferry_policy_set *ferry_policy_store_get(ferry_policy_store *s);
/* Install set (a new reference is taken), dropping the store's reference to the previous one.
 * Thread-safe. */
void ferry_policy_store_swap(ferry_policy_store *s, ferry_policy_set *set);
/* Load dir into a new set and swap it in only when it loaded without problems; otherwise the
 * previous set stays and the problems are in problems (may be NULL). Returns what
 * ferry_policy_load_dir returned. */
int ferry_policy_store_reload(ferry_policy_store *s, const char *dir,
                              ferry_policy_problems *problems);

#ifdef __cplusplus
}
#endif
#endif
