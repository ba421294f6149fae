/* tests/bench/bench_sigv4.c - cost of one ferry_sigv4_sign.
 *
 *   bench_sigv4 [-n SIGNS]
 *
 * Signs a KMS Decrypt-shaped request (POST /, five headers, a 234-byte JSON body, a session
 * token) SIGNS times (default 200,000) with the header form, then the same request presigned.
 * Output, one line per case:
 *   case=sign|presign signs=N us_per_sign=X signs_per_s=Y
 * Exit 1 if a signing fails or two signings of the same input differ.
 *
 * This is a benchmark, not a test: it is built only by `make bench`.
 */
#include "config.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ferry/error.h"
#include "ferry/sigv4.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    static const char body[] =
        "{\"CiphertextBlob\": \"AQICAHjzjtjUxrr7oc/BHmjyoZGeNk10osSeMGcIUzMNzeDJGwFgMNRznpAf"
        "p0NVhCb51fCxAAAAZDBiBgkqhkiG9w0BBwagVTBTAgEAME4GCSqGSIb3DQEHATAeBglghkgBZQMEAS4wEQQMo"
        "scSHCU4DuwIHyMJAgEQgCFhA83L4qw2T3PbG3MuM9pFUfTNwP/S4bnEwg6/U5BGGEI=\"}";
    ferry_sigv4_header hd[] = {
        {"Content-Length", "234"},
        {"Content-Type", "application/x-amz-json-1.1"},
        {"Host", "kms.us-east-1.amazonaws.com"},
        {"X-Amz-Target", "TrentService.Decrypt"},
        {"User-Agent", "ferry"},
    };
    ferry_sigv4_credentials cred = {"AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
                                    "FwoGZXIvYXdzEXAMPLEsessiontokenEXAMPLE"};
    ferry_sigv4_request req = {.method = "POST",
                               .path = "/",
                               .headers = hd,
                               .n_headers = 5,
                               .body = body,
                               .body_len = sizeof(body) - 1};
    ferry_sigv4_params par = {
        .region = "us-east-1", .service = "kms", .time = 1440938160, .expires = 900};
    long n = 200000;
    int c;

    while ((c = getopt(argc, argv, "n:")) != -1) {
        if (c != 'n' || (n = strtol(optarg, NULL, 10)) <= 0) {
            fprintf(stderr, "usage: bench_sigv4 [-n SIGNS]\n");
            return 2;
        }
    }
    for (int pre = 0; pre < 2; pre++) {
        ferry_sigv4_result first, res;
        char err[256];
        double t0;

        if ((pre ? ferry_sigv4_presign : ferry_sigv4_sign)(&cred, &req, &par, &first, err,
                                                           sizeof(err)) < 0) {
            fprintf(stderr, "bench_sigv4: %s\n", err);
            return 1;
        }
        t0 = now_s();
        for (long i = 0; i < n; i++) {
            if ((pre ? ferry_sigv4_presign : ferry_sigv4_sign)(&cred, &req, &par, &res, err,
                                                               sizeof(err)) < 0 ||
                strcmp(res.signature, first.signature) != 0) {
                fprintf(stderr, "bench_sigv4: signing %ld failed or differs: %s\n", i, err);
                return 1;
            }
            ferry_sigv4_result_clear(&res);
        }
        double dt = now_s() - t0;
        printf("case=%s signs=%ld us_per_sign=%.2f signs_per_s=%.0f\n", pre ? "presign" : "sign", n,
               dt * 1e6 / (double)n, (double)n / dt);
        ferry_sigv4_result_clear(&first);
    }
    return 0;
}
