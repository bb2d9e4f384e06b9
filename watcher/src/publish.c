/* Pushing configs to sluice, or writing them to a file. */
#define SL_LOG_TAG "publish"
#include "sluice/log.h"
#include "publish.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "informer.h"
#include "kube.h"
#include "objects.h"
#include "util/mem.h"

#define PUSH_TIMEOUT_MS  30000
#define CHECK_TIMEOUT_MS 10000
#define BACKOFF_BASE_MS  200
#define BACKOFF_MAX_MS   5000
#define MAX_TOKEN        4096

typedef enum pub_state { PUB_IDLE, PUB_PUSHING, PUB_WAITING, PUB_CHECKING } pub_state_t;

struct wt_publisher {
    uv_loop_t *loop;
    wt_http_t *http;
    wt_publisher_opts_t o;
    char *push_url, *token_file, *output;
    pub_state_t state;
    wt_rendered_t cur; /* the latest config offered */
    bool have_cur;
    char inflight[65]; /* hash of the config being pushed */
    char acked[65];    /* hash of the last config sluice applied */
    char gw_hash[65];  /* the hash sluice reported for it */
    char rejected[65]; /* a config sluice refused (not retried) */
    bool applied_once;
    bool failing; /* the last push failed (log the first failure only) */
    unsigned attempt;
    wt_http_req_t *req;
    uv_timer_t retry, check;
    int open_handles;
    bool closing;
};

static void push(wt_publisher_t *p);

static const char *state_str(pub_state_t s)
{
    static const char *const names[] = {"idle", "pushing", "waiting", "checking"};
    return names[s];
}

static void set_state(wt_publisher_t *p, pub_state_t s)
{
    if (p->state != s)
        SL_TRACE("publisher: %s -> %s", state_str(p->state), state_str(s));
    p->state = s;
}

/* ---- output file ---------------------------------------------------------------------------- */

static int write_all(int fd, const char *b, size_t n)
{
    while (n) {
        ssize_t w = write(fd, b, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        b += w;
        n -= (size_t)w;
    }
    return 0;
}

static void write_output(wt_publisher_t *p)
{
    size_t n = strlen(p->output) + 32;
    char *tmp = sl_xmalloc(n);
    snprintf(tmp, n, "%s.tmp.%ld", p->output, (long)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    int rc = fd < 0 ? -1 : 0;
    if (!rc)
        rc = write_all(fd, p->cur.text, p->cur.len);
    if (!rc)
        rc = write_all(fd, "\n", 1);
    if (!rc)
        rc = fsync(fd);
    if (fd >= 0 && close(fd) != 0)
        rc = -1;
    if (!rc)
        rc = rename(tmp, p->output);
    if (rc) {
        SL_ERROR("cannot write %s: %s", p->output, strerror(errno));
        unlink(tmp);
    } else {
        memcpy(p->acked, p->cur.hash, 65);
        p->applied_once = true;
        SL_INFO("wrote config %.12s to %s (%zu bytes)", p->cur.hash, p->output, p->cur.len);
        if (p->o.on_applied)
            p->o.on_applied(p->o.arg);
    }
    free(tmp);
}

/* ---- pushing -------------------------------------------------------------------------------- */

static void on_retry(uv_timer_t *t)
{
    wt_publisher_t *p = t->data;
    if (p->state == PUB_WAITING)
        push(p);
}

static void retry_later(wt_publisher_t *p)
{
    set_state(p, PUB_WAITING);
    uv_timer_start(&p->retry, on_retry,
                   wt_backoff_ms(p->attempt++, BACKOFF_BASE_MS, BACKOFF_MAX_MS), 0);
}

/* "Authorization: Bearer <token>" from the token file, re-read every time (it may rotate). */
static char *auth_header(wt_publisher_t *p)
{
    if (!p->token_file)
        return NULL;
    FILE *f = fopen(p->token_file, "rb");
    if (!f) {
        SL_ERROR("cannot read --admin-token-file %s: %s", p->token_file, strerror(errno));
        return NULL;
    }
    char buf[MAX_TOKEN + 1];
    size_t n = fread(buf, 1, MAX_TOKEN, f);
    fclose(f);
    buf[n] = '\0';
    while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' '))
        buf[--n] = '\0';
    for (size_t i = 0; i < n; i++) {
        if ((unsigned char)buf[i] < 0x21 || buf[i] == 0x7f) {
            SL_ERROR("--admin-token-file %s: the token must be one word of printable characters",
                     p->token_file);
            return NULL;
        }
    }
    char *h = sl_xmalloc(n + 32);
    snprintf(h, n + 32, "Authorization: Bearer %s", buf);
    return h;
}

