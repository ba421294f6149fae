/* ferry/mint.h - ferry's signing keys, RFC 9068 access tokens, discovery document and JWKS. */
#ifndef FERRY_MINT_H
#define FERRY_MINT_H

#endif
