/* ferry/cli.c - small helpers shared by the subcommands: bounded input reading and the issuer
 * configuration that `ferry token verify` and `ferry policy explain --token` trust. */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "basic/buf.h"
#include "basic/macro.h"
#include "basic/mem.h"
#include "ferry/error.h"
#include "ferry/ferry.h"
#include "ferry/json.h"

int ferry_cli_read_stream(FILE *f, size_t max, bool secret, char **ret, size_t *ret_len)
{
    ferry_buf b;
    char chunk[4096];
    int r = 0;

    ferry_buf_init(&b, max, secret);
    for (;;) {
        size_t n = fread(chunk, 1, sizeof(chunk), f);

        if (n > 0 && (r = ferry_buf_append(&b, chunk, n)) < 0) {
            r = r == -E2BIG ? -FERRY_ETOOBIG : r;
            break;
        }
        if (n < sizeof(chunk)) {
            if (ferror(f))
                r = -EIO;
            break;
        }
    }
    ferry_wipe(chunk, sizeof(chunk));
    if (r == 0)
        r = ferry_buf_append(&b, "", 0); /* NUL-terminated, and allocated even when empty */
    if (r < 0) {
        ferry_buf_release(&b);
        return r;
    }
    *ret = ferry_buf_steal(&b, ret_len);
    return *ret ? 0 : -ENOMEM;
}

int ferry_cli_read_path(const char *path, size_t max, bool secret, char **ret, size_t *ret_len)
{
    FILE *f;
    int r;

    if (strcmp(path, "-") == 0)
        return ferry_cli_read_stream(stdin, max, secret, ret, ret_len);
    f = fopen(path, "rbe");
    if (!f)
        return -errno;
    r = ferry_cli_read_stream(f, max, secret, ret, ret_len);
    fclose(f);
    return r;
}

int ferry_cli_load_trust(const char *prog, const char *path, ferry_oidc *oidc)
{
    _cleanup_free_ char *buf = NULL;
    _cleanup_(json_decrefp) json_t *conf = NULL;
    char err[512] = "";
    unsigned line = 0;
    size_t len;
    int r;

    r = ferry_cli_read_path(path, FERRY_CLI_CONFIG_MAX, false, &buf, &len);
    if (r < 0) {
        fprintf(stderr, "%s: %s: %s\n", prog, path,
                r == -FERRY_ETOOBIG ? "larger than 1 MiB" : ferry_strerror(r));
        return r;
    }
    {
        ferry_json_locs *locs = NULL;

        r = ferry_json_parse_located(buf, len, FERRY_CLI_CONFIG_MAX, 32, &conf, &locs, &line,
                                     err, sizeof(err));
        ferry_json_locs_free(locs);
    }
    if (r < 0 || !json_is_object(conf)) {
        fprintf(stderr, "%s: %s:%u: %s\n", prog, path, r < 0 ? line : 1,
                r < 0 ? err : "not a JSON object");
        return r < 0 ? r : -FERRY_ECONFIG;
    }
    r = ferry_oidc_load_config(oidc, conf, err, sizeof(err));
    if (r < 0)
        fprintf(stderr, "%s: %s: %s\n", prog, path, err[0] ? err : ferry_strerror(r));
    return r;
}
