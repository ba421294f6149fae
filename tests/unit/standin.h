/* tests/unit/standin.h - run tests/peers/idp_standin.py (the loopback OIDC IdP stand-in) and
 * the throwaway certificates of tests/peers/mkcerts.sh from Criterion tests.
 *
 * Certificates: generate them once per test binary with these two hooks in the test file
 * (Criterion runs hooks in the runner process, before and after all tests; each test process
 * inherits FERRY_TEST_CERTS from it):
 *
 *     ReportHook(PRE_ALL)(struct criterion_test_set *set) { tu_certs_setup(); }
 *     ReportHook(POST_ALL)(struct criterion_global_stats *stats) { tu_certs_teardown(); }
 *
 * (they must be on two different lines: Criterion names hooks after __LINE__). Then
 * tu_cert_path("ca.pem") etc. name the files listed in tests/peers/mkcerts.sh: ca.pem,
 * good.{pem,key}, wronghost.*, expired.*, untrusted.* (signed by evilca.pem).
 *
 * Stand-in: tu_standin_start("good", "--jwks", path, NULL) starts an HTTPS stand-in with the
 * good certificate (NULL instead of "good" for plain http), waits until it answers and returns
 * a handle; tu_standin_stop() terminates it and reaps it. The child also gets PDEATHSIG and
 * watches its parent, so a crashing test leaves no process behind. Faults, headers, discovery
 * overrides and the JWKS file can be changed at runtime with tu_standin_control(), and request
 * counts read with tu_standin_count(). See the docstring of idp_standin.py for every option.
 */
#ifndef FERRY_TESTS_STANDIN_H
#define FERRY_TESTS_STANDIN_H

#include <stdbool.h>
#include <jansson.h>

/* Create a temporary directory, run mkcerts.sh into it and export FERRY_TEST_CERTS. Call from
 * a PRE_ALL hook. Returns 0 or -1 (and prints why to stderr). */
int tu_certs_setup(void);
/* Remove the directory made by tu_certs_setup (POST_ALL hook). */
void tu_certs_teardown(void);
/* "$FERRY_TEST_CERTS/name" as a new string, or NULL when certificates were not set up. */
char *tu_cert_path(const char *name);

typedef struct tu_standin tu_standin;

/* Start idp_standin.py. tls: NULL for plain http, or the base name of a certificate from
 * mkcerts.sh ("good", "wronghost", "expired", "untrusted"). The remaining arguments are extra
 * command-line arguments (const char *), terminated by NULL. Returns NULL on failure (with a
 * reason on stderr). */
tu_standin *tu_standin_start(const char *tls, ...);

/* Stop (SIGTERM, then SIGKILL after 5 s) and reap the process, free the handle. Accepts NULL. */
void tu_standin_stop(tu_standin *s);

int tu_standin_port(const tu_standin *s);
bool tu_standin_tls(const tu_standin *s);

/* "http(s)://127.0.0.1:PORT" ("[::1]" when started with --bind ::1) followed by path (which should
 * start with "/"), new string. */
char *tu_standin_url(const tu_standin *s, const char *path);

/* POST a control document (JSON text, see idp_standin.py) to /_control. 0 or -1. */
int tu_standin_control(const tu_standin *s, const char *json);

/* Set (mode non-NULL) or clear (NULL) the fault of one path. 0 or -1. */
int tu_standin_fault(const tu_standin *s, const char *path, const char *mode);

/* GET /_stats as a new JSON object, or NULL. */
json_t *tu_standin_stats(const tu_standin *s);

/* Requests seen for path (without query), or -1 when the stats cannot be read. */
long tu_standin_count(const tu_standin *s, const char *path);

/* TCP connections accepted, not counting those the test helpers made; -1 on error. */
long tu_standin_connections(const tu_standin *s);

#endif
