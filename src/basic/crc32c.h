/* basic/crc32c.h - CRC-32C (Castagnoli, RFC 3720 appendix B.4), libc only.
 *
 * The checksum Google Cloud puts next to Secret Manager payloads (dataCrc32c) and object
 * data. Reflected polynomial 0x82F63B78, initial value and final XOR 0xFFFFFFFF. */
#ifndef FERRY_BASIC_CRC32C_H
#define FERRY_BASIC_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* The CRC-32C of n bytes at p continuing crc, the value returned for the bytes before them
 * (0 to start). ferry_crc32c(ferry_crc32c(0, a, na), b, nb) is the CRC of a followed by b.
 * p may be NULL when n is 0. Pure function; thread-safe. */
uint32_t ferry_crc32c(uint32_t crc, const void *p, size_t n);

#endif
