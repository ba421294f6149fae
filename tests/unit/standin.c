/* tests/unit/standin.c - start, drive and stop the loopback IdP stand-in from tests. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "standin.h"
#include "testutil.h"

#define STANDIN_MAX_ARGS 64
#define STANDIN_START_TIMEOUT_MS 15000

struct tu_standin {
    pid_t pid;
    int port;
    bool tls;
    bool ipv6; /* started with --bind ::1 */
    char *pin; /* public key of the stand-in's certificate, for the control requests */
};

/* ---- certificates --------------------------------------------------------------------- */

static int run_wait(char *const argv[])
{
    pid_t pid = fork();
    int status;

    if (pid < 0)
        return -1;
    if (pid == 0) {
        execvp(argv[0], argv);
        _exit(127);
    }
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            return -1;
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -1;
}

int tu_certs_setup(void)
{
    char tmpl[] = "/tmp/ferry-test-certs-XXXXXX";
    const char *tmpdir = secure_getenv("TMPDIR");
    char dir[PATH_MAX];
    char *script = tu_src_path("tests/peers/mkcerts.sh");
    int r = -1;

    if (!script)
        return -1;
    if (tmpdir && *tmpdir)
        snprintf(dir, sizeof(dir), "%s/ferry-test-certs-XXXXXX", tmpdir);
    else
        snprintf(dir, sizeof(dir), "%s", tmpl);
    if (!mkdtemp(dir)) {
        fprintf(stderr, "standin: mkdtemp %s: %s\n", dir, strerror(errno));
        goto out;
    }
    char *argv[] = {"sh", script, dir, NULL};
    if (run_wait(argv) < 0 || setenv("FERRY_TEST_CERTS", dir, 1) < 0) {
        fprintf(stderr, "standin: %s %s failed\n", script, dir);
        char *rm[] = {"rm", "-rf", "--", dir, NULL};
        (void)run_wait(rm);
        goto out;
    }
    r = 0;
out:
    free(script);
    return r;
}

void tu_certs_teardown(void)
{
    const char *dir = secure_getenv("FERRY_TEST_CERTS");

    /* Only ever remove what tu_certs_setup made. */
    if (!dir || !strstr(dir, "/ferry-test-certs-"))
        return;
    char *argv[] = {"rm", "-rf", "--", (char *)dir, NULL};
    (void)run_wait(argv);
    unsetenv("FERRY_TEST_CERTS");
}

char *tu_cert_path(const char *name)
{
    const char *dir = secure_getenv("FERRY_TEST_CERTS");
    char *p;
    size_t n;

    if (!dir || !*dir)
        return NULL;
    n = strlen(dir) + strlen(name) + 2;
    p = malloc(n);
    if (p)
        snprintf(p, n, "%s/%s", dir, name);
    return p;
}

/* ---- control requests (plain libcurl: the helpers must not depend on the code under test) */

static size_t collect_cb(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    char **buf = userdata;
    size_t n = size * nmemb, old = *buf ? strlen(*buf) : 0;
    char *nb;

    if (old + n > (1u << 20))
        return 0;
    nb = realloc(*buf, old + n + 1);
    if (!nb)
        return 0;
    memcpy(nb + old, ptr, n);
    nb[old + n] = '\0';
    *buf = nb;
    return n;
}

