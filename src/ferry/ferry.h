/* ferry/ferry.h - subcommands of the ferry admin CLI (one source file each). */
#ifndef FERRY_CLI_H
#define FERRY_CLI_H

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

#endif
