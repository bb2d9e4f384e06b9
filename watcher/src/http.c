/* libcurl multi + libuv: curl tells us which sockets to watch (CURLMOPT_SOCKETFUNCTION) and
 * when to wake it (CURLMOPT_TIMERFUNCTION); we hand readiness back with
 * curl_multi_socket_action and collect finished transfers with curl_multi_info_read. */
#define SL_LOG_TAG "http"
#include "sluice/log.h"
#include "http.h"

#include <curl/curl.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "util/mem.h"

#define DEFAULT_MAX_BODY (16u << 20)
#define DEFAULT_MAX_LINE (8u << 20)

typedef struct sock_ctx {
    uv_poll_t poll;
    curl_socket_t fd;
    wt_http_t *h;
    struct sock_ctx *next, *prev;
} sock_ctx_t;

struct wt_http {
    uv_loop_t *loop;
    CURLM *multi;
    uv_timer_t timer;
    sock_ctx_t *socks;
    wt_http_req_t *reqs;
    int open_handles; /* uv handles not yet closed */
    int dispatching;  /* inside check_done: teardown waits until it returns */
    bool closing;
};

struct wt_http_req {
    wt_http_t *h;
    CURL *easy;
    struct curl_slist *headers;
    wt_http_opts_t o;
    char *body_copy;
    char *buf; /* accumulated body, or the current line when streaming */
    size_t len, cap;
    bool decided, streaming, discarding_line, too_large, aborted;
    bool delivering; /* its on_done is running: freed right after */
    char *etag;
    long retry_after;
    char errbuf[CURL_ERROR_SIZE];
    wt_http_req_t *next, *prev;
};

void wt_tls_free(wt_tls_t *t)
{
    free(t->ca_file);
    free(t->ca_pem);
    free(t->cert_file);
    free(t->cert_pem);
    free(t->key_file);
    free(t->key_pem);
    memset(t, 0, sizeof(*t));
}

/* ---- handles -------------------------------------------------------------------------------- */

static void maybe_free(wt_http_t *h)
{
    if (h->closing && h->open_handles == 0)
        free(h);
}

static void on_handle_closed(uv_handle_t *hd)
{
    wt_http_t *h = hd->data;
    if (hd->type == UV_POLL)
        free(SL_CONTAINER_OF((uv_poll_t *)hd, sock_ctx_t, poll));
    h->open_handles--;
    maybe_free(h);
}

static void sock_close(wt_http_t *h, sock_ctx_t *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        h->socks = c->next;
    if (c->next)
        c->next->prev = c->prev;
    uv_poll_stop(&c->poll);
    uv_close((uv_handle_t *)&c->poll, on_handle_closed);
}

/* ---- finished transfers --------------------------------------------------------------------- */

static void req_unlink_free(wt_http_req_t *r)
{
    wt_http_t *h = r->h;
    if (r->prev)
        r->prev->next = r->next;
    else
        h->reqs = r->next;
    if (r->next)
        r->next->prev = r->prev;
    curl_multi_remove_handle(h->multi, r->easy);
    curl_easy_cleanup(r->easy);
    curl_slist_free_all(r->headers);
    free(r->body_copy);
    free(r->buf);
    free(r->etag);
    free(r);
}

static void teardown(wt_http_t *h);

