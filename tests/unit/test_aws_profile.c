/* tests/unit/test_aws_profile.c - the AWS shared config and credentials files
 * (lib/cloud/aws_profile.c): sections of both kinds, which file wins, what is refused and how
 * the reasons name file and line without a value. Each Criterion test runs in its own
 * process, so the environment a test sets is its own. */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "ferry/error.h"
#include "lib/cloud/aws-profile.h"
#include "testutil.h"

#define KEY_ID "AKIAIOSFODNN7EXAMPLE"
#define CANARY "CANARYsecret/K7MDENG/bPxRfiCYEXAMPLEKEY"

static char dir[64];

/* Write the two files (NULL: absent) under a new directory and point the environment at it. */
static void files(const char *credentials, const char *config)
{
    char path[128];
    FILE *f;

    snprintf(dir, sizeof(dir), "/tmp/ferry-awsprof.XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/credentials", dir);
    cr_assert_eq(setenv("AWS_SHARED_CREDENTIALS_FILE", path, 1), 0);
    if (credentials) {
        cr_assert_not_null(f = fopen(path, "w"));
        fputs(credentials, f);
        fclose(f);
    }
    snprintf(path, sizeof(path), "%s/config", dir);
    cr_assert_eq(setenv("AWS_CONFIG_FILE", path, 1), 0);
    if (config) {
        cr_assert_not_null(f = fopen(path, "w"));
        fputs(config, f);
        fclose(f);
    }
    unsetenv("AWS_PROFILE");
}

static void cleanup(void)
{
    char cmd[128];

    if (dir[0]) {
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
        (void)system(cmd);
    }
}

TestSuite(aws_profile, .fini = cleanup);
TestSuite(aws_chain, .fini = cleanup);

Test(aws_profile, default_from_credentials_region_from_config)
{
    ferry_aws_profile p;
    char err[256] = "";

    files("# keys\n[default]\naws_access_key_id = " KEY_ID "\n"
          "aws_secret_access_key=" CANARY "\r\n  ; an indented comment line\n"
          "aws_session_token = tok/en+=\n[other]\naws_access_key_id = AKIAOTHEROTHEROTHER1\n"
          "aws_secret_access_key = x\n",
          "[default]\nregion = eu-west-1\noutput = json\ns3 =\n  max_concurrent_requests = 20\n"
          "[profile other]\nregion = us-east-2\n");
    cr_assert_eq(ferry_aws_profile_load(NULL, &p, err, sizeof(err)), 0, "%s", err);
    cr_assert_str_eq(p.name, "default");
    cr_assert_str_eq(p.creds.access_key_id, KEY_ID);
    cr_assert_str_eq(p.creds.secret_access_key, CANARY);
    cr_assert_str_eq(p.creds.session_token, "tok/en+=");
    cr_assert_str_eq(p.region, "eu-west-1");
    cr_assert_null(p.role_arn);
    ferry_aws_profile_clear(&p);
    cr_assert_null(p.creds.secret_access_key);

    /* AWS_PROFILE selects; "[profile other]" in the config file, "[other]" in credentials. */
    cr_assert_eq(setenv("AWS_PROFILE", "other", 1), 0);
    cr_assert_eq(ferry_aws_profile_load(NULL, &p, err, sizeof(err)), 0, "%s", err);
    cr_assert_str_eq(p.creds.access_key_id, "AKIAOTHEROTHEROTHER1");
    cr_assert_null(p.creds.session_token);
    cr_assert_str_eq(p.region, "us-east-2");
    ferry_aws_profile_clear(&p);
}

