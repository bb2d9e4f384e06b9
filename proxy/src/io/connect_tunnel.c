/* HTTP CONNECT through a forward proxy: the request, the strict parse of the answer, and the
 * hand-over of the stream (see connect_tunnel.h). */
#include "io/connect_tunnel.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdarg.h>
#include <llhttp.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/stream_impl.h"
#include "sluice/error.h"
#include "util/mem.h"

#define SL_LOG_TAG "upstream"
#include "sluice/log.h"

/* The proxy's answer head must fit here (squid's are a few hundred bytes). */
#define ANSWER_MAX 16384
#define AUTH_MAX   4096
#define TARGET_MAX 300
#define CRED_MAX   1024

/* The request may carry credentials: wiped before it is freed. */
typedef struct ctun_req {
    size_t len;
    char data[];
} ctun_req_t;

static void req_free(ctun_req_t *r)
{
    if (r) {
        OPENSSL_cleanse(r->data, r->len);
        free(r);
    }
}

struct sl_ctun {
    sl_stream_t *stream;
    sl_ctun_done_cb done;
    struct ctun_req *req; /* the request until it is handed to the write */
    llhttp_t parser;
    char *buf; /* the answer so far */
    size_t len;
    int status;
    bool started, finished, final;
    size_t reason_len;
    char reason[96];
    char proxy[128];
    char target[TARGET_MAX];
    char why[512];
};

/* ---- addresses and names --------------------------------------------------------------- */

uint16_t sl__ctun_addr_port(const struct sockaddr_storage *a)
{
    if (a->ss_family == AF_INET)
        return ntohs(((const struct sockaddr_in *)a)->sin_port);
    if (a->ss_family == AF_INET6)
        return ntohs(((const struct sockaddr_in6 *)a)->sin6_port);
    return 0;
}

/* A host for the request line and Host: a DNS name or an IP literal, nothing that could end
 * the line or the field. */
static bool valid_host(const char *h)
{
    if (!*h)
        return false;
    for (const unsigned char *p = (const unsigned char *)h; *p; p++)
        if (!isalnum(*p) && !strchr("-._:%", *p))
            return false;
    return true;
}

int sl__ctun_target(const sl_peer_t *peer, char *buf, size_t cap)
{
    const struct sockaddr_storage *a = &peer->addr;
    if (a->ss_family != AF_INET && a->ss_family != AF_INET6)
        return SL_ECONFIG;
    const char *host = peer->options.proxy.host;
    char ip[INET6_ADDRSTRLEN];
    if (!host || !*host)
        host = peer->sni[0] ? peer->sni : NULL;
    if (!host) {
        sl_sockaddr_ip_str(a, ip, sizeof(ip));
        host = ip;
    }
    if (!valid_host(host))
        return SL_ECONFIG;
    int n = snprintf(buf, cap, strchr(host, ':') ? "[%s]:%u" : "%s:%u", host,
                     (unsigned)sl__ctun_addr_port(a));
    return n > 0 && (size_t)n < cap ? 0 : SL_ECONFIG;
}

/* Field values: visible characters, spaces and tabs only. */
static bool valid_value(const char *v)
{
    for (const unsigned char *p = (const unsigned char *)v; *p; p++)
        if ((*p < 0x20 && *p != '\t') || *p == 0x7f)
            return false;
    return true;
}

/* The Proxy-Authorization value into out ("" for none). Returns 0 or SL_ECONFIG. */
static int authorization(const sl_peer_proxy_t *px, char *out, size_t cap)
{
    out[0] = '\0';
    if (px->authorization) {
        if (!valid_value(px->authorization) || strlen(px->authorization) >= cap)
            return SL_ECONFIG;
        memcpy(out, px->authorization, strlen(px->authorization) + 1);
        return 0;
    }
    if (!px->user || !px->password)
        return 0;
    /* RFC 7617: a user-id with a colon cannot be expressed. */
    size_t ul = strlen(px->user), pl = strlen(px->password);
    if (strchr(px->user, ':') || !valid_value(px->user) || !valid_value(px->password) ||
        ul + 1 + pl > CRED_MAX)
        return SL_ECONFIG;
    unsigned char cred[CRED_MAX + 1];
    memcpy(cred, px->user, ul);
    cred[ul] = ':';
    memcpy(cred + ul + 1, px->password, pl);
    if (6 + 4 * ((ul + 1 + pl + 2) / 3) + 1 > cap)
        return SL_ECONFIG;
    memcpy(out, "Basic ", 6);
    EVP_EncodeBlock((unsigned char *)out + 6, cred, (int)(ul + 1 + pl));
    OPENSSL_cleanse(cred, sizeof(cred));
    return 0;
}

