/* mmembed command line: serve, check-config, render-nginx, version. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mmembed/buf.h"
#include "mmembed/conf.h"
#include "mmembed/embed.h"
#include "mmembed/serve.h"
#include "mmembed/tokenizer.h"

#include <json-c/json.h>

static void usage(void)
{
    fprintf(stderr,
            "usage: mmembed serve -c FILE [-d]          run the master and its workers (-d: daemonize)\n"
            "       mmembed check-config -c FILE        validate a config (and load its models)\n"
            "       mmembed render-nginx -c FILE -t TEMPLATE -p PREFIX [-w WWW] [-o OUT]\n"
            "                                           write the nginx config for this pool\n"
            "       mmembed embed --model DIR (--text T | --image FILE)... [--no-normalize]\n"
            "                                           print embeddings as JSON (no server needed)\n"
            "       mmembed tokenize --model DIR --text T   print the token ids as JSON\n"
            "       mmembed version\n");
}

static const char *opt(int argc, char **argv, const char *name)
{
    for (int i = 2; i < argc - 1; i++)
        if (strcmp(argv[i], name) == 0) return argv[i + 1];
    return NULL;
}

static int has(int argc, char **argv, const char *name)
{
    for (int i = 2; i < argc; i++)
        if (strcmp(argv[i], name) == 0) return 1;
    return 0;
}

static int cmd_check(const char *path)
{
    static mm_conf_t c;
    char err[MM_ERRLEN * 2];
    if (mm_conf_load(path, &c, err, sizeof err) != MM_OK) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    mm_embed_t *e = NULL;
    if (mm_embed_load(&c, &e, err, sizeof err) != MM_OK) {
        fprintf(stderr, "%s:0: %s\n", c.file, err);
        return 1;
    }
    mm_embed_free(e);
    printf("mmembed: the configuration file %s syntax is ok\nmmembed: configuration file %s test is successful\n",
           path, path);
    return 0;
}

/* Replace every @KEY@ in the template. */
static int cmd_render(const char *conf_path, const char *tmpl, const char *prefix, const char *www, const char *out)
{
    static mm_conf_t c;
    char err[MM_ERRLEN * 2];
    if (mm_conf_load(conf_path, &c, err, sizeof err) != MM_OK) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    FILE *f = fopen(tmpl, "r");
    if (!f) {
        fprintf(stderr, "mmembed: cannot read %s: %s\n", tmpl, strerror(errno));
        return 1;
    }
    mm_buf_t t, servers, o;
    mm_buf_init(&t);
    mm_buf_init(&servers);
    mm_buf_init(&o);
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) mm_buf_append(&t, chunk, n);
    fclose(f);
    for (int i = 0; i < c.workers; i++) {
        char addr[MM_PATH_MAX];
        int is_unix = mm_conf_worker_addr(&c, i, addr, sizeof addr);
        mm_buf_printf(&servers, "        server %s%s max_fails=0;\n", is_unix ? "unix:" : "", addr);
    }
    char oaddr[MM_PATH_MAX];
    int ounix = mm_conf_overflow_addr(&c, oaddr, sizeof oaddr);
    if (ounix >= 0)
        mm_buf_printf(&servers, "        # answers 503 + Retry-After when every worker is busy or restarting\n"
                                "        server %s%s backup max_fails=0;\n", ounix ? "unix:" : "", oaddr);
    char user_line[160] = "";
    if (geteuid() == 0)
        snprintf(user_line, sizeof user_line, "user %s %s;", c.user[0] ? c.user : "root",
                 c.group[0] ? c.group : (c.user[0] ? c.user : "root"));
    char body[32], tries[16], rt[32], nt[32];
    snprintf(body, sizeof body, "%lld", (long long)c.max_body_bytes);
    snprintf(tries, sizeof tries, "%d", c.http_tries ? c.http_tries : c.workers + (ounix >= 0));
    snprintf(rt, sizeof rt, "%d", (int)c.request_timeout + 5);
    snprintf(nt, sizeof nt, "%d", (int)c.request_timeout + 15);
    char zone[512] = "", limit[256] = "";
    if (c.http_rate > 0) {
        snprintf(zone, sizeof zone,
                 "    map $http_authorization $mm_limit_key {\n        default $http_authorization;\n"
                 "        \"\" $binary_remote_addr;\n    }\n"
                 "    limit_req_zone $mm_limit_key zone=mmembed_rl:10m rate=%ldr/m;",
                 (long)(c.http_rate * 60 + 0.5));
        snprintf(limit, sizeof limit, "            limit_req zone=mmembed_rl burst=%d nodelay;\n"
                                      "            limit_req_status 429;", c.http_burst);
    }
    const char *keys[][2] = {{"@LIMIT_REQ_ZONE@", zone}, {"@LIMIT_REQ@", limit},{"@UPSTREAM_SERVERS@", servers.data}, {"@HTTP_LISTEN@", c.http_listen},
                             {"@CLIENT_MAX_BODY_SIZE@", body}, {"@TRIES@", tries}, {"@READ_TIMEOUT@", rt}, {"@NEXT_TIMEOUT@", nt},
                             {"@PREFIX@", prefix}, {"@WWW@", www}, {"@USER_LINE@", user_line}};
    for (const char *p = t.data; p && *p;) {
        int hit = 0;
        if (*p == '@')
            for (size_t k = 0; k < MM_ARRAY_LEN(keys); k++) {
                size_t kl = strlen(keys[k][0]);
                if (strncmp(p, keys[k][0], kl) == 0) {
                    mm_buf_puts(&o, keys[k][1]);
                    p += kl;
                    hit = 1;
                    break;
                }
            }
        if (!hit) mm_buf_append(&o, p++, 1);
    }
    FILE *w = out ? fopen(out, "w") : stdout;
    if (!w) {
        fprintf(stderr, "mmembed: cannot write %s: %s\n", out, strerror(errno));
        return 1;
    }
    fwrite(o.data, 1, o.len, w);
    if (out) fclose(w);
    mm_buf_free(&t);
    mm_buf_free(&servers);
    mm_buf_free(&o);
    return 0;
}