static void check_done(wt_http_t *h)
{
    CURLMsg *m;
    int left;
    h->dispatching++;
    while (!h->closing && (m = curl_multi_info_read(h->multi, &left)) != NULL) {
        if (m->msg != CURLMSG_DONE)
            continue;
        wt_http_req_t *r = NULL;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&r);
        CURLcode code = m->data.result;
        wt_http_resp_t resp;
        memset(&resp, 0, sizeof(resp));
        curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &resp.status);
        curl_easy_getinfo(r->easy, CURLINFO_TOTAL_TIME, &resp.seconds);
        resp.curl_code = (int)code;
        resp.aborted = r->aborted;
        resp.too_large = r->too_large;
        if (code != CURLE_OK)
            resp.error = r->errbuf[0] ? r->errbuf : curl_easy_strerror(code);
        if (r->streaming || !r->buf) {
            resp.body = "";
            resp.len = 0;
        } else {
            resp.body = r->buf;
            resp.len = r->len;
        }
        resp.etag = r->etag;
        resp.retry_after = r->retry_after;
        wt_http_done_cb cb = r->o.on_done;
        void *arg = r->o.arg;
        /* Detach from curl first: the callback may start new requests, or free the client. */
        curl_multi_remove_handle(h->multi, r->easy);
        r->delivering = true;
        if (cb)
            cb(r, &resp, arg);
        req_unlink_free(r);
    }
    if (--h->dispatching == 0 && h->closing)
        teardown(h);
}

/* ---- curl -> uv ----------------------------------------------------------------------------- */

static void on_poll(uv_poll_t *p, int status, int events)
{
    sock_ctx_t *c = SL_CONTAINER_OF(p, sock_ctx_t, poll);
    wt_http_t *h = c->h;
    if (h->closing)
        return;
    int flags = 0;
    if (status < 0)
        flags = CURL_CSELECT_ERR;
    if (events & UV_READABLE)
        flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE)
        flags |= CURL_CSELECT_OUT;
    int running;
    curl_multi_socket_action(h->multi, c->fd, flags, &running);
    check_done(h);
}

static int on_socket(CURL *e, curl_socket_t s, int what, void *userp, void *socketp)
{
    wt_http_t *h = userp;
    sock_ctx_t *c = socketp;
    if (what == CURL_POLL_REMOVE) {
        if (c) {
            curl_multi_assign(h->multi, s, NULL);
            sock_close(h, c);
        }
        return 0;
    }
    if (!c) {
        c = sl_xcalloc(1, sizeof(*c));
        c->fd = s;
        c->h = h;
        if (uv_poll_init_socket(h->loop, &c->poll, s) != 0) {
            SL_ERROR("cannot watch socket %d", (int)s);
            free(c);
            return -1;
        }
        c->poll.data = h;
        h->open_handles++;
        c->next = h->socks;
        if (h->socks)
            h->socks->prev = c;
        h->socks = c;
        curl_multi_assign(h->multi, s, c);
    }
    int ev = 0;
    if (what == CURL_POLL_IN || what == CURL_POLL_INOUT)
        ev |= UV_READABLE;
    if (what == CURL_POLL_OUT || what == CURL_POLL_INOUT)
        ev |= UV_WRITABLE;
    uv_poll_start(&c->poll, ev, on_poll);
    return 0;
}

