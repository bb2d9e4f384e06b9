/* The admin API (SPEC §5) on the control thread: health, readiness, metrics, config and
 * upstreams. A small HTTP/1.1 server of its own (llhttp, strict), bounded in every buffer. */
#include <llhttp.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

#include "core/core.h"
#include "gateway/runtime.h"
#include "util/cfg.h"
#include "util/jmem.h"
#include "util/mem.h"
#include "util/slab.h"

#define SL_LOG_TAG "admin"
#include "sluice/log.h"

#define MAX_HEAD  (16 * 1024)
#define MAX_BODY  (16 * 1024 * 1024)
#define IDLE_MS   30000
#define LINGER_MS 10000

typedef struct admin_conn admin_conn_t;

struct gw_admin {
    gateway_t *gw;
    union {
        uv_handle_t handle;
        uv_stream_t stream;
        uv_tcp_t tcp;
        uv_pipe_t pipe;
    } listener;
    bool is_unix;
    char *unix_path;
    admin_conn_t *conns;
    bool stopping;
};

struct admin_conn {
    union {
        uv_handle_t handle;
        uv_stream_t stream;
        uv_tcp_t tcp;
        uv_pipe_t pipe;
    } h;
    uv_timer_t timer;
    gw_admin_t *admin;
    llhttp_t parser;
    char *head; /* url, then "name\0value\0" pairs we care about */
    size_t head_len;
    char url[2048];
    size_t url_len;
    char field[64];
    size_t field_len;
    int hdr; /* which header the current value belongs to */
    char auth[4096];
    size_t auth_len;
    char ctype[128];
    size_t ctype_len;
    char *body;
    size_t body_len, body_cap;
    bool body_pooled; /* from sl_pool_alloc (a big configuration) */
    size_t head_bytes;
    bool too_large, done, closing, writing, discarding, expect_continue;
    char *pending; /* pipelined bytes read while an answer was being written */
    size_t pending_len;
    int pending_close;
    admin_conn_t *next, *prev;
};

enum { H_NONE, H_AUTH, H_CTYPE, H_EXPECT };

static void conn_close(admin_conn_t *c);
static void body_reserve(admin_conn_t *c, size_t cap);
static void body_free(admin_conn_t *c);
static void on_idle(uv_timer_t *t);
static void feed_pending(admin_conn_t *c);

/* ---- responses --------------------------------------------------------------------------- */

typedef struct wreq {
    uv_write_t req;
    char *data;
    admin_conn_t *c;
    bool close_after;
} wreq_t;

static void on_shutdown_done(uv_shutdown_t *req, int status)
{
    free(req);
}

static void on_written(uv_write_t *r, int status)
{
    wreq_t *w = (wreq_t *)r;
    admin_conn_t *c = w->c;
    c->writing = false;
    if (status < 0) {
        conn_close(c);
    } else if (w->close_after && c->discarding) {
        /* A refused upload: the client may still be sending. Keep reading (and dropping) for
         * a while so it sees our answer instead of a reset. */
        uv_shutdown_t *sr = sl_xmalloc(sizeof(*sr));
        if (uv_shutdown(sr, &c->h.stream, on_shutdown_done) != 0) {
            free(sr);
            conn_close(c);
        } else {
            uv_timer_start(&c->timer, on_idle, LINGER_MS, 0);
        }
    } else if (w->close_after) {
        conn_close(c);
    } else {
        feed_pending(c);
    }
    free(w->data);
    free(w);
}

static void respond(admin_conn_t *c, int status, const char *ctype, const char *extra_headers,
                    const char *body, size_t len)
{
    bool close_after = !llhttp_should_keep_alive(&c->parser) || c->too_large;
    bool head = c->parser.method == HTTP_HEAD;
    size_t cap = len + 512 + (extra_headers ? strlen(extra_headers) : 0);
    char *out = sl_xmalloc(cap);
    int n = snprintf(out, cap,
                     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                     "Cache-Control: no-store\r\n%s%s\r\n",
                     status, sl_http_reason(status), ctype, len, extra_headers ? extra_headers : "",
                     close_after ? "Connection: close\r\n" : "");
    if (!head)
        memcpy(out + n, body, len);
    wreq_t *w = sl_xcalloc(1, sizeof(*w));
    w->data = out;
    w->c = c;
    w->close_after = close_after;
    uv_buf_t b = uv_buf_init(out, (unsigned)(n + (head ? 0 : (int)len)));
    c->writing = true;
    if (uv_write(&w->req, &c->h.stream, &b, 1, on_written) != 0) {
        c->writing = false;
        free(out);
        free(w);
        conn_close(c);
    }
}

