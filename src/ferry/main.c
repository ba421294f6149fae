/* ferry/main.c - entry point of the ferry admin CLI: dispatch to one subcommand. */
#include "config.h"

#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>

#include "basic/macro.h"
#include "ferry/ferry.h"
#include "ferry/http.h"

static const struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} commands[] = {
    { "token", ferry_cmd_token, "verify or inspect identity tokens" },
    { "policy", ferry_cmd_policy, "lint policy files; explain a decision" },
    { "keys", ferry_cmd_keys, "create, rotate and publish ferry's signing keys" },
    { "totp", ferry_cmd_totp, "enrol an account for TOTP step-up" },
    { "log", ferry_cmd_log, "verify the audit log's hash chain and checkpoints" },
    { "secret", ferry_cmd_secret, "manage the sealed secret store; get a secret by reference" },
    { "audit", ferry_cmd_audit, "audit cloud IAM exports for over-permissioned identities" },
};

static void usage(FILE *f)
{
    fprintf(f, "usage: ferry COMMAND [ARGS...]\n\ncommands:\n");
    for (size_t i = 0; i < ARRAY_SIZE(commands); i++)
        fprintf(f, "  %-8s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "\nRun 'ferry COMMAND --help' for the options of one command.\n");
}

int main(int argc, char **argv)
{
    /* Tokens and keys pass through this process: keep them out of core dumps. */
    (void)prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);

    if (argc < 2) {
        usage(stderr);
        return FERRY_EXIT_USAGE;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return FERRY_EXIT_OK;
    }
    if (strcmp(argv[1], "--version") == 0) {
        printf("ferry %s\n", PACKAGE_VERSION);
        return FERRY_EXIT_OK;
    }
    if (ferry_http_global_init() < 0) {
        fprintf(stderr, "ferry: cannot initialise libcurl\n");
        return FERRY_EXIT_USAGE;
    }
    for (size_t i = 0; i < ARRAY_SIZE(commands); i++)
        if (strcmp(argv[1], commands[i].name) == 0)
            return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "ferry: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return FERRY_EXIT_USAGE;
}
