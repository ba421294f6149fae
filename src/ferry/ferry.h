/* ferry/ferry.h - subcommands of the ferry admin CLI (one source file each). */
#ifndef FERRY_CLI_H
#define FERRY_CLI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "basic/macro.h"
#include "ferry/oidc.h"

/* Exit codes shared by every subcommand. */
enum {
    FERRY_EXIT_OK = 0,      /* success / accepted */
    FERRY_EXIT_REFUSED = 1, /* the thing checked was refused or has problems */
    FERRY_EXIT_USAGE = 2,   /* usage or configuration error */
};

/* argv[0] is the subcommand name ("token"). Return an exit code. */
int ferry_cmd_token(int argc, char **argv);
int ferry_cmd_policy(int argc, char **argv);
int ferry_cmd_keys(int argc, char **argv);
int ferry_cmd_totp(int argc, char **argv);
int ferry_cmd_log(int argc, char **argv);
int ferry_cmd_secret(int argc, char **argv);
int ferry_cmd_audit(int argc, char **argv);

/* Shared by the subcommands (src/ferry/cli.c). */

/* Largest configuration file read. */
#define FERRY_CLI_CONFIG_MAX (1024 * 1024)

/* Read all of f, at most max bytes, into a new NUL-terminated buffer (secret: wiped as it
 * grows and on failure). Returns 0, -FERRY_ETOOBIG, -EIO or -ENOMEM. */
int ferry_cli_read_stream(FILE *f, size_t max, bool secret, char **ret, size_t *ret_len);
/* The same for a file; "-" reads stdin. Also -errno from fopen. */
int ferry_cli_read_path(const char *path, size_t max, bool secret, char **ret, size_t *ret_len);
/* Load the issuer configuration file path ({"issuers": [...]}, docs/configuration.md) into
 * oidc. Errors are printed as "PROG: PATH[:LINE]: reason". Returns 0 or a negative code. */
int ferry_cli_load_trust(const char *prog, const char *path, ferry_oidc *oidc);

DEFINE_TRIVIAL_CLEANUP_FUNC(ferry_oidc *, ferry_oidc_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(ferry_identity *, ferry_identity_free);

#endif
