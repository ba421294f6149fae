/* ferry/token.c */
#include "config.h"
#include "ferry/ferry.h"
int ferry_cmd_token(int argc, char **argv) { (void)argc; (void)argv; return 2; }
