/* ferry/secret.c - `ferry secret init | put | get | list | rm`: manage the sealed-file store
 * (the file backend) and fetch a secret by reference.
 *
 * A value is read from stdin or --from-file, never from argv (any user sees argv in ps), and
 * is written to stdout with write(2), not stdio, so no copy stays in a stdio buffer; every
 * buffer that held it is wiped. Exit codes (src/ferry/ferry.h): 0 done, 1 refused (no such
 * secret, store modified or sealed with another key), 2 usage or configuration (bad key file,
 * a backend that is not available yet).
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "basic/fileio.h"
#include "basic/macro.h"
#include "basic/mem.h"
#include "ferry/error.h"
#include "ferry/ferry.h"
#include "ferry/http.h"
#include "ferry/json.h"
#include "ferry/mint.h"
#include "ferry/secrets.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: ferry secret init [OPTIONS]\n"
            "       ferry secret put [OPTIONS] [--from-file PATH] NAME   (value on stdin)\n"
            "       ferry secret get [OPTIONS] REF\n"
            "       ferry secret list [OPTIONS]\n"
            "       ferry secret rm [OPTIONS] NAME\n"
            "       ferry secret rekey [OPTIONS] --new-key PATH\n"
            "\n"
            "Manage the sealed secret store (AES-256-GCM under a 0600 key file) and read secrets\n"
            "by reference (file:NAME; the other backends are served by ferryd). init creates the\n"
            "key file; put reads the value from stdin or --from-file (never from the command\n"
            "line) and stores it byte for byte; list prints names and versions, never values.\n"
            "\n"
            "  -d, --state-dir DIR   default directory of the store and key (" FERRY_STATEDIR ")\n"
            "  -s, --store PATH      store file (default DIR/secrets.store)\n"
            "  -k, --key PATH        key file (default DIR/secrets.key)\n"
            "  -f, --from-file PATH  put: read the value from PATH instead of stdin\n"
            "      --new-key PATH    rekey: create a new key file at PATH and re-seal every\n"
            "                        entry under it (the old key stops opening the store)\n"
            "  -c, --config FILE     get, put, list, rm: use the backends of FILE (put, list and\n"
            "                        rm: its file backend, whose key may be KMS-wrapped), a\n"
            "                        JSON object\n"
            "                        {\"secrets\": {BACKEND: {...}}, \"identity\": {\"state_dir\":\n"
            "                        DIR, \"issuer\": URL, \"subject\": SUB}} (identity: the\n"
            "                        ferry keys that mint the cloud backends' web identity)\n"
            "  -S, --server URL      get: ask ferryd at URL (GET /v1/secrets/REF; https, or http\n"
            "                        to 127.0.0.1 / [::1]) with the ferry access token in\n"
            "                        --token-file (default $FERRY_TOKEN_FILE)\n"
            "  -t, --token-file PATH get --server: file holding the bearer token\n"
            "      --ca-file PATH    get --server: trust anchors (PEM) instead of the system's\n"
            "  -h, --help            this text\n"
            "\n"
            "Exit status: 0 done, 1 refused (no such secret, store modified or sealed with\n"
            "another key), 2 usage or configuration error.\n");
}

typedef struct options {
    const char *state_dir, *store, *key, *from_file, *config, *server, *token_file, *ca_file;
    const char *new_key;
    char *store_buf, *key_buf;
} options;

static void options_release(options *o)
{
    free(o->store_buf);
    free(o->key_buf);
}

/* Parse argv (argv[0] = the verb) leaving optind at the operands. Returns 0, 1 after --help,
 * or -EINVAL (message printed). */
