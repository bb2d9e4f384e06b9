/* Kubernetes API access: configuration sources and authenticated requests. */
#define SL_LOG_TAG "kube"
#include "sluice/log.h"
#include "kube.h"

#include <errno.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "objects.h"
#include "pem.h"
#include "sluice/server.h"
#include "util/cfg.h"
#include "util/mem.h"

#define MAX_TOKEN (64 * 1024)

void wt_kube_conf_free(wt_kube_conf_t *c)
{
    free(c->server);
    free(c->token);
    free(c->token_file);
    free(c->namespace);
    free(c->source);
    wt_tls_free(&c->tls);
    memset(c, 0, sizeof(*c));
}

/* A small text file (token, namespace) without surrounding white space; NULL when unreadable. */
static char *read_small(const char *path, size_t max)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *buf = sl_xmalloc(max + 1);
    size_t n = fread(buf, 1, max, f);
    bool more = fgetc(f) != EOF;
    fclose(f);
    if (more) {
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' '))
        buf[--n] = '\0';
    size_t s = strspn(buf, " \t\r\n");
    memmove(buf, buf + s, n - s + 1);
    return buf;
}

static const char *sa_dir(void)
{
    const char *d = getenv("SLUICE_SERVICEACCOUNT_DIR");
    return d && *d ? d : WT_SA_DIR;
}

char *wt_kube_sa_namespace(void)
{
    char p[1024];
    snprintf(p, sizeof(p), "%s/namespace", sa_dir());
    char *ns = read_small(p, 256);
    if (ns && !*ns) {
        free(ns);
        ns = NULL;
    }
    return ns;
}

int wt_kube_conf_incluster(wt_kube_conf_t *c, sl_error_t *err)
{
    memset(c, 0, sizeof(*c));
    const char *host = getenv("KUBERNETES_SERVICE_HOST");
    const char *port = getenv("KUBERNETES_SERVICE_PORT");
    if (!host || !*host || !port || !*port)
        return sl_error_set(err, SL_ECONFIG,
                            "not running in a cluster (KUBERNETES_SERVICE_HOST and "
                            "KUBERNETES_SERVICE_PORT are not set): use --kubeconfig or "
                            "--api-server");
    char url[600];
    snprintf(url, sizeof(url), strchr(host, ':') ? "https://[%s]:%s" : "https://%s:%s", host, port);
    c->server = sl_xstrdup(url);
    char p[1024];
    snprintf(p, sizeof(p), "%s/token", sa_dir());
    c->token_file = sl_xstrdup(p);
    snprintf(p, sizeof(p), "%s/ca.crt", sa_dir());
    c->tls.ca_file = sl_xstrdup(p);
    c->namespace = wt_kube_sa_namespace();
    c->source = sl_xstrdup("in-cluster service account");
    return 0;
}

/* ---- kubeconfig ----------------------------------------------------------------------------- */

static const cJSON *named(const cJSON *list, const char *name, const char *what)
{
    const cJSON *e;
    cJSON_ArrayForEach(e, list)
    {
        const char *n = WT_STR(e, "name");
        if (n && !strcmp(n, name))
            return WT_GET(e, what);
    }
    return NULL;
}

static char *rel_path(const char *base_dir, const char *p)
{
    if (p[0] == '/')
        return sl_xstrdup(p);
    size_t n = strlen(base_dir) + strlen(p) + 2;
    char *out = sl_xmalloc(n);
    snprintf(out, n, "%s/%s", base_dir, p);
    return out;
}

static int decode_data(const char *b64, char **out, const char *what, sl_error_t *err);

int wt_kube_conf_kubeconfig(wt_kube_conf_t *c, const char *path, sl_error_t *err)
{
    memset(c, 0, sizeof(*c));
    cJSON *doc = NULL;
    if (sl__cfg_load_file(path, &doc, err) != 0)
        return SL_ECONFIG;
    char *dcopy = sl_xstrdup(path);
    char *base = sl_xstrdup(dirname(dcopy));
    free(dcopy);
    int rc = 0;
    const char *ctxname = WT_STR(doc, "current-context");
    const cJSON *ctx = ctxname ? named(WT_GET(doc, "contexts"), ctxname, "context") : NULL;
    if (!ctx && cJSON_GetArraySize(WT_GET(doc, "contexts")) == 1)
        ctx = WT_GET(cJSON_GetArrayItem(WT_GET(doc, "contexts"), 0), "context");
    const char *cname = WT_STR(ctx, "cluster"), *uname = WT_STR(ctx, "user");
    const cJSON *cluster = cname ? named(WT_GET(doc, "clusters"), cname, "cluster") : NULL;
    const cJSON *user = uname ? named(WT_GET(doc, "users"), uname, "user") : NULL;
    const char *server = WT_STR(cluster, "server");
    if (!ctx || !cluster || !server) {
        rc =
            sl_error_set(err, SL_ECONFIG, "%s: no current context with a cluster and server", path);
        goto out;
    }
    size_t sl = strlen(server);
    while (sl && server[sl - 1] == '/')
        sl--;
    c->server = sl_xstrndup(server, sl);
    const char *s;
    if ((s = WT_STR(cluster, "certificate-authority")))
        c->tls.ca_file = rel_path(base, s);
    if ((s = WT_STR(cluster, "certificate-authority-data")) &&
        (rc = decode_data(s, &c->tls.ca_pem, "certificate-authority-data", err)))
        goto out;
    c->tls.insecure = cJSON_IsTrue(WT_GET(cluster, "insecure-skip-tls-verify"));
    if ((s = WT_STR(user, "token")))
        c->token = sl_xstrdup(s);
    if ((s = WT_STR(user, "tokenFile")))
        c->token_file = rel_path(base, s);
    if ((s = WT_STR(user, "client-certificate")))
        c->tls.cert_file = rel_path(base, s);
    if ((s = WT_STR(user, "client-key")))
        c->tls.key_file = rel_path(base, s);
    if ((s = WT_STR(user, "client-certificate-data")) &&
        (rc = decode_data(s, &c->tls.cert_pem, "client-certificate-data", err)))
        goto out;
    if ((s = WT_STR(user, "client-key-data")) &&
        (rc = decode_data(s, &c->tls.key_pem, "client-key-data", err)))
        goto out;
    if (WT_GET(user, "exec") || WT_GET(user, "auth-provider")) {
        rc = sl_error_set(err, SL_ECONFIG,
                          "%s: user %s uses an exec or auth-provider plugin, which sluice-watcher "
                          "does not run; use a token or client certificate",
                          path, uname);
        goto out;
    }
    if ((s = WT_STR(ctx, "namespace")))
        c->namespace = sl_xstrdup(s);
    size_t n = strlen(path) + 16;
    c->source = sl_xmalloc(n);
    snprintf(c->source, n, "kubeconfig %s", path);
out:
    free(base);
    cJSON_Delete(doc);
    if (rc)
        wt_kube_conf_free(c);
    return rc;
}