static void push_failed(wt_publisher_t *p, const wt_http_resp_t *resp)
{
    char msg[300];
    if (resp->status == 0)
        snprintf(msg, sizeof(msg), "%s", resp->error ? resp->error : "no answer");
    else
        snprintf(msg, sizeof(msg), "HTTP %ld %s", resp->status,
                 wt_kube_status_message(resp->body, resp->len, (char[256]){0}, 256));
    if (!p->failing || resp->status == 401 || resp->status == 403)
        SL_WARN("pushing config %.12s to %s failed: %s; retrying", p->inflight, p->push_url, msg);
    else
        SL_DEBUG("pushing config %.12s failed again: %s", p->inflight, msg);
    p->failing = true;
    retry_later(p);
}

static void on_push_done(wt_http_req_t *r, const wt_http_resp_t *resp, void *arg)
{
    wt_publisher_t *p = arg;
    p->req = NULL;
    set_state(p, PUB_IDLE);
    if (resp->status == 400) {
        char msg[600];
        SL_ERROR("sluice refused config %.12s: %s", p->inflight,
                 wt_kube_status_message(resp->body, resp->len, msg, sizeof(msg)));
        memcpy(p->rejected, p->inflight, 65);
        p->failing = false;
        p->attempt = 0;
    } else if (resp->status != 200) {
        push_failed(p, resp);
        return;
    } else {
        cJSON *j = cJSON_ParseWithLength(resp->body, resp->len);
        const char *h = WT_STR(j, "hash");
        if (p->failing)
            SL_INFO("sluice at %s is reachable again", p->push_url);
        p->failing = false;
        p->attempt = 0;
        memcpy(p->acked, p->inflight, 65);
        snprintf(p->gw_hash, sizeof(p->gw_hash), "%s", h ? h : "");
        p->applied_once = true;
        const cJSON *gen = WT_GET(j, "generation"), *apply = WT_GET(j, "apply_ms");
        SL_INFO("sluice applied config %.12s (generation %.0f; push %.1f ms, of which sluice's "
                "apply %.1f ms)",
                p->inflight, cJSON_IsNumber(gen) ? gen->valuedouble : 0.0, resp->seconds * 1000,
                cJSON_IsNumber(apply) ? apply->valuedouble : 0.0);
        if (h && p->have_cur && !strcmp(p->inflight, p->cur.hash) && strcmp(h, p->cur.gw_hash))
            SL_WARN("sluice reports hash %.12s for config %.12s, the watcher computed %.12s", h,
                    p->inflight, p->cur.gw_hash);
        cJSON_Delete(j);
        if (p->o.on_applied)
            p->o.on_applied(p->o.arg);
    }
    /* A newer config arrived meanwhile. */
    if (p->have_cur && strcmp(p->cur.hash, p->acked) && strcmp(p->cur.hash, p->rejected))
        push(p);
}

static void push(wt_publisher_t *p)
{
    if (!p->have_cur || p->closing)
        return;
    if (p->output) {
        set_state(p, PUB_IDLE);
        write_output(p);
        return;
    }
    if (p->req) { /* a check in flight: the push goes first */
        wt_http_cancel(p->req);
        p->req = NULL;
    }
    char *auth = auth_header(p);
    const char *headers[3] = {"Content-Type: application/json", auth, NULL};
    memcpy(p->inflight, p->cur.hash, 65);
    wt_http_opts_t ho = {
        .method = "PUT",
        .url = p->push_url,
        .headers = headers,
        .body = p->cur.text,
        .body_len = p->cur.len,
        .timeout_ms = PUSH_TIMEOUT_MS,
        .connect_timeout_ms = 2000,
        .max_body = 1u << 20,
        .on_done = on_push_done,
        .arg = p,
    };
    set_state(p, PUB_PUSHING);
    p->req = wt_http_start(p->http, &ho);
    free(auth);
    if (!p->req)
        retry_later(p);
}

