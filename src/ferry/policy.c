/* ferry policy - least-privilege policy: load, index, decide, explain. */
#include <stdio.h>

#include "ferry/ferry.h"

int ferry_cmd_policy(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "ferry policy: not available yet\n");
    return FERRY_EXIT_USAGE;
}