/* GET (post == NULL) or POST a JSON body to the stand-in; returns the body (new) on 200. */
static char *control_request(const tu_standin *s, const char *path, const char *post)
{
    char *url = tu_standin_url(s, path);
    char *body = NULL;
    struct curl_slist *hdrs = NULL;
    CURL *h = curl_easy_init();
    long status = 0;
    CURLcode c = CURLE_OK;

    if (!url || !h)
        goto fail;
    hdrs = curl_slist_append(NULL, "Content-Type: application/json");
    c |= curl_easy_setopt(h, CURLOPT_URL, url);
    c |= curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    c |= curl_easy_setopt(h, CURLOPT_PROXY, "");
    c |= curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 5000L);
    c |= curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, collect_cb);
    c |= curl_easy_setopt(h, CURLOPT_WRITEDATA, &body);
    if (s->tls) {
        /* The helper talks to its own child, whose certificate may be deliberately wrong
         * (expired, wrong host, unknown CA): it authenticates the child by its public key
         * instead of by the chain. */
        c |= curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 0L);
        c |= curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 0L);
        c |= curl_easy_setopt(h, CURLOPT_PINNEDPUBLICKEY, s->pin);
    }
    if (post) {
        c |= curl_easy_setopt(h, CURLOPT_POSTFIELDS, post);
        c |= curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    }
    if (c != CURLE_OK || curl_easy_perform(h) != CURLE_OK)
        goto fail;
    if (curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status) != CURLE_OK || status != 200)
        goto fail;
    if (!body)
        body = strdup("");
    curl_slist_free_all(hdrs);
    curl_easy_cleanup(h);
    free(url);
    return body;
fail:
    free(body);
    curl_slist_free_all(hdrs);
    if (h)
        curl_easy_cleanup(h);
    free(url);
    return NULL;
}

int tu_standin_control(const tu_standin *s, const char *json)
{
    char *r = control_request(s, "/_control", json);

    free(r);
    return r ? 0 : -1;
}

int tu_standin_fault(const tu_standin *s, const char *path, const char *mode)
{
    json_t *doc = json_pack("{s:{s:o}}", "faults", path, mode ? json_string(mode) : json_null());
    char *text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    int r = text ? tu_standin_control(s, text) : -1;

    free(text);
    json_decref(doc);
    return r;
}

json_t *tu_standin_stats(const tu_standin *s)
{
    char *body = control_request(s, "/_stats", NULL);
    json_t *j = NULL;

    if (body)
        j = json_loadb(body, strlen(body), JSON_REJECT_DUPLICATES, NULL);
    free(body);
    return j;
}

long tu_standin_count(const tu_standin *s, const char *path)
{
    json_t *j = tu_standin_stats(s);
    json_t *reqs = j ? json_object_get(j, "requests") : NULL;
    json_t *n = reqs ? json_object_get(reqs, path) : NULL;
    long r = -1;

    if (json_is_object(reqs))
        r = json_is_integer(n) ? (long)json_integer_value(n) : 0;
    json_decref(j);
    return r;
}

long tu_standin_connections(const tu_standin *s)
{
    json_t *j = tu_standin_stats(s);
    json_t *n = j ? json_object_get(j, "connections") : NULL;
    long r = json_is_integer(n) ? (long)json_integer_value(n) : -1;

    json_decref(j);
    return r;
}

/* ---- process ---------------------------------------------------------------------------- */

int tu_standin_port(const tu_standin *s)
{
    return s->port;
}

bool tu_standin_tls(const tu_standin *s)
{
    return s->tls;
}

char *tu_standin_url(const tu_standin *s, const char *path)
{
    size_t n = strlen(path) + 64;
    char *u = malloc(n);

    if (u)
        snprintf(u, n, "%s://%s:%d%s", s->tls ? "https" : "http", s->ipv6 ? "[::1]" : "127.0.0.1",
                 s->port, path);
    return u;
}

static int64_t mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Read the first line (the port) from fd within the start timeout. */
static int read_port(int fd)
{
    char line[32];
    size_t len = 0;
    int64_t deadline = mono_ms() + STANDIN_START_TIMEOUT_MS;

    while (len < sizeof(line) - 1) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int64_t left = deadline - mono_ms();
        ssize_t n;

        if (left <= 0 || poll(&p, 1, (int)left) <= 0)
            return -1;
        n = read(fd, line + len, 1);
        if (n <= 0)
            return -1;
        if (line[len] == '\n') {
            char *end;
            long port;

            line[len] = '\0';
            port = strtol(line, &end, 10);
            return (*end || port <= 0 || port > 65535) ? -1 : (int)port;
        }
        len++;
    }
    return -1;
}

