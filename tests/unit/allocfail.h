/* tests/unit/allocfail.h - the real allocator, for tests that interpose malloc and friends to
 * inject allocation failures (test_jose.c, test_oidc.c). Each test file defines its own
 * malloc/calloc/realloc (and free, where it inspects freed memory) with its own arming rules
 * and calls REAL_* to allocate. Under ASan the real allocator is ASan's interceptor;
 * otherwise glibc's __libc_* entry points. Defines HAVE_ALLOC_INJECTION on glibc only. */
#ifndef FERRY_TEST_ALLOCFAIL_H
#define FERRY_TEST_ALLOCFAIL_H

#include <stddef.h>

#if defined(__GLIBC__)
#define HAVE_ALLOC_INJECTION 1
#ifdef __SANITIZE_ADDRESS__
extern void *__interceptor_malloc(size_t n);
extern void *__interceptor_calloc(size_t n, size_t m);
extern void *__interceptor_realloc(void *p, size_t n);
extern void __interceptor_free(void *p);
#define REAL_MALLOC __interceptor_malloc
#define REAL_CALLOC __interceptor_calloc
#define REAL_REALLOC __interceptor_realloc
#define REAL_FREE __interceptor_free
#else
extern void *__libc_malloc(size_t n);
extern void *__libc_calloc(size_t n, size_t m);
extern void *__libc_realloc(void *p, size_t n);
extern void __libc_free(void *p);
#define REAL_MALLOC __libc_malloc
#define REAL_CALLOC __libc_calloc
#define REAL_REALLOC __libc_realloc
#define REAL_FREE __libc_free
#endif
#endif

#endif