static int cmd_embed(int argc, char **argv)
{
    const char *dir = opt(argc, argv, "--model");
    const char **texts = calloc((size_t)argc, sizeof *texts), **images = calloc((size_t)argc, sizeof *images);
    int nt = 0, ni = 0, normalize = 1;
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--text") == 0 && i + 1 < argc) texts[nt++] = argv[++i];
        else if (strcmp(argv[i], "--image") == 0 && i + 1 < argc) images[ni++] = argv[++i];
        else if (strcmp(argv[i], "--no-normalize") == 0) normalize = 0;
        else if (strcmp(argv[i], "--model") == 0 && i + 1 < argc) i++;
        else {
            fprintf(stderr, "mmembed embed: unexpected argument '%s'\n", argv[i]);
            return 2;
        }
    }
    if (!dir || nt + ni == 0) {
        usage();
        return 2;
    }
    mm_buf_t out;
    mm_buf_init(&out);
    char err[MM_ERRLEN * 2];
    int rc = mm_embed_cli(dir, texts, nt, images, ni, normalize, &out, err, sizeof err);
    if (rc == MM_OK) fwrite(out.data, 1, out.len, stdout);
    else fprintf(stderr, "mmembed embed: %s\n", err);
    mm_buf_free(&out);
    free(texts);
    free(images);
    return rc == MM_OK ? 0 : 1;
}


static int cmd_tokenize(int argc, char **argv)
{
    const char *dir = opt(argc, argv, "--model"), *text = opt(argc, argv, "--text");
    if (!dir || !text) {
        usage();
        return 2;
    }
    char err[MM_ERRLEN] = "";
    mm_buf_t out;
    mm_buf_init(&out);
    int rc = mm_embed_tokenize_cli(dir, text, &out, err, sizeof err);
    if (rc == MM_OK) fwrite(out.data, 1, out.len, stdout);
    else fprintf(stderr, "mmembed tokenize: %s\n", err);
    mm_buf_free(&out);
    return rc == MM_OK ? 0 : 1;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage();
        return 2;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
        printf("mmembed %s\n", MM_VERSION);
        return 0;
    }
    if (strcmp(cmd, "embed") == 0) return cmd_embed(argc, argv);
    if (strcmp(cmd, "tokenize") == 0) return cmd_tokenize(argc, argv);
    const char *conf = opt(argc, argv, "-c");
    if (strcmp(cmd, "serve") == 0) {
        if (!conf) return usage(), 2;
        return mm_master_run(conf, has(argc, argv, "-d"));
    }
    if (strcmp(cmd, "check-config") == 0) {
        if (!conf) return usage(), 2;
        return cmd_check(conf);
    }
    if (strcmp(cmd, "render-nginx") == 0) {
        const char *t = opt(argc, argv, "-t"), *p = opt(argc, argv, "-p");
        if (!conf || !t || !p) return usage(), 2;
        const char *www = opt(argc, argv, "-w");
        return cmd_render(conf, t, p, www ? www : "/nonexistent", opt(argc, argv, "-o"));
    }
    usage();
    return 2;
}