static int parse_options(int argc, char **argv, options *o)
{
    static const struct option longopts[] = {
        {"state-dir", required_argument, NULL, 'd'},
        {"store", required_argument, NULL, 's'},
        {"key", required_argument, NULL, 'k'},
        {"from-file", required_argument, NULL, 'f'},
        {"config", required_argument, NULL, 'c'},
        {"server", required_argument, NULL, 'S'},
        {"token-file", required_argument, NULL, 't'},
        {"ca-file", required_argument, NULL, 'A'},
        {"new-key", required_argument, NULL, 'N'},
        {"help", no_argument, NULL, 'h'},
        {},
    };
    int c;

    optind = 1;
    while ((c = getopt_long(argc, argv, "+d:s:k:f:c:S:t:h", longopts, NULL)) != -1) {
        if ((c == 'S' || c == 't' || c == 'A') && strcmp(argv[0], "get") != 0) {
            fprintf(stderr, "ferry secret %s: --server, --token-file and --ca-file are get "
                            "options\n",
                    argv[0]);
            return -EINVAL;
        }
        switch (c) {
        case 'N':
            if (strcmp(argv[0], "rekey") != 0) {
                fprintf(stderr, "ferry secret %s: --new-key is a rekey option\n", argv[0]);
                return -EINVAL;
            }
            o->new_key = optarg;
            break;
        case 'S':
            o->server = optarg;
            break;
        case 't':
            o->token_file = optarg;
            break;
        case 'A':
            o->ca_file = optarg;
            break;
        case 'd':
            o->state_dir = optarg;
            break;
        case 's':
            o->store = optarg;
            break;
        case 'k':
            o->key = optarg;
            break;
        case 'f':
            if (strcmp(argv[0], "put") != 0) {
                fprintf(stderr, "ferry secret %s: --from-file is a put option\n", argv[0]);
                return -EINVAL;
            }
            o->from_file = optarg;
            break;
        case 'c':
            if (strcmp(argv[0], "init") == 0 || strcmp(argv[0], "rekey") == 0) {
                fprintf(stderr, "ferry secret %s: --config is not a%s option (a KMS-wrapped "
                                "key is made with `aws kms encrypt`)\n",
                        argv[0], argv[0][0] == 'i' ? "n init" : " rekey");
                return -EINVAL;
            }
            o->config = optarg;
            break;
        case 'h':
            usage(stdout);
            return 1;
        default:
            usage(stderr);
            return -EINVAL;
        }
    }
    if (strcmp(argv[0], "rekey") == 0 && !o->new_key) {
        fprintf(stderr, "ferry secret rekey: --new-key PATH is required\n");
        return -EINVAL;
    }
    if (o->server && o->config) {
        fprintf(stderr, "ferry secret get: --server and --config exclude each other\n");
        return -EINVAL;
    }
    if ((o->token_file || o->ca_file) && !o->server) {
        fprintf(stderr, "ferry secret get: --token-file and --ca-file go with --server\n");
        return -EINVAL;
    }
    if (!o->state_dir)
        o->state_dir = FERRY_STATEDIR;
    if ((!o->store && asprintf(&o->store_buf, "%s/secrets.store", o->state_dir) < 0) ||
        (!o->key && asprintf(&o->key_buf, "%s/secrets.key", o->state_dir) < 0)) {
        fprintf(stderr, "ferry secret: out of memory\n");
        return -ENOMEM;
    }
    if (!o->store)
        o->store = o->store_buf;
    if (!o->key)
        o->key = o->key_buf;
    return 0;
}

static int exit_for(int r)
{
    return r == -ENOENT || r == -FERRY_EBADSIG || r == -FERRY_EMALFORMED ? FERRY_EXIT_REFUSED
                                                                         : FERRY_EXIT_USAGE;
}

/* Read the value from fd into a new locked value: at most FERRY_SECRET_VALUE_MAX bytes (one
 * more is an error). read(2) straight into the locked pages, no stdio copy. */
static int read_value(int fd, ferry_secret_value **ret)
{
    ferry_secret_value *v = NULL;
    size_t have = 0;
    int r;

    r = ferry_secret_value_new(FERRY_SECRET_VALUE_MAX, &v);
    if (r < 0)
        return r;
    for (;;) {
        unsigned char extra;
        ssize_t got;
        if (have < FERRY_SECRET_VALUE_MAX)
            got = read(fd, v->data + have, FERRY_SECRET_VALUE_MAX - have);
        else
            got = read(fd, &extra, 1);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0) {
            r = -errno;
            break;
        }
        if (got == 0)
            break;
        if (have == FERRY_SECRET_VALUE_MAX) {
            ferry_wipe(&extra, 1);
            r = -FERRY_ETOOBIG;
            break;
        }
        have += (size_t)got;
    }
    if (r < 0) {
        ferry_secret_value_free(v);
        return r;
    }
    v->len = have;
    *ret = v;
    return 0;
}