static void respond_json(admin_conn_t *c, int status, cJSON *j, const char *extra)
{
    char *text = cJSON_PrintUnformatted(j);
    if (!text)
        sl_oom();
    size_t n = strlen(text);
    char *withnl = sl_xmalloc(n + 2);
    memcpy(withnl, text, n);
    withnl[n] = '\n';
    respond(c, status, "application/json", extra, withnl, n + 1);
    free(withnl);
    free(text);
}

static void respond_error(admin_conn_t *c, int status, const char *msg, const char *extra)
{
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "status", "error");
    cJSON_AddNumberToObject(j, "code", status);
    cJSON_AddStringToObject(j, "message", msg);
    respond_json(c, status, j, extra);
    cJSON_Delete(j);
}

/* ---- endpoints --------------------------------------------------------------------------- */

static bool authorized(admin_conn_t *c)
{
    const char *token = c->admin->gw->current->admin_token;
    if (!token || !*token)
        return true;
    static const char prefix[] = "Bearer ";
    if (c->auth_len < sizeof(prefix) - 1 || strncasecmp(c->auth, prefix, sizeof(prefix) - 1))
        return false;
    const char *given = c->auth + sizeof(prefix) - 1;
    size_t glen = c->auth_len - (sizeof(prefix) - 1), tlen = strlen(token);
    /* Constant time over the token's length: no early exit that times the comparison. */
    return glen == tlen && CRYPTO_memcmp(given, token, tlen) == 0;
}

static bool require_token(admin_conn_t *c)
{
    if (authorized(c))
        return true;
    if (c->auth_len == 0)
        respond_error(c, 401, "this call needs \"Authorization: Bearer <token>\"",
                      "WWW-Authenticate: Bearer realm=\"sluice-admin\"\r\n");
    else
        respond_error(c, 403, "invalid token", NULL);
    return false;
}

static cJSON *parse_body(admin_conn_t *c, sl_error_t *err)
{
    cJSON *root = NULL;
    if (!c->body_len) {
        sl_error_set(err, SL_ECONFIG, "empty body");
        return NULL;
    }
    if (sl__cfg_parse(c->body, c->body_len, SL_CFG_AUTO, 4u << 20, &root, err) != 0)
        return NULL;
    return root;
}

static void put_config(admin_conn_t *c)
{
    gateway_t *gw = c->admin->gw;
    sl_error_t err = {0};
    uint64_t t0 = uv_hrtime();
    /* The body's trees live and die in the change: allocated in bulk (util/jmem.h). */
    sl_jmem_scope_t scope;
    sl_jmem_begin(&scope, c->body_len * 8);
    cJSON *root = parse_body(c, &err);
    bool parsed = root != NULL;
    int rc = parsed ? gw_apply_json(gw, root, "PUT /config", &err) : SL_ECONFIG; /* takes root */
    sl_jmem_end(&scope);
    if (rc == 0) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddBoolToObject(j, "applied", true);
        cJSON_AddStringToObject(j, "hash", gw->current->hash);
        cJSON_AddNumberToObject(j, "generation", (double)gw->current->generation);
        /* The whole control-thread cost: parsing the body, building and publishing. */
        cJSON_AddNumberToObject(j, "apply_ms", (double)(uv_hrtime() - t0) / 1e6);
        respond_json(c, 200, j, NULL);
        cJSON_Delete(j);
    } else {
        if (!parsed)
            atomic_fetch_add(&gw->reloads_failed, 1);
        respond_error(c, 400, err.msg, NULL);
    }
}

static void get_config(admin_conn_t *c)
{
    gateway_t *gw = c->admin->gw;
    cJSON *j = gw_config_to_json(gw->current);
    char etag[192];
    snprintf(etag, sizeof(etag), "ETag: \"%s\"\r\nX-Sluice-Config-Generation: %llu\r\n",
             gw->current->hash, (unsigned long long)gw->current->generation);
    respond_json(c, 200, j, etag);
    cJSON_Delete(j);
}

