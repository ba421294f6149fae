/* basic/errbuf.h - the one-line reason a function leaves in its caller's (errbuf, errlen).
 *
 * Most of libferry's functions that can refuse take a char *errbuf and its size and write one
 * line saying what was wrong; this is the one formatter they share. */
#ifndef FERRY_BASIC_ERRBUF_H
#define FERRY_BASIC_ERRBUF_H

#include <stddef.h>

#include "basic/macro.h"

/* Format the reason into errbuf (when errbuf is not NULL and errlen > 0; truncated to fit) and
 * return code, so that a refusal is one statement: return ferry_errbuf_set(e, l, -EINVAL, ...). */
int ferry_errbuf_set(char *errbuf, size_t errlen, int code, const char *fmt, ...) _printf_(4, 5);

#endif