static void on_timeout(uv_timer_t *t)
{
    wt_http_t *h = t->data;
    int running;
    if (h->closing)
        return;
    curl_multi_socket_action(h->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    check_done(h);
}

static int on_timer(CURLM *m, long timeout_ms, void *userp)
{
    wt_http_t *h = userp;
    if (timeout_ms < 0)
        uv_timer_stop(&h->timer);
    else
        uv_timer_start(&h->timer, on_timeout, (uint64_t)timeout_ms, 0);
    return 0;
}

/* ---- bodies --------------------------------------------------------------------------------- */

static bool reserve(wt_http_req_t *r, size_t need, size_t cap_limit)
{
    if (need <= r->cap)
        return true;
    if (need > cap_limit)
        return false;
    size_t cap = r->cap ? r->cap : 16384;
    while (cap < need)
        cap *= 2;
    if (cap > cap_limit)
        cap = cap_limit;
    r->buf = sl_xrealloc(r->buf, cap + 1);
    r->cap = cap;
    return true;
}

/* Splits streamed data into lines; false stops the transfer. */
static bool feed_lines(wt_http_req_t *r, const char *p, size_t n)
{
    size_t max = r->o.max_line ? r->o.max_line : DEFAULT_MAX_LINE;
    while (n) {
        const char *nl = memchr(p, '\n', n);
        size_t take = nl ? (size_t)(nl - p) : n;
        if (!r->discarding_line) {
            if (!reserve(r, r->len + take, max)) {
                r->discarding_line = true;
                r->len = 0;
                if (r->o.on_line(NULL, 0, true, r->o.arg) != 0)
                    return false;
            } else {
                memcpy(r->buf + r->len, p, take);
                r->len += take;
            }
        }
        if (!nl)
            return true;
        if (!r->discarding_line && r->len) {
            r->buf[r->len] = '\0';
            size_t len = r->len;
            r->len = 0;
            if (r->o.on_line(r->buf, len, false, r->o.arg) != 0)
                return false;
        }
        r->discarding_line = false;
        r->len = 0;
        p = nl + 1;
        n -= take + 1;
    }
    return true;
}

static size_t on_write(char *p, size_t size, size_t nmemb, void *ud)
{
    wt_http_req_t *r = ud;
    size_t n = size * nmemb;
    if (r->aborted)
        return 0;
    if (!r->decided) {
        long status = 0;
        curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
        r->streaming = r->o.on_line && status == 200;
        r->decided = true;
    }
    if (r->streaming) {
        if (!feed_lines(r, p, n)) {
            r->aborted = true;
            return 0;
        }
        return n;
    }
    if (r->o.discard_body)
        return n;
    size_t max = r->o.max_body ? r->o.max_body : DEFAULT_MAX_BODY;
    if (!reserve(r, r->len + n, max)) {
        r->too_large = true;
        return 0;
    }
    memcpy(r->buf + r->len, p, n);
    r->len += n;
    r->buf[r->len] = '\0';
    return n;
}

static size_t on_header(char *p, size_t size, size_t nmemb, void *ud)
{
    wt_http_req_t *r = ud;
    size_t n = size * nmemb;
    if (n > 5 && !strncasecmp(p, "ETag:", 5)) {
        const char *v = p + 5;
        size_t len = n - 5;
        while (len && (*v == ' ' || *v == '\t'))
            v++, len--;
        while (len && (v[len - 1] == '\r' || v[len - 1] == '\n' || v[len - 1] == ' '))
            len--;
        if (len >= 2 && v[0] == '"' && v[len - 1] == '"')
            v++, len -= 2;
        free(r->etag);
        r->etag = sl_xstrndup(v, len);
    } else if (n > 12 && !strncasecmp(p, "Retry-After:", 12)) {
        char tmp[32];
        size_t len = n - 12 < sizeof(tmp) - 1 ? n - 12 : sizeof(tmp) - 1;
        memcpy(tmp, p + 12, len);
        tmp[len] = '\0';
        char *end;
        long v = strtol(tmp, &end, 10);
        if (end != tmp && v >= 0 && v < 3600)
            r->retry_after = v;
    }
    return n;
}

/* ---- requests ------------------------------------------------------------------------------- */

static void set_blob(CURL *e, CURLoption opt, const char *pem)
{
    struct curl_blob b = {.data = (void *)pem, .len = strlen(pem), .flags = CURL_BLOB_COPY};
    curl_easy_setopt(e, opt, &b);
}

static void apply_tls(CURL *e, const wt_tls_t *t)
{
    if (!t)
        return;
    if (t->ca_file)
        curl_easy_setopt(e, CURLOPT_CAINFO, t->ca_file);
    if (t->ca_pem)
        set_blob(e, CURLOPT_CAINFO_BLOB, t->ca_pem);
    if (t->cert_file)
        curl_easy_setopt(e, CURLOPT_SSLCERT, t->cert_file);
    if (t->cert_pem) {
        curl_easy_setopt(e, CURLOPT_SSLCERTTYPE, "PEM");
        set_blob(e, CURLOPT_SSLCERT_BLOB, t->cert_pem);
    }
    if (t->key_file)
        curl_easy_setopt(e, CURLOPT_SSLKEY, t->key_file);
    if (t->key_pem) {
        curl_easy_setopt(e, CURLOPT_SSLKEYTYPE, "PEM");
        set_blob(e, CURLOPT_SSLKEY_BLOB, t->key_pem);
    }
    if (t->insecure) {
        curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 0L);
        curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 0L);
    }
}

