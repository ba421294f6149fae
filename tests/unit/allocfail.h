/* tests/unit/allocfail.h - the real allocator, for tests that interpose malloc and friends to
 * inject allocation failures (test_jose.c, test_oidc.c, test_auditlog.c). Under ASan the real
 * allocator is ASan's interceptor; otherwise glibc's __libc_* entry points. Defines
 * HAVE_ALLOC_INJECTION on glibc only.
 *
 * A test file that defines FERRY_ALLOCFAIL_NTH before including this header gets the common
 * scheme: malloc, calloc and realloc replaced in the program so that, once armed with
 * inject_arm(N), the Nth allocation of the process fails, whoever makes it (the library,
 * jansson or OpenSSL); inject_disarm() turns it off and says whether a failure was injected.
 * A file with other arming rules (test_oidc.c) defines its own replacements and calls REAL_*.
 * The replacements must be visible: the build compiles with -fvisibility=hidden. */
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

#if defined(FERRY_ALLOCFAIL_NTH) && defined(HAVE_ALLOC_INJECTION)
#include <stdbool.h>

static _Atomic long inject_at = -1; /* allocation index that fails, -1: off */
static _Atomic long inject_count;
static _Atomic int injected;

static bool inject_now(void)
{
    long at = inject_at;

    if (at < 0 || inject_count++ != at)
        return false;
    injected = 1;
    return true;
}

__attribute__((visibility("default"))) void *malloc(size_t n)
{
    return inject_now() ? NULL : REAL_MALLOC(n);
}

__attribute__((visibility("default"))) void *calloc(size_t n, size_t m)
{
    return inject_now() ? NULL : REAL_CALLOC(n, m);
}

__attribute__((visibility("default"))) void *realloc(void *p, size_t n)
{
    return inject_now() ? NULL : REAL_REALLOC(p, n);
}

static inline void inject_arm(long at)
{
    injected = 0;
    inject_count = 0;
    inject_at = at;
}

static inline bool inject_disarm(void)
{
    inject_at = -1;
    return injected;
}
#endif

#endif
