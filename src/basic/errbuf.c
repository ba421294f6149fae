/* basic/errbuf.c - see errbuf.h. */
#include <stdarg.h>
#include <stdio.h>

#include "basic/errbuf.h"

int ferry_errbuf_set(char *errbuf, size_t errlen, int code, const char *fmt, ...)
{
    va_list ap;

    if (errbuf && errlen) {
        va_start(ap, fmt);
        (void)vsnprintf(errbuf, errlen, fmt, ap);
        va_end(ap);
    }
    return code;
}