static void get_upstreams(admin_conn_t *c)
{
    const gw_config_t *cfg = c->admin->gw->current;
    cJSON *list = cJSON_CreateArray();
    for (size_t i = 0; i < cfg->n_upstreams; i++) {
        const gw_upstream_t *u = cfg->upstreams[i];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "name", u->name);
        cJSON_AddStringToObject(o, "lb", "round_robin");
        if (u->discovery_file)
            cJSON_AddStringToObject(o, "discovery", u->discovery_file);
        cJSON *bs = cJSON_AddArrayToObject(o, "backends");
        for (size_t k = 0; k < u->n_backends; k++) {
            cJSON *b = cJSON_CreateObject();
            cJSON_AddStringToObject(b, "address", u->backends[k].address);
            cJSON_AddNumberToObject(b, "weight", u->backends[k].weight);
            if (u->backends[k].host) /* a host name, or an address a watched name resolved to */
                cJSON_AddStringToObject(b, "name", u->backends[k].host);
            /* No health checks configured: every backend is in rotation. */
            cJSON_AddStringToObject(b, "health", "unchecked");
            cJSON_AddItemToArray(bs, b);
        }
        cJSON_AddItemToArray(list, o);
    }
    respond_json(c, 200, list, NULL);
    cJSON_Delete(list);
}

static void put_backends(admin_conn_t *c, const char *name)
{
    gateway_t *gw = c->admin->gw;
    sl_error_t err = {0};
    /* The running configuration is parsed again from its text: in bulk (util/jmem.h). */
    sl_jmem_scope_t scope;
    sl_jmem_begin(&scope, gw->current->text_len * 8);
    cJSON *root = parse_body(c, &err);
    int rc = root ? gw_set_backends(gw, name, root, "PUT /upstreams", &err) : SL_ECONFIG;
    cJSON_Delete(root);
    sl_jmem_end(&scope);
    if (rc == 0) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddBoolToObject(j, "applied", true);
        cJSON_AddStringToObject(j, "upstream", name);
        cJSON_AddNumberToObject(j, "generation", (double)gw->current->generation);
        respond_json(c, 200, j, NULL);
        cJSON_Delete(j);
    } else {
        respond_error(c,
                      rc == SL_ENOUPSTREAM ? 404
                      : rc == SL_ECONFLICT ? 409
                                           : 400,
                      err.msg, NULL);
    }
}

static void route_request(admin_conn_t *c)
{
    gateway_t *gw = c->admin->gw;
    const char *method = llhttp_method_name((llhttp_method_t)c->parser.method);
    char *q = strchr(c->url, '?');
    if (q)
        *q = '\0';
    const char *p = c->url;
    bool get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
    bool put = strcmp(method, "PUT") == 0;
    if (!strcmp(p, "/healthz")) {
        if (!get)
            return respond_error(c, 405, "use GET", "Allow: GET\r\n");
        return respond(c, 200, "text/plain", NULL, "ok\n", 3);
    }
    if (!strcmp(p, "/readyz")) {
        if (!get)
            return respond_error(c, 405, "use GET", "Allow: GET\r\n");
        bool ready = gw->ready && !sl_server_is_draining(gw->server);
        return ready ? respond(c, 200, "text/plain", NULL, "ready\n", 6)
                     : respond(c, 503, "text/plain", NULL, "not ready\n", 10);
    }
    if (!strcmp(p, "/metrics")) {
        if (!get)
            return respond_error(c, 405, "use GET", "Allow: GET\r\n");
        size_t len;
        char *text = gw_metrics_render(gw, &len);
        respond(c, 200, "text/plain; version=0.0.4; charset=utf-8", NULL, text, len);
        free(text);
        return;
    }
    if (!strcmp(p, "/config")) {
        if (get)
            return get_config(c);
        if (put)
            return require_token(c) ? put_config(c) : (void)0;
        return respond_error(c, 405, "use GET or PUT", "Allow: GET, PUT\r\n");
    }
    if (!strcmp(p, "/upstreams")) {
        if (!get)
            return respond_error(c, 405, "use GET", "Allow: GET\r\n");
        return get_upstreams(c);
    }
    static const char up[] = "/upstreams/";
    size_t plen = strlen(p);
    if (!strncmp(p, up, sizeof(up) - 1) && plen > sizeof(up) - 1 + 9 &&
        !strcmp(p + plen - 9, "/backends")) {
        char name[256];
        size_t n = plen - (sizeof(up) - 1) - 9;
        if (n == 0 || n >= sizeof(name) || memchr(p + sizeof(up) - 1, '/', n))
            return respond_error(c, 404, "no such upstream", NULL);
        memcpy(name, p + sizeof(up) - 1, n);
        name[n] = '\0';
        if (!put)
            return respond_error(c, 405, "use PUT", "Allow: PUT\r\n");
        return require_token(c) ? put_backends(c, name) : (void)0;
    }
    respond_error(c, 404, "no such admin endpoint", NULL);
}

