/* ferry keys - ferry's signing keys, RFC 9068 access tokens, discovery document and JWKS. */
#include <stdio.h>

#include "ferry/ferry.h"

int ferry_cmd_keys(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "ferry keys: not available yet\n");
    return FERRY_EXIT_USAGE;
}