Test(aws_profile, credentials_file_wins_and_config_keys_alone_work)
{
    ferry_aws_profile p;
    char err[256] = "";

    files("[ci]\naws_access_key_id = AKIACREDENTIALSFILE1\naws_secret_access_key = a\n",
          "[profile ci]\naws_access_key_id = AKIACONFIGFILECONFIG\naws_secret_access_key = b\n"
          "[profile cfgonly]\nAWS_ACCESS_KEY_ID = AKIACONFIGFILECONFIG\n"
          "aws_secret_access_key = c\nregion = ap-south-1\n"
          "[ci]\nregion = us-west-2\n");
    cr_assert_eq(ferry_aws_profile_load("ci", &p, err, sizeof(err)), 0, "%s", err);
    cr_assert_str_eq(p.creds.access_key_id, "AKIACREDENTIALSFILE1");
    cr_assert_str_eq(p.creds.secret_access_key, "a");
    /* "[ci]" in the config file is not profile ci (only "[profile ci]" is). */
    cr_assert_str_eq(p.region, "");
    ferry_aws_profile_clear(&p);
    cr_assert_eq(ferry_aws_profile_load("cfgonly", &p, err, sizeof(err)), 0, "%s", err);
    cr_assert_str_eq(p.creds.secret_access_key, "c");
    cr_assert_str_eq(p.region, "ap-south-1");
    ferry_aws_profile_clear(&p);
}

Test(aws_profile, web_identity_role)
{
    ferry_aws_profile p;
    char err[256] = "";

    files(NULL, "[profile irsa]\nrole_arn = arn:aws:iam::123456789012:role/ferry\n"
                "web_identity_token_file = /var/run/secrets/token\n"
                "role_session_name = ferryd\nregion = us-east-1\n");
    cr_assert_eq(ferry_aws_profile_load("irsa", &p, err, sizeof(err)), 0, "%s", err);
    cr_assert_str_eq(p.role_arn, "arn:aws:iam::123456789012:role/ferry");
    cr_assert_str_eq(p.web_identity_token_file, "/var/run/secrets/token");
    cr_assert_str_eq(p.role_session_name, "ferryd");
    cr_assert_eq(p.creds.access_key_id[0], '\0');
    ferry_aws_profile_clear(&p);
}

Test(aws_profile, unsupported_sources_named)
{
    static const struct {
        const char *config, *word;
        int code;
    } cases[] = {
        {"[profile x]\ncredential_process = /usr/bin/cat /etc/shadow\n", "credential_process",
         -FERRY_EUNSUPPORTED},
        {"[profile x]\nrole_arn = arn:aws:iam::1:role/r\nsource_profile = default\n",
         "web_identity_token_file", -FERRY_EUNSUPPORTED},
        {"[profile x]\nsso_session = corp\n", "sso_session", -FERRY_EUNSUPPORTED},
        {"[profile x]\nregion = us-east-1\n", "no credentials", -ENOENT},
        {"[profile y]\naws_access_key_id = " KEY_ID "\n", "neither", -ENOENT},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        ferry_aws_profile p = {0};
        char err[256] = "";
        files(NULL, cases[i].config);
        cr_assert_eq(ferry_aws_profile_load("x", &p, err, sizeof(err)), cases[i].code, "%zu: %s",
                     i, err);
        cr_assert(strstr(err, cases[i].word), "%zu: %s", i, err);
        cr_assert_null(strstr(err, "/etc/shadow"), "%s", err);
        cleanup();
    }
}

Test(aws_profile, malformed_named_by_file_and_line_without_values)
{
    static const struct {
        const char *credentials, *want;
        int code;
    } cases[] = {
        {"[default]\naws_access_key_id = " KEY_ID "\naws_secret_access_key = " CANARY "\n"
         "aws_secret_access_key = " CANARY "\n",
         "credentials:4: aws_secret_access_key is already set on line 3", -FERRY_EDUPLICATE},
        {"[default\n", "credentials:1: a section header must end", -FERRY_EMALFORMED},
        {"[default]\n" CANARY "\n", "credentials:2: expected \"key = value\"",
         -FERRY_EMALFORMED},
        {"[default]\naws_access_key_id = short\naws_secret_access_key = " CANARY "\n",
         "credentials:2: aws_access_key_id: not 16..128", -FERRY_ECONFIG},
        {"[default]\naws_access_key_id = " KEY_ID "\n", "go together", -FERRY_ECONFIG},
        {"[default]\naws_secret_access_key = " CANARY "\xc3\xa9\n",
         "credentials:2: not printable", -FERRY_EMALFORMED},
        {"[default]\nregion = EU_WEST\naws_access_key_id = " KEY_ID "\n"
         "aws_secret_access_key = " CANARY "\n",
         "credentials:2: region", -FERRY_ECONFIG},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        ferry_aws_profile p = {0};
        char err[256] = "";
        files(cases[i].credentials, NULL);
        cr_assert_eq(ferry_aws_profile_load(NULL, &p, err, sizeof(err)), cases[i].code,
                     "%zu: %s", i, err);
        cr_assert(strstr(err, cases[i].want), "%zu: %s", i, err);
        cr_assert_null(strstr(err, "CANARY"), "%zu: a value in the reason: %s", i, err);
        cr_assert_null(p.creds.secret_access_key);
        cleanup();
    }
}