static int cmd_init(const options *o)
{
    char err[512];
    int r = ferry_secret_store_init_key(o->store, o->key, err, sizeof(err));

    if (r < 0) {
        fprintf(stderr, "ferry secret init: %s\n", err[0] ? err : ferry_strerror(r));
        return r == -EEXIST ? FERRY_EXIT_REFUSED : FERRY_EXIT_USAGE;
    }
    fprintf(stderr, "ferry secret init: key created in %s (mode 0600); store %s\n", o->key,
            o->store);
    return FERRY_EXIT_OK;
}

/* --config: the identity that mints the cloud backends' web identity tokens. */
typedef struct identity {
    ferry_mint *mint;
    const char *issuer, *subject;
} identity;

static int mint_identity(void *userdata, const char *audience, char **ret_token, char *errbuf,
                         size_t errlen)
{
    identity *idn = userdata;
    const char *aud[] = {audience};
    ferry_mint_request req = {
        .subject = idn->subject,
        .audience = aud,
        .n_audience = 1,
        .client_id = "ferry",
        .ttl = 300,
        .src_iss = idn->issuer,
        .src_sub = idn->subject,
    };
    char jti[FERRY_MINT_JTI_LEN + 1];
    int r = ferry_mint_token(idn->mint, &req, ret_token, jti, NULL);

    if (r < 0)
        snprintf(errbuf, errlen, "minting the web identity token failed: %s", ferry_strerror(r));
    return r;
}

/* Read --config: {"secrets": {...}, "identity": {"state_dir", "issuer", "subject"}}; unknown
 * members are refused. On success *ret_conf is the document, *idn and *env are set up. */
static int load_config(const options *o, json_t **ret_conf, identity *idn, ferry_secrets_env *env)
{
    char *text = NULL, err[512] = "";
    size_t len = 0;
    json_t *conf = NULL, *id, *v;
    const char *key;
    int r;

    r = ferry_read_regular_file(o->config, 1 << 20, &text, &len);
    if (r < 0) {
        fprintf(stderr, "ferry secret: %s: %s\n", o->config, ferry_strerror(r));
        return r;
    }
    r = ferry_json_parse(text, len, 1 << 20, 32, &conf, err, sizeof(err));
    free(text);
    if (r < 0 || !json_is_object(conf)) {
        fprintf(stderr, "ferry secret: %s: not a JSON object%s%s\n", o->config,
                err[0] ? ": " : "", err);
        json_decref(conf);
        return r < 0 ? r : -FERRY_ECONFIG;
    }
    json_object_foreach(conf, key, v)
    {
        static const char section[] = "secrets"; /* a member name, not a secret */
        if (strcmp(key, section) != 0 && strcmp(key, "identity") != 0) {
            fprintf(stderr, "ferry secret: %s: unknown member \"%.64s\"\n", o->config, key);
            json_decref(conf);
            return -FERRY_ECONFIG;
        }
    }
    id = json_object_get(conf, "identity");
    if (id) {
        json_t *sd = json_object_get(id, "state_dir"), *is = json_object_get(id, "issuer"),
               *sub = json_object_get(id, "subject");
        ferry_mint_options mo = {0};

        json_object_foreach(id, key, v)
        {
            if (strcmp(key, "state_dir") != 0 && strcmp(key, "issuer") != 0 &&
                strcmp(key, "subject") != 0) {
                fprintf(stderr, "ferry secret: %s: identity: unknown member \"%.64s\"\n",
                        o->config, key);
                json_decref(conf);
                return -FERRY_ECONFIG;
            }
        }
        if (!json_is_string(sd) || !json_is_string(is) || !json_is_string(sub)) {
            fprintf(stderr,
                    "ferry secret: %s: identity needs state_dir, issuer and subject "
                    "strings\n",
                    o->config);
            json_decref(conf);
            return -FERRY_ECONFIG;
        }
        mo.state_dir = json_string_value(sd);
        mo.issuer = json_string_value(is);
        mo.flags = FERRY_MINT_NO_GENERATE; /* READ_ONLY would not load the private key */
        r = ferry_mint_open(&mo, &idn->mint, err, sizeof(err));
        if (r < 0) {
            fprintf(stderr, "ferry secret: identity: %s\n", err[0] ? err : ferry_strerror(r));
            json_decref(conf);
            return r;
        }
        idn->issuer = json_string_value(is);
        idn->subject = json_string_value(sub);
        env->web_identity_token = mint_identity;
        env->web_identity_userdata = idn;
    }
    *ret_conf = conf;
    return 0;
}