wt_http_req_t *wt_http_start(wt_http_t *h, const wt_http_opts_t *o)
{
    wt_http_req_t *r = sl_xcalloc(1, sizeof(*r));
    r->h = h;
    r->o = *o;
    r->retry_after = -1;
    r->easy = curl_easy_init();
    if (!r->easy)
        sl_oom();
    CURL *e = r->easy;
    curl_easy_setopt(e, CURLOPT_URL, o->url);
    curl_easy_setopt(e, CURLOPT_PRIVATE, r);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, r->errbuf);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPIDLE, 30L);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPINTVL, 10L);
    curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS,
                     o->connect_timeout_ms ? o->connect_timeout_ms : 10000L);
    if (o->timeout_ms)
        curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, o->timeout_ms);
    const char *method = o->method ? o->method : "GET";
    if (strcmp(method, "GET") != 0)
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    if (o->body) {
        r->body_copy = sl_xmemdup(o->body, o->body_len ? o->body_len : 1);
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, r->body_copy);
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)o->body_len);
    }
    for (const char *const *hd = o->headers; hd && *hd; hd++)
        r->headers = curl_slist_append(r->headers, *hd);
    r->headers = curl_slist_append(r->headers, "Expect:"); /* no 100-continue round trip */
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, r->headers);
    apply_tls(e, o->tls);
    r->o.body = NULL; /* the copy is ours; the caller's may go away */
    r->o.headers = NULL;
    r->o.url = NULL;
    r->o.method = NULL;
    r->o.tls = NULL;
    r->next = h->reqs;
    if (h->reqs)
        h->reqs->prev = r;
    h->reqs = r;
    CURLMcode mc = curl_multi_add_handle(h->multi, e);
    if (mc != CURLM_OK) {
        SL_ERROR("cannot start a request: %s", curl_multi_strerror(mc));
        req_unlink_free(r);
        return NULL;
    }
    return r;
}

void wt_http_cancel(wt_http_req_t *r)
{
    if (r && !r->delivering)
        req_unlink_free(r);
}

char *wt_http_escape(const char *s)
{
    char *e = curl_easy_escape(NULL, s, 0);
    if (!e)
        sl_oom();
    char *out = sl_xstrdup(e);
    curl_free(e);
    return out;
}

wt_http_t *wt_http_new(uv_loop_t *loop)
{
    wt_http_t *h = sl_xcalloc(1, sizeof(*h));
    h->loop = loop;
    h->multi = curl_multi_init();
    if (!h->multi)
        sl_oom();
    curl_multi_setopt(h->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
    curl_multi_setopt(h->multi, CURLMOPT_SOCKETDATA, h);
    curl_multi_setopt(h->multi, CURLMOPT_TIMERFUNCTION, on_timer);
    curl_multi_setopt(h->multi, CURLMOPT_TIMERDATA, h);
    /* Watches are long-lived: many streams may share one HTTP/2 connection, or use their own
     * HTTP/1.1 connections. */
    curl_multi_setopt(h->multi, CURLMOPT_MAX_HOST_CONNECTIONS, 0L);
    uv_timer_init(loop, &h->timer);
    h->timer.data = h;
    h->open_handles = 1;
    return h;
}

static void teardown(wt_http_t *h)
{
    while (h->reqs)
        req_unlink_free(h->reqs);
    curl_multi_cleanup(h->multi); /* closes cached connections (REMOVE callbacks) */
    h->multi = NULL;
    while (h->socks)
        sock_close(h, h->socks);
    uv_timer_stop(&h->timer);
    uv_close((uv_handle_t *)&h->timer, on_handle_closed);
}

void wt_http_free(wt_http_t *h)
{
    if (!h || h->closing)
        return;
    h->closing = true;
    if (!h->dispatching)
        teardown(h);
}
