/* ferry/totp.c - `ferry totp enroll`, `ferry totp verify` and `ferry totp status`.
 *
 * enroll: creates an account's secret in the state directory and prints the otpauth:// URI
 * (stdout only: it holds the secret). verify: reads one code from stdin - never from argv,
 * where any user would see it in ps - and says whether it is accepted (exit 0) or why not
 * (exit 1). status: prints an account's counters and lock-out state as JSON (no secret).
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "basic/macro.h"
#include "basic/fileio.h"
#include "basic/mem.h"
#include "ferry/error.h"
#include "ferry/ferry.h"
#include "ferry/totp.h"

/* Longest code line kept; a longer line is read to its end and refused as malformed. */
#define CODE_INPUT_MAX 64

static void usage(FILE *f)
{
    fprintf(f,
            "usage: ferry totp enroll --state-dir DIR [--issuer LABEL] [--force] ACCOUNT\n"
            "       ferry totp verify --state-dir DIR [--now EPOCH] ACCOUNT   (code on stdin)\n"
            "       ferry totp status --state-dir DIR [--now EPOCH] ACCOUNT\n"
            "\n"
            "TOTP step-up (RFC 6238: SHA-1, 6 digits, 30 s). enroll prints the otpauth:// URI\n"
            "for an authenticator app; verify reads one code from stdin and exits 0 when it is\n"
            "accepted, 1 when it is refused (the reason on stderr), 2 on usage errors.\n"
            "\n"
            "  -d, --state-dir DIR   state directory (accounts live in DIR/totp)\n"
            "  -i, --issuer LABEL    issuer shown by the app (enroll; default \"ferry\")\n"
            "  -f, --force           re-enrol an existing account with a new secret (enroll)\n"
            "  --now EPOCH           decide as if the clock said EPOCH (verify, status; tests)\n"
            "  -h, --help            this text\n");
}

enum { OPT_NOW = 256 };

typedef struct options {
    const char *state_dir;
    const char *issuer;
    const char *account;
    bool force;
    bool have_now;
    int64_t now;
} options;

/* Parse the options of subcommand argv[0]. Returns 0, 1 when --help was printed, or -EINVAL
 * (message printed). */
static int parse_options(int argc, char **argv, bool enroll, options *o)
{
    static const struct option longopts[] = {
        { "state-dir", required_argument, NULL, 'd' },
        { "issuer", required_argument, NULL, 'i' },
        { "force", no_argument, NULL, 'f' },
        { "now", required_argument, NULL, OPT_NOW },
        { "help", no_argument, NULL, 'h' },
        {},
    };
    int c;

    optind = 1;
    while ((c = getopt_long(argc, argv, "+d:i:fh", longopts, NULL)) != -1) {
        switch (c) {
        case 'd':
            o->state_dir = optarg;
            break;
        case 'i':
        case 'f':
            if (!enroll) {
                fprintf(stderr, "ferry totp %s: --%s is an enroll option\n", argv[0],
                        c == 'i' ? "issuer" : "force");
                return -EINVAL;
            }
            if (c == 'i')
                o->issuer = optarg;
            else
                o->force = true;
            break;
        case OPT_NOW: {
            long long v;
            if (enroll || ferry_parse_int64(optarg, &v) < 0 || v < 0) {
                fprintf(stderr, "ferry totp %s: --now: '%s' is not allowed here or not an "
                                "integer >= 0\n",
                        argv[0], optarg);
                return -EINVAL;
            }
            o->now = v;
            o->have_now = true;
            break;
        }
        case 'h':
            usage(stdout);
            return 1;
        default:
            usage(stderr);
            return -EINVAL;
        }
    }
    if (!o->state_dir) {
        fprintf(stderr, "ferry totp %s: --state-dir is required\n", argv[0]);
        return -EINVAL;
    }
    if (argc - optind != 1) {
        fprintf(stderr, "ferry totp %s: expected exactly one ACCOUNT%s\n", argv[0],
                enroll ? "" : " (the code is read from stdin, never from the command line)");
        return -EINVAL;
    }
    o->account = argv[optind];
    if (ferry_totp_account_check(o->account) < 0) {
        fprintf(stderr,
                "ferry totp %s: invalid account name (1-%d of A-Z a-z 0-9 . _ - @ +, not "
                "starting with '.' or '-', no \"..\")\n",
                argv[0], FERRY_TOTP_ACCOUNT_MAX);
        return -EINVAL;
    }
    return 0;
}