void sl__ctun_key(const sl_peer_t *peer, unsigned char out[32])
{
    const sl_peer_proxy_t *px = &peer->options.proxy;
    memset(out, 0, 32);
    if (!px->addr_len)
        return;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    if (!md)
        sl_oom();
    EVP_DigestInit_ex(md, EVP_sha256(), NULL);
    EVP_DigestUpdate(md, &px->addr, px->addr_len);
    /* Each part with its terminating NUL, "-" standing for none: no two inputs collide. */
    const char *parts[] = {px->host, px->authorization, px->user, px->password};
    for (size_t i = 0; i < SL_ARRAY_LEN(parts); i++) {
        const char *v = parts[i] ? parts[i] : "";
        EVP_DigestUpdate(md, parts[i] ? "+" : "-", 1);
        EVP_DigestUpdate(md, v, strlen(v) + 1);
    }
    unsigned int n = 32;
    EVP_DigestFinal_ex(md, out, &n);
    EVP_MD_CTX_free(md);
}

/* ---- the exchange ---------------------------------------------------------------------- */

int sl__ctun_attach(sl_stream_t *st, const sl_peer_t *peer)
{
    const sl_peer_proxy_t *px = &peer->options.proxy;
    char target[TARGET_MAX], auth[AUTH_MAX];
    if (!px->addr_len || sl__ctun_target(peer, target, sizeof(target)) != 0 ||
        authorization(px, auth, sizeof(auth)) != 0)
        return SL_ECONFIG;
    sl_ctun_t *t = sl_xcalloc(1, sizeof(*t));
    t->stream = st;
    memcpy(t->target, target, sizeof(target));
    sl_sockaddr_str(&px->addr, t->proxy, sizeof(t->proxy));
    size_t cap = 64 + 2 * strlen(target) + strlen(auth);
    t->req = sl_xmalloc(sizeof(*t->req) + cap);
    int n = snprintf(t->req->data, cap, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n%s%s%s\r\n", target,
                     target, auth[0] ? "Proxy-Authorization: " : "", auth, auth[0] ? "\r\n" : "");
    OPENSSL_cleanse(auth, sizeof(auth));
    t->req->len = (size_t)n;
    sl__ctun_free(st->ctun);
    st->ctun = t;
    return 0;
}

void sl__ctun_free(sl_ctun_t *t)
{
    if (!t)
        return;
    req_free(t->req);
    free(t->buf);
    free(t);
}

const char *sl__ctun_why(sl_stream_t *st, int err)
{
    sl_ctun_t *t = st->ctun;
    if (!t)
        return NULL;
    if (t->why[0])
        return t->why; /* the exchange itself failed and said why */
    if (err == SL_ETIMEDOUT_CONNECT || err == UV_ETIMEDOUT)
        snprintf(t->why, sizeof(t->why),
                 t->started ? "upstream proxy %s did not answer CONNECT in time"
                            : "connecting to upstream proxy %s timed out",
                 t->proxy);
    else if (!t->started)
        snprintf(t->why, sizeof(t->why), "cannot connect to upstream proxy %s: %s", t->proxy,
                 sl_strerror(err));
    else
        snprintf(t->why, sizeof(t->why), "upstream proxy %s: %s", t->proxy, sl_strerror(err));
    return t->why;
}

static void request_written(sl_stream_t *st, int status, void *arg)
{
    req_free(arg); /* the buffer is the write's: the tunnel may be gone already */
}

/* Ends the exchange: reads stop and the owner hears of it. A tunnel that works leaves the
 * stream; a failed one stays for sl__ctun_why until the stream goes. */
static void finish(sl_ctun_t *t, int err)
{
    sl_stream_t *st = t->stream;
    t->finished = true;
    sl_stream_read_stop(st);
    free(t->buf);
    t->buf = NULL;
    sl_ctun_done_cb done = t->done;
    if (err) {
        SL_WARN("CONNECT %s: %s", t->target, t->why);
    } else {
        SL_DEBUG("CONNECT %s through %s: %d %.*s, tunnel established", t->target, t->proxy,
                 t->status, (int)t->reason_len, t->reason);
        st->ctun = NULL;
        sl__ctun_free(t);
    }
    done(st, err);
}