static void reap(pid_t pid)
{
    int64_t deadline = mono_ms() + 5000;
    int status;

    (void)kill(pid, SIGTERM);
    for (;;) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid || (r < 0 && errno != EINTR))
            return;
        if (mono_ms() > deadline)
            break;
        usleep(10000);
    }
    (void)kill(pid, SIGKILL);
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
}

tu_standin *tu_standin_start(const char *tls, ...)
{
    const char *python = secure_getenv("PYTHON3");
    char *script = tu_src_path("tests/peers/idp_standin.py");
    char *cert = NULL, *key = NULL;
    char parent[32];
    const char *argv[STANDIN_MAX_ARGS];
    size_t argc = 0;
    int fds[2] = {-1, -1};
    tu_standin *s = calloc(1, sizeof(*s));
    va_list ap;
    pid_t me = getpid();

    if (!s || !script)
        goto fail;
    if (!python || !*python)
        python = "python3";
    snprintf(parent, sizeof(parent), "%ld", (long)me);
    argv[argc++] = python;
    argv[argc++] = script;
    argv[argc++] = "--parent";
    argv[argc++] = parent;
    if (tls) {
        size_t n = strlen(tls) + 8;
        char name[64];

        if (n > sizeof(name))
            goto fail;
        snprintf(name, sizeof(name), "%s.pem", tls);
        cert = tu_cert_path(name);
        snprintf(name, sizeof(name), "%s.key", tls);
        key = tu_cert_path(name);
        snprintf(name, sizeof(name), "%s.pub", tls);
        s->pin = tu_cert_path(name);
        if (!cert || !key || !s->pin) {
            fprintf(stderr, "standin: no certificates (tu_certs_setup not run?)\n");
            goto fail;
        }
        argv[argc++] = "--tls-cert";
        argv[argc++] = cert;
        argv[argc++] = "--tls-key";
        argv[argc++] = key;
        s->tls = true;
    }
    va_start(ap, tls);
    for (const char *a; (a = va_arg(ap, const char *));) {
        if (argc >= STANDIN_MAX_ARGS - 1) {
            va_end(ap);
            goto fail;
        }
        if (argc > 0 && strcmp(argv[argc - 1], "--bind") == 0 && strchr(a, ':'))
            s->ipv6 = true;
        argv[argc++] = a;
    }
    va_end(ap);
    argv[argc] = NULL;

    if (pipe2(fds, O_CLOEXEC) < 0)
        goto fail;
    s->pid = fork();
    if (s->pid < 0)
        goto fail;
    if (s->pid == 0) {
        /* Only async-signal-safe calls until exec. */
        (void)prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != me)
            _exit(1);
        if (dup2(fds[1], STDOUT_FILENO) < 0)
            _exit(1);
        execvp(argv[0], (char *const *)argv);
        _exit(127);
    }
    close(fds[1]);
    fds[1] = -1;
    s->port = read_port(fds[0]);
    close(fds[0]);
    fds[0] = -1;
    if (s->port <= 0) {
        fprintf(stderr, "standin: %s did not report a port\n", script);
        goto fail;
    }
    /* The port is printed after listen(), so it answers now; prove it once. */
    json_t *st = tu_standin_stats(s);
    if (!st) {
        fprintf(stderr, "standin: stand-in on port %d does not answer\n", s->port);
        goto fail;
    }
    json_decref(st);
    free(script);
    free(cert);
    free(key);
    return s;
fail:
    if (fds[0] >= 0)
        close(fds[0]);
    if (fds[1] >= 0)
        close(fds[1]);
    if (s && s->pid > 0)
        reap(s->pid);
    if (s)
        free(s->pin);
    free(s);
    free(script);
    free(cert);
    free(key);
    return NULL;
}

void tu_standin_stop(tu_standin *s)
{
    if (!s)
        return;
    if (s->pid > 0)
        reap(s->pid);
    free(s->pin);
    free(s);
}