/* ---- parsing ----------------------------------------------------------------------------- */

static admin_conn_t *conn_of(llhttp_t *p)
{
    return p->data;
}

static int on_url(llhttp_t *p, const char *at, size_t len)
{
    admin_conn_t *c = conn_of(p);
    if (c->url_len + len >= sizeof(c->url))
        return HPE_USER;
    memcpy(c->url + c->url_len, at, len);
    c->url_len += len;
    c->url[c->url_len] = '\0';
    return 0;
}

static int on_field(llhttp_t *p, const char *at, size_t len)
{
    admin_conn_t *c = conn_of(p);
    if (c->hdr != H_NONE || c->field_len == (size_t)-1) {
        c->field_len = 0;
        c->hdr = H_NONE;
    }
    size_t take = c->field_len + len < sizeof(c->field) ? len : 0;
    memcpy(c->field + c->field_len, at, take);
    c->field_len += take;
    return 0;
}

static int on_value(llhttp_t *p, const char *at, size_t len)
{
    admin_conn_t *c = conn_of(p);
    if (c->hdr == H_NONE) {
        if (c->field_len == 13 && !strncasecmp(c->field, "authorization", 13))
            c->hdr = H_AUTH;
        else if (c->field_len == 12 && !strncasecmp(c->field, "content-type", 12))
            c->hdr = H_CTYPE;
        else if (c->field_len == 6 && !strncasecmp(c->field, "expect", 6))
            c->hdr = H_EXPECT;
        else
            c->hdr = -1;
    }
    if (c->hdr == H_EXPECT) {
        c->expect_continue = len >= 12 && !strncasecmp(at, "100-continue", 12);
        return 0;
    }
    char *dst = c->hdr == H_AUTH ? c->auth : c->hdr == H_CTYPE ? c->ctype : NULL;
    size_t *dlen = c->hdr == H_AUTH ? &c->auth_len : c->hdr == H_CTYPE ? &c->ctype_len : NULL;
    size_t cap = c->hdr == H_AUTH ? sizeof(c->auth) : sizeof(c->ctype);
    if (dst && *dlen + len >= cap)
        return c->hdr == H_AUTH ? HPE_USER : 0; /* a token we cannot hold is refused, not cut */
    if (dst) {
        memcpy(dst + *dlen, at, len);
        *dlen += len;
    }
    return 0;
}

static int on_value_complete(llhttp_t *p)
{
    admin_conn_t *c = conn_of(p);
    c->field_len = (size_t)-1; /* the next field piece starts a new header */
    return 0;
}

static int on_headers_complete(llhttp_t *p)
{
    admin_conn_t *c = conn_of(p);
    if ((p->flags & F_CONTENT_LENGTH) && p->content_length > MAX_BODY) {
        c->too_large = true;
        return HPE_USER;
    }
    if ((p->flags & F_CONTENT_LENGTH) && p->content_length > c->body_cap)
        body_reserve(c, (size_t)p->content_length); /* at once, not through ten reallocs */
    if (c->expect_continue && ((p->flags & F_CHUNKED) || p->content_length)) {
        /* curl waits a second for this before sending a large body */
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        uv_buf_t b = uv_buf_init((char *)cont, sizeof(cont) - 1);
        uv_try_write(&c->h.stream, &b, 1);
    }
    return 0;
}

