/* basic/fileio.h - small file helpers shared by the modules that keep state on disk (libc
 * only). */
#ifndef FERRY_BASIC_FILEIO_H
#define FERRY_BASIC_FILEIO_H

#include <stddef.h>
#include <unistd.h>

#include "basic/macro.h"

/* For _cleanup_close_: close a descriptor when its variable leaves scope (-1: nothing). */
static inline void ferry_closep(int *fd)
{
    if (*fd >= 0)
        (void)close(*fd);
}
#define _cleanup_close_ _cleanup_(ferry_closep)

/* Write all n bytes of p to fd, retrying after EINTR and short writes. Returns 0, -errno, or
 * -EIO when write() made no progress. On error an unknown prefix may have been written. */
int ferry_write_all(int fd, const void *p, size_t n);

/* Read exactly size bytes from fd (a regular file whose size fstat gave) into a new
 * NUL-terminated buffer. On failure the part read is wiped and freed (the caller may be
 * reading a private key). Returns 0, -ENOMEM, -errno, or -EIO when the file was shorter. */
int ferry_read_exact(int fd, size_t size, char **ret);

/* Read a whole regular file of at most max bytes into a new NUL-terminated buffer (wiped on
 * failure). Opened with O_NONBLOCK, so a FIFO put in its place cannot hang the caller.
 * Returns 0, -errno from open, -EINVAL when it is not a regular file, -EFBIG when larger than
 * max, or what ferry_read_exact returns. */
int ferry_read_regular_file(const char *path, size_t max, char **ret, size_t *ret_len);

#endif
