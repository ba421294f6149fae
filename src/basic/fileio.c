/* basic/fileio.c - see fileio.h. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "basic/fileio.h"
#include "basic/mem.h"

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

int ferry_read_exact(int fd, size_t size, char **ret)
{
    size_t got = 0;
    char *buf;

    if (size == SIZE_MAX)
        return -EFBIG;
    buf = malloc(size + 1);
    if (!buf)
        return -ENOMEM;
    while (got < size) {
        ssize_t n = read(fd, buf + got, size - got);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            int r = n < 0 ? -errno : -EIO;

            ferry_wipe(buf, got);
            free(buf);
            return r;
        }
        got += (size_t)n;
    }
    buf[got] = '\0';
    *ret = buf;
    return 0;
}

int ferry_read_regular_file(const char *path, size_t max, char **ret, size_t *ret_len)
{
    struct stat st;
    int fd, r;

    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0)
        return -errno;
    if (fstat(fd, &st) < 0)
        r = -errno;
    else if (!S_ISREG(st.st_mode))
        r = -EINVAL;
    else if (st.st_size < 0 || (uintmax_t)st.st_size > max)
        r = -EFBIG;
    else
        r = ferry_read_exact(fd, (size_t)st.st_size, ret);
    (void)close(fd);
    if (r == 0)
        *ret_len = (size_t)st.st_size;
    return r;
}