static void body_free(admin_conn_t *c)
{
    if (c->body_pooled)
        sl_pool_free(c->body);
    else
        free(c->body);
    c->body = NULL;
    c->body_cap = 0;
    c->body_pooled = false;
}

/* Room for cap bytes of body (what is in it is kept). A big one (a configuration of thousands
 * of routes) comes from the block pool: recycled memory, not fresh pages. */
static void body_reserve(admin_conn_t *c, size_t cap)
{
    if (cap < SL_SLAB_BLOCK / 2 && !c->body_pooled) {
        c->body = sl_xrealloc(c->body, cap);
        c->body_cap = cap;
        return;
    }
    size_t got;
    char *body = sl_pool_alloc(cap, &got);
    if (c->body_len)
        memcpy(body, c->body, c->body_len);
    size_t len = c->body_len;
    body_free(c);
    c->body = body;
    c->body_cap = got;
    c->body_len = len;
    c->body_pooled = true;
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
    admin_conn_t *c = conn_of(p);
    if (c->body_len + len > MAX_BODY) {
        c->too_large = true;
        return HPE_USER;
    }
    if (c->body_len + len > c->body_cap) {
        size_t cap = c->body_cap ? c->body_cap : 4096;
        while (cap < c->body_len + len)
            cap *= 2;
        body_reserve(c, cap);
    }
    memcpy(c->body + c->body_len, at, len);
    c->body_len += len;
    return 0;
}

static int on_message_complete(llhttp_t *p)
{
    conn_of(p)->done = true;
    return HPE_PAUSED;
}

static const llhttp_settings_t *settings(void)
{
    static llhttp_settings_t s;
    static bool init;
    if (!init) {
        llhttp_settings_init(&s);
        s.on_url = on_url;
        s.on_header_field = on_field;
        s.on_header_value = on_value;
        s.on_header_value_complete = on_value_complete;
        s.on_headers_complete = on_headers_complete;
        s.on_body = on_body;
        s.on_message_complete = on_message_complete;
        init = true;
    }
    return &s;
}

static void reset_request(admin_conn_t *c)
{
    c->url_len = c->field_len = c->auth_len = c->ctype_len = 0;
    c->url[0] = '\0';
    c->hdr = H_NONE;
    c->expect_continue = false;
    body_free(c);
    c->body_len = 0;
    c->head_bytes = 0;
    c->done = false;
}

/* ---- connections ------------------------------------------------------------------------- */

static void on_conn_closed(uv_handle_t *h)
{
    admin_conn_t *c = h->data;
    if (--c->pending_close == 0) {
        body_free(c);
        free(c->pending);
        free(c);
    }
}

static void conn_close(admin_conn_t *c)
{
    if (c->closing)
        return;
    c->closing = true;
    gw_admin_t *a = c->admin;
    if (c->prev)
        c->prev->next = c->next;
    else
        a->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->pending_close = 2;
    uv_close(&c->h.handle, on_conn_closed);
    uv_close((uv_handle_t *)&c->timer, on_conn_closed);
}

static void on_idle(uv_timer_t *t)
{
    conn_close(t->data);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    static char scratch[65536]; /* control thread only; parsed (and copied) before reuse */
    *buf = uv_buf_init(scratch, sizeof(scratch));
}

#define MAX_PENDING (64 * 1024)

static void feed(admin_conn_t *c, const char *p, size_t left);

/* Bytes that arrive while an answer is being written (pipelining) wait here. */
static void keep_pending(admin_conn_t *c, const char *p, size_t n)
{
    if (c->pending_len + n > MAX_PENDING) {
        conn_close(c);
        return;
    }
    c->pending = sl_xrealloc(c->pending, c->pending_len + n);
    memcpy(c->pending + c->pending_len, p, n);
    c->pending_len += n;
}

static void feed_pending(admin_conn_t *c)
{
    if (!c->pending_len || c->closing || c->writing)
        return;
    char *data = c->pending;
    size_t n = c->pending_len;
    c->pending = NULL;
    c->pending_len = 0;
    feed(c, data, n);
    free(data);
}