static void fail(sl_ctun_t *t, int err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void fail(sl_ctun_t *t, int err, const char *fmt, ...)
{
    int n = snprintf(t->why, sizeof(t->why), "upstream proxy %s ", t->proxy);
    va_list ap;
    va_start(ap, fmt);
    if (n > 0 && (size_t)n < sizeof(t->why))
        vsnprintf(t->why + n, sizeof(t->why) - (size_t)n, fmt, ap);
    va_end(ap);
    finish(t, err);
}

static int on_message_begin(llhttp_t *p)
{
    sl_ctun_t *t = p->data;
    t->reason_len = 0;
    return 0;
}

static int on_status(llhttp_t *p, const char *at, size_t len)
{
    sl_ctun_t *t = p->data;
    for (size_t i = 0; i < len && t->reason_len < sizeof(t->reason) - 1; i++) {
        unsigned char c = (unsigned char)at[i];
        /* The reason goes into logs and error bodies: printable ASCII only. */
        t->reason[t->reason_len++] = c >= 0x20 && c < 0x7f ? (char)c : '?';
    }
    return 0;
}

static int on_headers_complete(llhttp_t *p)
{
    sl_ctun_t *t = p->data;
    if (p->status_code >= 100 && p->status_code < 200 && p->status_code != 101)
        return 0; /* informational: the final answer follows */
    t->status = p->status_code;
    t->final = true;
    /* What follows the head is not HTTP for us: the tunnel's bytes, or a refusal's body (a 2xx
     * to CONNECT has no body whatever its fields say, RFC 9110 9.3.6). */
    return HPE_PAUSED;
}

static const llhttp_settings_t answer_settings = {
    .on_message_begin = on_message_begin,
    .on_status = on_status,
    .on_headers_complete = on_headers_complete,
};

static void answer_alloc(sl_stream_t *st, size_t suggested, uv_buf_t *buf)
{
    sl_ctun_t *t = st->ctun;
    if (!t || t->finished || !t->buf || t->len >= ANSWER_MAX) {
        *buf = uv_buf_init(NULL, 0);
        return;
    }
    *buf = uv_buf_init(t->buf + t->len, (unsigned)(ANSWER_MAX - t->len));
}

static void answered(sl_ctun_t *t)
{
    size_t head = (size_t)(llhttp_get_error_pos(&t->parser) - t->buf);
    if (t->status < 200 || t->status > 299) {
        fail(t, SL_ETUNNEL, "refused CONNECT: %d%s%.*s", t->status, t->reason_len ? " " : "",
             (int)t->reason_len, t->reason);
        return;
    }
    if (head < t->len) /* the target's first bytes, in the same read as the answer */
        sl__stream_unread(t->stream, t->buf + head, t->len - head);
    finish(t, 0);
}

static void answer_read(sl_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    sl_ctun_t *t = st->ctun;
    if (!t || t->finished)
        return;
    if (nread == UV_ENOBUFS) {
        fail(t, SL_ETUNNEL, "sent an invalid response to CONNECT (header larger than %d bytes)",
             ANSWER_MAX);
        return;
    }
    if (nread == UV_EOF) {
        fail(t, SL_ETUNNEL, "closed the connection before answering CONNECT");
        return;
    }
    if (nread < 0) {
        fail(t, SL_ETUNNEL, "failed while answering CONNECT: %s", uv_strerror((int)nread));
        return;
    }
    const char *at = t->buf + t->len;
    t->len += (size_t)nread;
    llhttp_errno_t e = llhttp_execute(&t->parser, at, (size_t)nread);
    if (e == HPE_PAUSED && t->final) {
        answered(t);
        return;
    }
    if (e != HPE_OK) {
        fail(t, SL_ETUNNEL, "sent an invalid response to CONNECT (%s: %s)", llhttp_errno_name(e),
             llhttp_get_error_reason(&t->parser));
        return;
    }
    if (t->len >= ANSWER_MAX)
        fail(t, SL_ETUNNEL, "sent an invalid response to CONNECT (header larger than %d bytes)",
             ANSWER_MAX);
}

int sl__ctun_start(sl_stream_t *st, sl_ctun_done_cb done)
{
    sl_ctun_t *t = st->ctun;
    if (!t || t->started)
        return SL_EINTERNAL;
    t->done = done;
    uv_buf_t b = uv_buf_init(t->req->data, (unsigned)t->req->len);
    int rc = sl_stream_write(st, &b, 1, request_written, t->req);
    if (rc)
        return rc;
    t->req = NULL; /* the write's now */
    t->started = true;
    llhttp_init(&t->parser, HTTP_RESPONSE, &answer_settings);
    t->parser.data = t;
    t->buf = sl_xmalloc(ANSWER_MAX);
    SL_DEBUG("CONNECT %s through %s", t->target, t->proxy);
    return sl_stream_read_start(st, answer_alloc, answer_read);
}
