/* basic/fileio.c - see fileio.h. */
#include "config.h"

#include <errno.h>
#include <unistd.h>

#include "basic/fileio.h"

int ferry_write_all(int fd, const void *p, size_t n)
{
    const char *s = p;

    while (n > 0) {
        ssize_t w = write(fd, s, n);

        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return -errno;
        if (w == 0)
            return -EIO;
        s += w;
        n -= (size_t)w;
    }
    return 0;
}
