/* policy.c - least-privilege policy: load, index, decide, explain. */
#include "ferry/policy.h"

int ferry_policy_placeholder_(void);
int ferry_policy_placeholder_(void) { return 0; }