static int cmd_enroll(int argc, char **argv)
{
    options o = { 0 };
    char err[256];
    char *uri = NULL;
    int r;

    r = parse_options(argc, argv, true, &o);
    if (r != 0)
        return r > 0 ? FERRY_EXIT_OK : FERRY_EXIT_USAGE;
    r = ferry_totp_enroll(o.state_dir, o.account, o.issuer, o.force, &uri, err, sizeof(err));
    if (r < 0) {
        fprintf(stderr, "ferry totp enroll: %s\n", err[0] ? err : ferry_strerror(r));
        return r == -EEXIST ? FERRY_EXIT_REFUSED : FERRY_EXIT_USAGE;
    }
    /* Straight to the descriptor: stdio would keep a copy of the secret in its buffer. */
    r = fflush(stdout) == EOF ? -EIO : ferry_write_all(STDOUT_FILENO, uri, strlen(uri));
    if (r == 0)
        r = ferry_write_all(STDOUT_FILENO, "\n", 1);
    ferry_free_secret_str(uri);
    if (r < 0) {
        /* The secret is stored but nobody saw it: say so, the operator must re-enrol. */
        fprintf(stderr, "ferry totp enroll: cannot write the URI to stdout; the account is "
                        "enrolled, re-enrol it with --force\n");
        return FERRY_EXIT_USAGE;
    }
    return FERRY_EXIT_OK;
}

/* Read one line (without "\n" / "\r\n") from stdin into buf (CODE_INPUT_MAX + 1 bytes). A
 * longer line is consumed and kept truncated to CODE_INPUT_MAX bytes: still far longer than
 * any code, so it is refused as malformed. On a terminal, prompts on stderr and turns echo
 * off. read(2) into a wiped local chunk, not stdio: stdin's buffer would keep the code until
 * exit. Returns 1 when a line was read, 0 at EOF with nothing, -EIO on a read error. */
static int read_code(char *buf)
{
    struct termios old, quiet;
    bool tty = isatty(STDIN_FILENO), restore = false, any = false, overlong = false;
    bool eol = false;
    char chunk[CODE_INPUT_MAX];
    size_t n = 0;
    int r = 0;

    if (tty) {
        fprintf(stderr, "TOTP code: ");
        fflush(stderr);
        if (tcgetattr(STDIN_FILENO, &old) == 0) {
            quiet = old;
            quiet.c_lflag &= ~(tcflag_t)ECHO;
            restore = tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet) == 0;
        }
    }
    while (!eol) {
        ssize_t got = read(STDIN_FILENO, chunk, sizeof(chunk));
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0) {
            r = -EIO;
            break;
        }
        if (got == 0)
            break;
        any = true;
        for (ssize_t i = 0; i < got; i++) {
            if (chunk[i] == '\n') {
                eol = true;
                break;
            }
            if (n < CODE_INPUT_MAX)
                buf[n++] = chunk[i];
            else
                overlong = true;
        }
    }
    ferry_wipe(chunk, sizeof(chunk));
    buf[n] = '\0';
    if (n > 0 && !overlong && buf[n - 1] == '\r')
        buf[--n] = '\0';
    if (r == 0)
        r = any ? 1 : 0;
    if (restore)
        (void)tcsetattr(STDIN_FILENO, TCSAFLUSH, &old);
    if (tty)
        fputc('\n', stderr);
    return r;
}