/* The store put, list and rm work on: the one of --store and --key, or with --config the file
 * backend's (whose key may be KMS-wrapped, so the backends and the identity come along). */
typedef struct store_handle {
    ferry_secret_store *st; /* owned unless s is set */
    ferry_secrets *s;
    json_t *conf;
    identity idn;
} store_handle;

static void close_store(store_handle *h)
{
    if (!h->s)
        ferry_secret_store_free(h->st);
    ferry_secrets_free(h->s);
    ferry_mint_free(h->idn.mint);
    json_decref(h->conf);
    *h = (store_handle){0};
}

static int open_store(const options *o, const char *verb, store_handle *h)
{
    ferry_secrets_env env = {0};
    char err[768] = "";
    int r;

    *h = (store_handle){0};
    if (!o->config)
        r = ferry_secret_store_open(o->store, o->key, &h->st, err, sizeof(err));
    else if ((r = load_config(o, &h->conf, &h->idn, &env)) < 0)
        err[0] = '\0'; /* load_config printed why */
    else if ((r = ferry_secrets_new(json_object_get(h->conf, "secrets"), &env, &h->s, err,
                                    sizeof(err))) == 0)
        r = ferry_secrets_file_store(h->s, &h->st, err, sizeof(err));
    if (r < 0) {
        if (err[0] || !o->config)
            fprintf(stderr, "ferry secret %s: %s\n", verb, err[0] ? err : ferry_strerror(r));
        close_store(h);
    }
    return r;
}

static int cmd_put(const options *o, const char *name)
{
    store_handle h;
    ferry_secret_value *v = NULL;
    uint64_t version = 0;
    char err[512];
    int fd = STDIN_FILENO, r, rc = FERRY_EXIT_USAGE;

    if (ferry_secret_name_check(name, err, sizeof(err)) < 0) {
        fprintf(stderr, "ferry secret put: %s\n", err);
        return FERRY_EXIT_USAGE;
    }
    if (open_store(o, "put", &h) < 0)
        return FERRY_EXIT_USAGE;
    if (o->from_file) {
        struct stat sb;
        fd = open(o->from_file, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
        if (fd < 0 || fstat(fd, &sb) < 0 || !S_ISREG(sb.st_mode)) {
            fprintf(stderr, "ferry secret put: %s: %s\n", o->from_file,
                    fd < 0 ? strerror(errno) : "not a regular file");
            goto out;
        }
    } else if (isatty(STDIN_FILENO))
        fprintf(stderr, "ferry secret put: reading the value from stdin (end with Ctrl-D)\n");
    r = read_value(fd, &v);
    if (r < 0) {
        fprintf(stderr, "ferry secret put: cannot read the value: %s\n",
                r == -FERRY_ETOOBIG ? "larger than 65536 bytes" : ferry_strerror(r));
        goto out;
    }
    r = ferry_secret_store_put(h.st, name, v->data, v->len, &version, err, sizeof(err));
    if (r < 0) {
        fprintf(stderr, "ferry secret put: %s\n", err[0] ? err : ferry_strerror(r));
        rc = exit_for(r);
        goto out;
    }
    fprintf(stderr, "ferry secret put: %s version %" PRIu64 "\n", name, version);
    rc = FERRY_EXIT_OK;
out:
    if (fd >= 0 && fd != STDIN_FILENO)
        close(fd);
    ferry_secret_value_free(v);
    close_store(&h);
    return rc;
}

#define TOKEN_FILE_MAX 16384 /* bytes of a bearer token file */
#define ANSWER_MAX (FERRY_SECRET_VALUE_MAX + 4096)

/* The path of ref as ferryd's route wants it: "/v1/secrets/" and the canonical reference with
 * every byte but unreserved ones, ':' and '/' percent-encoded ('#' must not end the path). */
static char *secrets_url(const char *server, const char *canonical)
{
    size_t sl = strlen(server), n = strlen(canonical);
    char *u = malloc(sl + sizeof("/v1/secrets/") + 3 * n), *p;

    if (!u)
        return NULL;
    while (sl && server[sl - 1] == '/')
        sl--;
    memcpy(u, server, sl);
    p = u + sl;
    p = stpcpy(p, "/v1/secrets/");
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)canonical[i];
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            strchr("-._~:/", c))
            *p++ = (char)c;
        else {
            static const char hex[] = "0123456789ABCDEF";
            *p++ = '%';
            *p++ = hex[c >> 4];
            *p++ = hex[c & 15];
        }
    }
    *p = '\0';
    return u;
}

