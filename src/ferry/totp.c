/* ferry totp - TOTP step-up (liboath): enrolment, one-time verification, lock-out. */
#include <stdio.h>

#include "ferry/ferry.h"

int ferry_cmd_totp(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "ferry totp: not available yet\n");
    return FERRY_EXIT_USAGE;
}