static int decode_data(const char *b64, char **out, const char *what, sl_error_t *err)
{
    size_t len;
    *out = wt_base64_decode(b64, &len);
    if (!*out)
        return sl_error_set(err, SL_ECONFIG, "kubeconfig: %s is not valid base64", what);
    return 0;
}

/* ---- requests ------------------------------------------------------------------------------- */

void wt_kube_init(wt_kube_t *k, wt_http_t *http, wt_kube_conf_t *conf)
{
    memset(k, 0, sizeof(*k));
    k->http = http;
    k->conf = *conf;
    memset(conf, 0, sizeof(*conf));
}

void wt_kube_release(wt_kube_t *k)
{
    wt_kube_conf_free(&k->conf);
    free(k->token);
    k->token = NULL;
}

void wt_kube_token_stale(wt_kube_t *k)
{
    k->have_token_st = false;
}

/* The token, re-read from its file when the file changed (projected service-account tokens
 * rotate; kubelet replaces the file). */
static const char *current_token(wt_kube_t *k)
{
    if (!k->conf.token_file)
        return k->conf.token;
    struct stat st;
    if (stat(k->conf.token_file, &st) != 0) {
        if (!k->token)
            SL_WARN("cannot read the token file %s: %s", k->conf.token_file, strerror(errno));
        return k->token;
    }
    if (k->have_token_st && st.st_mtim.tv_sec == k->token_st.st_mtim.tv_sec &&
        st.st_mtim.tv_nsec == k->token_st.st_mtim.tv_nsec && st.st_ino == k->token_st.st_ino &&
        st.st_size == k->token_st.st_size)
        return k->token;
    char *t = read_small(k->conf.token_file, MAX_TOKEN);
    if (!t || !*t || strpbrk(t, "\r\n")) {
        SL_WARN("the token file %s is empty, too large or not one line; keeping the previous "
                "token",
                k->conf.token_file);
        free(t);
        return k->token;
    }
    if (k->token && strcmp(k->token, t) != 0)
        SL_INFO("the token in %s changed; using the new one", k->conf.token_file);
    free(k->token);
    k->token = t;
    k->token_st = st;
    k->have_token_st = true;
    return k->token;
}

wt_http_req_t *wt_kube_request(wt_kube_t *k, const wt_kube_req_opts_t *o)
{
    size_t ulen = strlen(k->conf.server) + strlen(o->path) + 1;
    char *url = sl_xmalloc(ulen);
    snprintf(url, ulen, "%s%s", k->conf.server, o->path);
    const char *tok = current_token(k);
    char *auth = NULL;
    const char *headers[6];
    size_t nh = 0;
    if (tok && *tok) {
        size_t n = strlen(tok) + 32;
        auth = sl_xmalloc(n);
        snprintf(auth, n, "Authorization: Bearer %s", tok);
        headers[nh++] = auth;
    }
    headers[nh++] = "Accept: application/json";
    char ua[96];
    /* sl_version() is "sluice X.Y.Z" */
    const char *v = strchr(sl_version(), ' ');
    snprintf(ua, sizeof(ua), "User-Agent: sluice-watcher/%s", v ? v + 1 : sl_version());
    headers[nh++] = ua;
    char ctype[128];
    if (o->body) {
        snprintf(ctype, sizeof(ctype), "Content-Type: %s",
                 o->content_type ? o->content_type : "application/json");
        headers[nh++] = ctype;
    }
    headers[nh] = NULL;
    wt_http_opts_t ho = {
        .method = o->method,
        .url = url,
        .headers = headers,
        .body = o->body,
        .body_len = o->body_len,
        .timeout_ms = o->timeout_ms,
        .max_body = o->max_body,
        .on_line = o->on_line,
        .max_line = o->max_line,
        .on_done = o->on_done,
        .arg = o->arg,
        .tls = &k->conf.tls,
    };
    wt_http_req_t *r = wt_http_start(k->http, &ho);
    free(url);
    free(auth);
    return r;
}

const char *wt_kube_status_message(const char *body, size_t len, char *buf, size_t cap)
{
    cJSON *j = len ? cJSON_ParseWithLength(body, len) : NULL;
    const char *m = WT_STR(j, "message");
    if (m) {
        wt_quote(buf, cap, m);
    } else {
        char tmp[160];
        size_t n = len < sizeof(tmp) - 1 ? len : sizeof(tmp) - 1;
        memcpy(tmp, body, n);
        tmp[n] = '\0';
        wt_quote(buf, cap, n ? tmp : "(empty body)");
    }
    cJSON_Delete(j);
    return buf;
}