/* The bearer token from path: one line of b64token characters (RFC 6750), a trailing newline
 * allowed. Returns a new string or NULL (reason printed, never the token). */
static char *read_token(const char *path)
{
    char *t = NULL;
    size_t len = 0;
    int r = ferry_read_regular_file(path, TOKEN_FILE_MAX, &t, &len);

    if (r < 0) {
        fprintf(stderr, "ferry secret get: token file %s: %s\n", path,
                r == -EFBIG ? "larger than 16 KiB" : ferry_strerror(r));
        return NULL;
    }
    while (len && (t[len - 1] == '\n' || t[len - 1] == '\r' || t[len - 1] == ' '))
        t[--len] = '\0';
    bool ok = len > 0;
    for (size_t i = 0; ok && i < len; i++)
        ok = (t[i] >= 'a' && t[i] <= 'z') || (t[i] >= 'A' && t[i] <= 'Z') ||
             (t[i] >= '0' && t[i] <= '9') || strchr("-._~+/=", t[i]);
    if (!ok) {
        fprintf(stderr, "ferry secret get: token file %s: not one bearer token (b64token)\n",
                path);
        ferry_wipe(t, len);
        free(t);
        return NULL;
    }
    return t;
}

/* Print ferryd's refusal: its OAuth-style error code and description, when they are short
 * printable strings; nothing else of the body. */
static void print_refusal(const ferry_http_response *resp)
{
    json_t *j = NULL, *e, *d;
    const char *code = NULL, *desc = NULL;

    if (resp->content_type && strncasecmp(resp->content_type, "application/json", 16) == 0 &&
        ferry_json_parse(resp->body, resp->body_len, 4096, 4, &j, NULL, 0) == 0 &&
        json_is_object(j)) {
        e = json_object_get(j, "error");
        d = json_object_get(j, "error_description");
        if (json_is_string(e) && json_string_length(e) <= 64)
            code = json_string_value(e);
        if (json_is_string(d) && json_string_length(d) <= 512)
            desc = json_string_value(d);
    }
    fprintf(stderr, "ferry secret get: ferryd answered %ld%s%s%s%s\n", resp->status,
            code ? " " : "", code ? code : "", desc ? ": " : "", desc ? desc : "");
    json_decref(j);
}