static void feed(admin_conn_t *c, const char *p, size_t left)
{
    while (left && !c->closing && !c->writing) {
        llhttp_errno_t e = llhttp_execute(&c->parser, p, left);
        size_t used = left;
        if (e == HPE_PAUSED) {
            used = (size_t)(llhttp_get_error_pos(&c->parser) - p);
            llhttp_resume(&c->parser);
        } else if (e != HPE_OK) {
            bool big = c->too_large;
            c->too_large = true;  /* closes after the answer */
            c->discarding = true; /* what follows is dropped */
            const char *why = llhttp_get_error_reason(&c->parser);
            if (big)
                respond_error(c, 413, "body too large (the limit is 16 MiB)", NULL);
            else
                respond_error(c, 400, why ? why : "request too large or malformed", NULL);
            return;
        }
        c->head_bytes += used;
        p += used;
        left -= used;
        if (c->done) {
            route_request(c);
            reset_request(c);
        }
    }
    if (left && !c->closing)
        keep_pending(c, p, left);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    admin_conn_t *c = s->data;
    if (nread < 0) {
        conn_close(c);
        return;
    }
    if (nread == 0 || c->discarding)
        return;
    uv_timer_again(&c->timer);
    if (c->writing || c->pending_len)
        keep_pending(c, buf->base, (size_t)nread);
    else
        feed(c, buf->base, (size_t)nread);
}

static void on_connection(uv_stream_t *server, int status)
{
    gw_admin_t *a = server->data;
    if (status < 0 || a->stopping)
        return;
    admin_conn_t *c = sl_xcalloc(1, sizeof(*c));
    c->admin = a;
    if (a->is_unix)
        uv_pipe_init(server->loop, &c->h.pipe, 0);
    else
        uv_tcp_init(server->loop, &c->h.tcp);
    c->h.handle.data = c;
    uv_timer_init(server->loop, &c->timer);
    c->timer.data = c;
    if (uv_accept(server, &c->h.stream) != 0) {
        c->pending_close = 2;
        uv_close(&c->h.handle, on_conn_closed);
        uv_close((uv_handle_t *)&c->timer, on_conn_closed);
        return;
    }
    c->next = a->conns;
    if (a->conns)
        a->conns->prev = c;
    a->conns = c;
    llhttp_init(&c->parser, HTTP_REQUEST, settings());
    c->parser.data = c;
    uv_timer_start(&c->timer, on_idle, IDLE_MS, IDLE_MS);
    uv_read_start(&c->h.stream, on_alloc, on_read);
}

int gw_admin_start(gateway_t *gw, uv_loop_t *loop, sl_error_t *err)
{
    const char *addr = gw->current->admin_listen;
    int fd = sl_server_control_listen(gw->server, addr, err);
    if (fd < 0) {
        sl_error_t e2 = *err;
        return sl_error_set(err, fd, "admin API: %s", e2.msg);
    }
    gw_admin_t *a = sl_xcalloc(1, sizeof(*a));
    a->gw = gw;
    a->is_unix = strncmp(addr, "unix:", 5) == 0;
    int rc;
    if (a->is_unix) {
        a->unix_path = sl_xstrdup(addr + 5);
        uv_pipe_init(loop, &a->listener.pipe, 0);
        rc = uv_pipe_open(&a->listener.pipe, fd);
    } else {
        uv_tcp_init(loop, &a->listener.tcp);
        rc = uv_tcp_open(&a->listener.tcp, fd);
    }
    a->listener.handle.data = a;
    gw->admin = a; /* from here gw_admin_stop can close the handle */
    if (rc == 0)
        rc = uv_listen(&a->listener.stream, 128, on_connection);
    if (rc)
        return sl_error_set(err, rc, "admin API on %s: %s", addr, uv_strerror(rc));
    SL_INFO("admin API on %s", addr);
    return 0;
}

static void on_listener_closed(uv_handle_t *h)
{
    gw_admin_t *a = h->data;
    free(a->unix_path);
    free(a);
}

void gw_admin_stop(gateway_t *gw)
{
    gw_admin_t *a = gw->admin;
    if (!a || a->stopping)
        return;
    a->stopping = true;
    while (a->conns)
        conn_close(a->conns);
    if (a->unix_path && !sl_server_upgraded(gw->server))
        unlink(a->unix_path);
    gw->admin = NULL;
    uv_close(&a->listener.handle, on_listener_closed);
}