Test(aws_profile, limits)
{
    ferry_aws_profile p = {0};
    char err[256] = "";
    size_t big = FERRY_AWS_PROFILE_FILE_MAX + 1;
    char *s = malloc(big + 1);

    cr_assert_not_null(s);
    memset(s, '#', big);
    s[big] = '\0';
    files(s, NULL);
    cr_assert_eq(ferry_aws_profile_load(NULL, &p, err, sizeof(err)), -FERRY_ETOOBIG, "%s", err);
    cr_assert(strstr(err, "larger than"), "%s", err);
    cleanup();

    memset(s, 'a', FERRY_AWS_PROFILE_LINE_MAX + 1);
    s[FERRY_AWS_PROFILE_LINE_MAX + 1] = '\0';
    files(s, NULL);
    cr_assert_eq(ferry_aws_profile_load(NULL, &p, err, sizeof(err)), -FERRY_ETOOBIG, "%s", err);
    cr_assert(strstr(err, ":1: line longer"), "%s", err);
    cleanup();
    free(s);

    /* A directory (or anything not a regular file) in the file's place. */
    files(NULL, NULL);
    cr_assert_eq(mkdir(getenv("AWS_SHARED_CREDENTIALS_FILE"), 0700), 0);
    cr_assert_lt(ferry_aws_profile_load(NULL, &p, err, sizeof(err)), 0);
    cr_assert(strstr(err, "credentials"), "%s", err);

    /* Profile names with brackets or control bytes. */
    cr_assert_eq(ferry_aws_profile_load("a]b", &p, err, sizeof(err)), -FERRY_ECONFIG);
    cr_assert_eq(ferry_aws_profile_load("a\nb", &p, err, sizeof(err)), -FERRY_ECONFIG);
    cr_assert_eq(ferry_aws_profile_load(NULL, NULL, err, sizeof(err)), -EINVAL);
}

Test(aws_profile, no_files_no_home)
{
    ferry_aws_profile p = {0};
    char err[256] = "";

    unsetenv("AWS_SHARED_CREDENTIALS_FILE");
    unsetenv("AWS_CONFIG_FILE");
    unsetenv("HOME");
    cr_assert_eq(ferry_aws_profile_load(NULL, &p, err, sizeof(err)), -ENOENT, "%s", err);
    cr_assert(strstr(err, "neither"), "%s", err);
}

/* ---- the provider's chain when no role is configured ------------------------------------ */

static ferry_aws_config chain_config(void)
{
    ferry_aws_config c = {.region = "us-east-1", .sts_endpoint = "http://127.0.0.1:9"};

    c.http.allow_http_loopback = true;
    c.http.total_timeout_ms = 2000;
    return c;
}

static int chain_get(ferry_aws_credentials *creds, char *err, size_t errlen)
{
    ferry_aws_config c = chain_config();
    ferry_aws_provider *p = NULL;
    int r = ferry_aws_provider_new(&c, &p, err, errlen);

    if (r == 0)
        r = ferry_aws_provider_get(p, creds, err, errlen);
    ferry_aws_provider_free(p);
    return r;
}

static void no_env(void)
{
    unsetenv("AWS_ACCESS_KEY_ID");
    unsetenv("AWS_SECRET_ACCESS_KEY");
    unsetenv("AWS_SESSION_TOKEN");
    unsetenv("AWS_ROLE_ARN");
    unsetenv("AWS_WEB_IDENTITY_TOKEN_FILE");
}

