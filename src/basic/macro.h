/* basic/macro.h - small macros shared by every ferry program and module (libc only). */
#ifndef FERRY_BASIC_MACRO_H
#define FERRY_BASIC_MACRO_H

#include <stdlib.h>

#define FERRY_EXPORT __attribute__((visibility("default")))

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* Exchange the values of two lvalues of one type. */
#define SWAP_TWO(a, b)                                                                         \
    do {                                                                                       \
        __typeof__(a) swap_tmp_ = (a);                                                         \
        (a) = (b);                                                                             \
        (b) = swap_tmp_;                                                                       \
    } while (0)

#define _cleanup_(f) __attribute__((cleanup(f)))
#define _unused_ __attribute__((unused))
#define _printf_(a, b) __attribute__((format(printf, a, b)))
#define _warn_unused_result_ __attribute__((warn_unused_result))

/* Hand a pointer out of a _cleanup_ scope: returns it and leaves NULL behind. */
#define TAKE_PTR(p)                                                                            \
    ({                                                                                         \
        __typeof__(p) _ptr_ = (p);                                                             \
        (p) = NULL;                                                                            \
        _ptr_;                                                                                 \
    })

static inline void freep(void *p)
{
    free(*(void **)p);
}
#define _cleanup_free_ _cleanup_(freep)

#define DEFINE_TRIVIAL_CLEANUP_FUNC(type, func)                                                \
    static inline void func##p(type *p)                                                        \
    {                                                                                          \
        if (*p)                                                                                \
            func(*p);                                                                          \
    }

#endif
