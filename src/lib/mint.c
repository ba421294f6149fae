/* mint.c - ferry's signing keys, RFC 9068 access tokens, discovery document and JWKS. */
#include "ferry/mint.h"

int ferry_mint_placeholder_(void);
int ferry_mint_placeholder_(void) { return 0; }