Test(aws_chain, profile_static_keys_and_environment_first)
{
    ferry_aws_credentials c = {0};
    char err[512] = "";

    no_env();
    files("[default]\naws_access_key_id = " KEY_ID "\naws_secret_access_key = " CANARY "\n", NULL);
    cr_assert_eq(chain_get(&c, err, sizeof(err)), 0, "%s", err);
    cr_assert_str_eq(c.access_key_id, KEY_ID);
    cr_assert_str_eq(c.secret_access_key, CANARY);
    ferry_aws_credentials_clear(&c);

    setenv("AWS_ACCESS_KEY_ID", "AKIAENVIRONMENTKEY01", 1);
    setenv("AWS_SECRET_ACCESS_KEY", "env-secret", 1);
    cr_assert_eq(chain_get(&c, err, sizeof(err)), 0, "%s", err);
    cr_assert_str_eq(c.access_key_id, "AKIAENVIRONMENTKEY01");
    ferry_aws_credentials_clear(&c);
}

/* A web identity from the environment (EKS IRSA) or from the profile goes to STS with that
 * token file: the missing file is what stops it, so the chain chose it. */
Test(aws_chain, web_identity_from_environment_or_profile)
{
    ferry_aws_credentials c = {0};
    char err[512] = "";

    no_env();
    files("[default]\naws_access_key_id = " KEY_ID "\naws_secret_access_key = " CANARY "\n", NULL);
    setenv("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/irsa", 1);
    setenv("AWS_WEB_IDENTITY_TOKEN_FILE", "/nonexistent/ferry-irsa-token", 1);
    cr_assert_lt(chain_get(&c, err, sizeof(err)), 0);
    cr_assert(strstr(err, "web_identity_token_file"), "%s", err);
    cr_assert_null(c.secret_access_key);
    cleanup();

    no_env();
    files(NULL, "[profile wi]\nrole_arn = arn:aws:iam::123456789012:role/wi\n"
                "web_identity_token_file = /nonexistent/ferry-profile-token\n");
    setenv("AWS_PROFILE", "wi", 1);
    cr_assert_lt(chain_get(&c, err, sizeof(err)), 0);
    cr_assert(strstr(err, "web_identity_token_file"), "%s", err);

    setenv("AWS_ROLE_ARN", "not-an-arn", 1);
    setenv("AWS_WEB_IDENTITY_TOKEN_FILE", "/x", 1);
    cr_assert_eq(chain_get(&c, err, sizeof(err)), -FERRY_ECONFIG);
    cr_assert(strstr(err, "AWS_ROLE_ARN"), "%s", err);
}

Test(aws_chain, nothing_anywhere_or_a_broken_file)
{
    ferry_aws_credentials c = {0};
    char err[512] = "";

    no_env();
    files(NULL, NULL);
    cr_assert_eq(chain_get(&c, err, sizeof(err)), -FERRY_ECONFIG, "%s", err);
    cr_assert(strstr(err, "AWS_ACCESS_KEY_ID") && strstr(err, "AWS_ROLE_ARN") &&
                  strstr(err, "profile default"),
              "%s", err);
    cleanup();

    no_env();
    files("[default]\naws_secret_access_key = " CANARY "\naws_secret_access_key = x\n", NULL);
    cr_assert_eq(chain_get(&c, err, sizeof(err)), -FERRY_EDUPLICATE, "%s", err);
    cr_assert(strstr(err, "credentials:3"), "%s", err);
    cr_assert_null(strstr(err, "CANARY"), "%s", err);
    cleanup();

    /* /dev/null, as the AWS tools are told "no file". */
    no_env();
    setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null", 1);
    setenv("AWS_CONFIG_FILE", "/dev/null", 1);
    cr_assert_eq(chain_get(&c, err, sizeof(err)), -FERRY_ECONFIG, "%s", err);
    cr_assert(strstr(err, "neither"), "%s", err);
}
