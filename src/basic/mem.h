/* basic/mem.h - secret-safe memory helpers (libc only). */
#ifndef FERRY_BASIC_MEM_H
#define FERRY_BASIC_MEM_H

#include <stdbool.h>
#include <stddef.h>

/* Compare a and b (n bytes each) in time that depends only on n. True when equal. */
bool ferry_memeq_ct(const void *a, const void *b, size_t n);

/* Wipe n bytes so the compiler cannot drop the store. Accepts NULL. */
void ferry_wipe(void *p, size_t n);

/* Wipe then free a NUL-terminated string. Accepts NULL. */
void ferry_free_secret_str(char *s);

/* Parse a decimal signed 64-bit integer occupying all of s (no sign other than a leading
 * '-', no spaces). Returns 0 or -EINVAL / -ERANGE; *ret written only on success. */
int ferry_parse_int64(const char *s, long long *ret);

#endif