/* get --server: GET /v1/secrets/REF from ferryd with the bearer token. */
static int remote_get(const options *o, const ferry_secret_ref *ref)
{
    const char *tf = o->token_file ? o->token_file : secure_getenv("FERRY_TOKEN_FILE");
    _cleanup_free_ char *url = NULL, *auth = NULL;
    char *tok = NULL;
    ferry_http_options ho = {.ca_file = o->ca_file, .allow_http_loopback = true,
                             .max_response = ANSWER_MAX, .max_redirects = 0};
    ferry_http_response resp = {0};
    int r, rc = FERRY_EXIT_USAGE;

    if (!tf || !*tf) {
        fprintf(stderr, "ferry secret get: --server needs --token-file or $FERRY_TOKEN_FILE\n");
        return FERRY_EXIT_USAGE;
    }
    url = secrets_url(o->server, ref->canonical);
    if (!url || ferry_http_check_url(url, &ho) < 0) {
        fprintf(stderr, "ferry secret get: --server %s: not an https URL (or http to "
                        "127.0.0.1 / [::1])\n",
                o->server);
        return FERRY_EXIT_USAGE;
    }
    tok = read_token(tf);
    if (!tok)
        return FERRY_EXIT_USAGE;
    if (asprintf(&auth, "Authorization: Bearer %s", tok) < 0)
        auth = NULL;
    ferry_wipe(tok, strlen(tok));
    free(tok);
    if (!auth)
        return FERRY_EXIT_USAGE;
    const char *hdrs[] = {auth, "Accept: application/octet-stream, application/json"};
    ferry_http_request req = {.method = "GET", .url = url, .headers = hdrs, .n_headers = 2,
                              .sensitive = true};
    r = ferry_http_request_send(&req, &ho, &resp);
    ferry_wipe(auth, strlen(auth));
    if (r < 0) {
        fprintf(stderr, "ferry secret get: %s: %s\n", o->server,
                r == -FERRY_ETOOBIG ? "answer too large" : ferry_strerror(r));
        return FERRY_EXIT_USAGE;
    }
    if (resp.status == 200) {
        r = fflush(stdout) == EOF ? -EIO : ferry_write_all(STDOUT_FILENO, resp.body,
                                                            resp.body_len);
        if (r < 0)
            fprintf(stderr, "ferry secret get: cannot write to stdout: %s\n",
                    ferry_strerror(r));
        else
            rc = FERRY_EXIT_OK;
    } else {
        print_refusal(&resp);
        /* The caller was told no (auth, policy, no such secret); else ferryd or its backend
         * failed. */
        rc = resp.status == 401 || resp.status == 403 || resp.status == 404 ? FERRY_EXIT_REFUSED
                                                                            : FERRY_EXIT_USAGE;
    }
    ferry_http_response_release(&resp);
    return rc;
}

static int cmd_get(const options *o, const char *ref)
{
    ferry_secrets *s = NULL;
    ferry_secret_value *v = NULL;
    ferry_secret_ref *parsed;
    json_t *conf = NULL;
    identity idn = {0};
    ferry_secrets_env env = {0};
    char err[768];
    int r, rc = FERRY_EXIT_USAGE;

    parsed = malloc(sizeof(*parsed));
    if (!parsed)
        return FERRY_EXIT_USAGE;
    r = ferry_secret_ref_parse(ref, parsed, err, sizeof(err));
    if (r < 0) {
        fprintf(stderr, "ferry secret get: bad reference: %s\n", err);
        goto out;
    }
    if (o->server) {
        rc = remote_get(o, parsed);
        goto out;
    }
    if (o->config) {
        r = load_config(o, &conf, &idn, &env);
        if (r < 0)
            goto out;
    } else if (parsed->backend != FERRY_SECRET_FILE) {
        fprintf(stderr, "ferry secret get: backend %s needs --config FILE (its section and the "
                        "identity)\n",
                ferry_secret_backend_name(parsed->backend));
        goto out;
    } else {
        conf = json_pack("{s:{s:s,s:s}}", "file", "store", o->store, "key", o->key);
        if (!conf)
            goto out;
    }
    r = ferry_secrets_new(o->config ? json_object_get(conf, "secrets") : conf, &env, &s, err,
                          sizeof(err));
    if (r < 0) {
        fprintf(stderr, "ferry secret get: %s\n", err[0] ? err : ferry_strerror(r));
        goto out;
    }
    r = ferry_secrets_fetch(s, parsed->canonical, NULL, &v, err, sizeof(err));
    if (r < 0) {
        fprintf(stderr, "ferry secret get: %s\n", err[0] ? err : ferry_strerror(r));
        rc = exit_for(r);
        goto out;
    }
    r = fflush(stdout) == EOF ? -EIO : ferry_write_all(STDOUT_FILENO, v->data, v->len);
    if (r < 0) {
        fprintf(stderr, "ferry secret get: cannot write to stdout: %s\n", ferry_strerror(r));
        goto out;
    }
    rc = FERRY_EXIT_OK;
out:
    ferry_secret_value_free(v);
    ferry_secrets_free(s);
    ferry_mint_free(idn.mint);
    json_decref(conf);
    free(parsed);
    return rc;
}