static int cmd_verify(int argc, char **argv)
{
    options o = { 0 };
    char code[CODE_INPUT_MAX + 1], err[256];
    ferry_totp_status st;
    int64_t retry = 0;
    int r;

    r = parse_options(argc, argv, false, &o);
    if (r != 0)
        return r > 0 ? FERRY_EXIT_OK : FERRY_EXIT_USAGE;
    r = read_code(code);
    if (r < 0) {
        ferry_wipe(code, sizeof(code));
        fprintf(stderr, "ferry totp verify: cannot read the code from stdin\n");
        return FERRY_EXIT_USAGE;
    }
    if (r == 0) {
        fprintf(stderr, "ferry totp verify: no code on stdin\n");
        return FERRY_EXIT_USAGE;
    }
    r = ferry_totp_verify(o.state_dir, o.account, code,
                          o.have_now ? o.now : (int64_t)time(NULL), &st, &retry, err,
                          sizeof(err));
    ferry_wipe(code, sizeof(code));
    if (r < 0) {
        /* No decision could be made (state unreadable, hostile or not writable): refused. */
        fprintf(stderr, "ferry totp verify: refused: error: %s\n",
                err[0] ? err : ferry_strerror(r));
        printf("{\"account\": \"%s\", \"status\": \"error\"}\n", o.account);
        return FERRY_EXIT_REFUSED;
    }
    printf("{\"account\": \"%s\", \"status\": \"%s\", \"retry_after\": %" PRId64 "}\n",
           o.account, ferry_totp_status_name(st), retry);
    if (fflush(stdout) == EOF)
        return FERRY_EXIT_REFUSED;
    if (st == FERRY_TOTP_OK)
        return FERRY_EXIT_OK;
    if (st == FERRY_TOTP_LOCKED || retry > 0)
        fprintf(stderr, "ferry totp verify: refused: %s; account locked, retry after %" PRId64
                        " s\n",
                ferry_totp_status_name(st), retry);
    else
        fprintf(stderr, "ferry totp verify: refused: %s\n", ferry_totp_status_name(st));
    return FERRY_EXIT_REFUSED;
}

static int cmd_status(int argc, char **argv)
{
    options o = { 0 };
    ferry_totp_info info;
    char err[256];
    json_t *out;
    char *text;
    int r;

    r = parse_options(argc, argv, false, &o);
    if (r != 0)
        return r > 0 ? FERRY_EXIT_OK : FERRY_EXIT_USAGE;
    r = ferry_totp_inspect(o.state_dir, o.account, o.have_now ? o.now : (int64_t)time(NULL),
                           &info, err, sizeof(err));
    if (r < 0) {
        fprintf(stderr, "ferry totp status: %s\n", err[0] ? err : ferry_strerror(r));
        return FERRY_EXIT_REFUSED;
    }
    out = json_pack("{s:s, s:s, s:I, s:I, s:i, s:i, s:b, s:I, s:I}", "account", o.account,
                    "issuer", info.issuer, "created", (json_int_t)info.created,
                    "last_counter", (json_int_t)info.last_counter, "failures",
                    (int)info.failures, "lockouts", (int)info.lockouts, "locked",
                    info.retry_after > 0, "locked_until", (json_int_t)info.locked_until,
                    "retry_after", (json_int_t)info.retry_after);
    text = out ? json_dumps(out, JSON_INDENT(2) | JSON_SORT_KEYS) : NULL;
    json_decref(out);
    if (!text) {
        fprintf(stderr, "ferry totp status: out of memory\n");
        return FERRY_EXIT_USAGE;
    }
    r = puts(text) == EOF ? FERRY_EXIT_REFUSED : FERRY_EXIT_OK;
    free(text);
    return r;
}

int ferry_cmd_totp(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? FERRY_EXIT_USAGE : FERRY_EXIT_OK;
    }
    if (strcmp(argv[1], "enroll") == 0)
        return cmd_enroll(argc - 1, argv + 1);
    if (strcmp(argv[1], "verify") == 0)
        return cmd_verify(argc - 1, argv + 1);
    if (strcmp(argv[1], "status") == 0)
        return cmd_status(argc - 1, argv + 1);
    fprintf(stderr, "ferry totp: unknown subcommand '%s'\n", argv[1]);
    return FERRY_EXIT_USAGE;
}
