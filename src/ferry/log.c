/* ferry log - hash-chained audit log with signed checkpoints. */
#include <stdio.h>

#include "ferry/ferry.h"

int ferry_cmd_log(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "ferry log: not available yet\n");
    return FERRY_EXIT_USAGE;
}