static int cmd_list(const options *o)
{
    store_handle h;
    ferry_secret_entry_info *e = NULL;
    size_t n = 0;
    char err[512];
    int r;

    if (open_store(o, "list", &h) < 0)
        return FERRY_EXIT_USAGE;
    r = ferry_secret_store_list(h.st, &e, &n, err, sizeof(err));
    close_store(&h);
    if (r < 0) {
        fprintf(stderr, "ferry secret list: %s\n", err[0] ? err : ferry_strerror(r));
        return exit_for(r);
    }
    for (size_t i = 0; i < n; i++) {
        char when[32] = "?";
        time_t t = (time_t)e[i].created;
        struct tm tm;
        if (gmtime_r(&t, &tm))
            (void)strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
        printf("%s\t%" PRIu64 "\t%s\n", e[i].name, e[i].version, when);
    }
    free(e);
    return fflush(stdout) == EOF ? FERRY_EXIT_USAGE : FERRY_EXIT_OK;
}

static int cmd_rm(const options *o, const char *name)
{
    store_handle h;
    char err[512];
    int r;

    if (open_store(o, "rm", &h) < 0)
        return FERRY_EXIT_USAGE;
    r = ferry_secret_store_rm(h.st, name, err, sizeof(err));
    close_store(&h);
    if (r < 0) {
        fprintf(stderr, "ferry secret rm: %s\n", err[0] ? err : ferry_strerror(r));
        return exit_for(r);
    }
    return FERRY_EXIT_OK;
}

static int cmd_rekey(const options *o)
{
    store_handle h;
    char err[512];
    int r;

    if (open_store(o, "rekey", &h) < 0)
        return FERRY_EXIT_USAGE;
    r = ferry_secret_store_rekey(h.st, o->new_key, err, sizeof(err));
    close_store(&h);
    if (r < 0) {
        fprintf(stderr, "ferry secret rekey: %s\n", err[0] ? err : ferry_strerror(r));
        return r == -EEXIST ? FERRY_EXIT_REFUSED : exit_for(r);
    }
    fprintf(stderr,
            "ferry secret rekey: %s re-sealed under the new key %s; %s no longer opens it: "
            "point --key (or the file backend's \"key\") at the new key, then remove the old "
            "one\n",
            o->store, o->new_key, o->key);
    return FERRY_EXIT_OK;
}

int ferry_cmd_secret(int argc, char **argv)
{
    static const struct {
        const char *verb;
        int operands; /* 0 or 1 */
    } verbs[] = {{"init", 0}, {"put", 1}, {"get", 1}, {"list", 0}, {"rm", 1}, {"rekey", 0}};
    options o = {0};
    size_t i;
    int r, rc;

    if (argc < 2) {
        usage(stderr);
        return FERRY_EXIT_USAGE;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage(stdout);
        return FERRY_EXIT_OK;
    }
    for (i = 0; i < ARRAY_SIZE(verbs); i++)
        if (strcmp(argv[1], verbs[i].verb) == 0)
            break;
    if (i == ARRAY_SIZE(verbs)) {
        fprintf(stderr, "ferry secret: unknown subcommand '%s'\n", argv[1]);
        usage(stderr);
        return FERRY_EXIT_USAGE;
    }
    argc--, argv++;
    r = parse_options(argc, argv, &o);
    if (r != 0) {
        options_release(&o);
        return r > 0 ? FERRY_EXIT_OK : FERRY_EXIT_USAGE;
    }
    if (argc - optind != verbs[i].operands) {
        fprintf(stderr, "ferry secret %s: expected %s%s\n", argv[0],
                verbs[i].operands ? "exactly one operand" : "no operand",
                i == 1 ? " (the value is read from stdin or --from-file, never from the command "
                         "line)"
                       : "");
        options_release(&o);
        return FERRY_EXIT_USAGE;
    }
    switch (i) {
    case 0:
        rc = cmd_init(&o);
        break;
    case 1:
        rc = cmd_put(&o, argv[optind]);
        break;
    case 2:
        rc = cmd_get(&o, argv[optind]);
        break;
    case 3:
        rc = cmd_list(&o);
        break;
    case 4:
        rc = cmd_rm(&o, argv[optind]);
        break;
    default:
        rc = cmd_rekey(&o);
        break;
    }
    options_release(&o);
    return rc;
}