void wt_publisher_submit(wt_publisher_t *p, wt_rendered_t *r)
{
    if (p->have_cur && !strcmp(p->cur.hash, r->hash)) {
        wt_rendered_free(r);
        return;
    }
    if (p->have_cur)
        wt_rendered_free(&p->cur);
    p->cur = *r;
    memset(r, 0, sizeof(*r));
    p->have_cur = true;
    if (p->state == PUB_PUSHING)
        return; /* pushed when the current push ends */
    if (p->state == PUB_WAITING) {
        uv_timer_stop(&p->retry);
        p->attempt = 0;
    }
    push(p);
}

bool wt_publisher_applied(const wt_publisher_t *p)
{
    return p->applied_once;
}

/* ---- checking ------------------------------------------------------------------------------- */

static void on_check_done(wt_http_req_t *r, const wt_http_resp_t *resp, void *arg)
{
    wt_publisher_t *p = arg;
    p->req = NULL;
    set_state(p, PUB_IDLE);
    if (resp->status != 200 || !resp->etag || !*p->gw_hash)
        return; /* sluice down: the next check (or the next push) finds it */
    if (strcmp(resp->etag, p->gw_hash) != 0 && p->have_cur &&
        strcmp(p->cur.hash, p->rejected) != 0) {
        char q[100];
        SL_INFO("sluice's config (hash %s) is not the one pushed (%.12s): it restarted or was "
                "changed; pushing again",
                wt_quote(q, sizeof(q), resp->etag), p->gw_hash);
        push(p);
    }
}

static void on_check(uv_timer_t *t)
{
    wt_publisher_t *p = t->data;
    if (p->state != PUB_IDLE || !p->applied_once || p->output)
        return;
    wt_http_opts_t ho = {
        .url = p->push_url,
        .timeout_ms = CHECK_TIMEOUT_MS,
        .connect_timeout_ms = 2000,
        .discard_body = true,
        .on_done = on_check_done,
        .arg = p,
    };
    set_state(p, PUB_CHECKING);
    p->req = wt_http_start(p->http, &ho);
    if (!p->req)
        set_state(p, PUB_IDLE);
}

/* ---- lifecycle ------------------------------------------------------------------------------ */

wt_publisher_t *wt_publisher_new(uv_loop_t *loop, wt_http_t *http, const wt_publisher_opts_t *o)
{
    wt_publisher_t *p = sl_xcalloc(1, sizeof(*p));
    p->loop = loop;
    p->http = http;
    p->o = *o;
    p->push_url = o->push_url ? sl_xstrdup(o->push_url) : NULL;
    p->token_file = o->admin_token_file ? sl_xstrdup(o->admin_token_file) : NULL;
    p->output = o->output ? sl_xstrdup(o->output) : NULL;
    uv_timer_init(loop, &p->retry);
    uv_timer_init(loop, &p->check);
    p->retry.data = p->check.data = p;
    p->open_handles = 2;
    uint64_t every = o->check_ms ? o->check_ms : 5000;
    if (!p->output)
        uv_timer_start(&p->check, on_check, every, every);
    return p;
}

static void on_closed(uv_handle_t *h)
{
    wt_publisher_t *p = h->data;
    if (--p->open_handles)
        return;
    if (p->have_cur)
        wt_rendered_free(&p->cur);
    free(p->push_url);
    free(p->token_file);
    free(p->output);
    free(p);
}

void wt_publisher_free(wt_publisher_t *p)
{
    if (!p)
        return;
    p->closing = true;
    wt_http_cancel(p->req);
    p->req = NULL;
    uv_close((uv_handle_t *)&p->retry, on_closed);
    uv_close((uv_handle_t *)&p->check, on_closed);
}
