/* sl-forward: a minimal forwarding proxy on the engine, for tests and `make bench`.
 *
 *   sl-forward --listen 127.0.0.1:8080 --upstream 127.0.0.1:9000 [--threads N]
 *              [--connect-timeout MS] [--read-timeout MS] [--write-timeout MS]
 *              [--idle-timeout MS] [--tunnel-timeout MS] [--header-timeout MS] [--body-timeout MS]
 *              [--keepalive-timeout MS] [--max-header-size N] [--max-headers N]
 *              [--max-request-line N] [--pool-size N] [--retries N] [--log-requests]
 *              [--pending-peer MS] [--pending-filter MS]   (hooks that finish later, for tests)
 *              [--tls-cert F --tls-key F [--client-ca F] [--h2] [--handshake-timeout MS]]
 *                                                                   TLS listener
 *              [--upstream-tls [--sni NAME] [--ca F] [--client-cert F --client-key F]
 *               [--no-verify] [--upstream-alpn h1|h2|h2h1]]          TLS to the upstream */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SL_LOG_TAG "sl-forward"
#include <sluice/sluice.h>

typedef struct fwd {
    const char *upstream;
    long connect_ms, read_ms, write_ms, idle_ms, tunnel_ms;
    long pending_peer_ms, pending_filter_ms; /* finish these hooks later (tests of resume) */
    bool log_requests;
    bool upstream_tls; /* --upstream-tls */
    const char *sni, *ca, *client_cert, *client_key;
    bool no_verify;
    int alpn;
} fwd_t;

/* A hook that finishes later: a timer calls sl_session_resume. */
typedef struct later {
    uv_timer_t timer;
    sl_session_t *session;
    int rc;
} later_t;

static void later_closed(uv_handle_t *h)
{
    free(h->data);
}

static void later_fire(uv_timer_t *t)
{
    later_t *l = t->data;
    sl_session_resume(l->session, l->rc);
    uv_close((uv_handle_t *)&l->timer, later_closed);
}

static int finish_later(sl_session_t *s, long ms, int rc)
{
    later_t *l = calloc(1, sizeof(*l));
    if (!l)
        return SL_EINTERNAL;
    l->session = s;
    l->rc = rc;
    uv_timer_init(sl_worker_loop(sl_session_worker(s)), &l->timer);
    l->timer.data = l;
    uv_timer_start(&l->timer, later_fire, (uint64_t)ms, 0);
    return SL_PENDING;
}

static int request_filter(sl_session_t *s, void *ctx)
{
    fwd_t *f = sl_session_app(s);
    return f->pending_filter_ms >= 0 ? finish_later(s, f->pending_filter_ms, SL_CONTINUE)
                                     : SL_CONTINUE;
}

static int upstream_peer(sl_session_t *s, void *ctx, sl_peer_t *peer)
{
    fwd_t *f = sl_session_app(s);
    int rc = sl_peer_new(peer, f->upstream, f->upstream_tls, f->sni);
    peer->options.ca_file = f->ca;
    peer->options.client_cert = f->client_cert;
    peer->options.client_key = f->client_key;
    peer->options.alpn = (sl_alpn_t)f->alpn;
    if (f->no_verify)
        peer->options.verify_cert = peer->options.verify_hostname = false;
    if (f->connect_ms >= 0)
        peer->options.connect_timeout_ms = (uint64_t)f->connect_ms;
    if (f->read_ms >= 0)
        peer->options.read_timeout_ms = (uint64_t)f->read_ms;
    if (f->write_ms >= 0)
        peer->options.write_timeout_ms = (uint64_t)f->write_ms;
    if (f->idle_ms >= 0)
        peer->options.idle_timeout_ms = (uint64_t)f->idle_ms;
    if (f->tunnel_ms >= 0)
        peer->options.tunnel_idle_timeout_ms = (uint64_t)f->tunnel_ms;
    if (rc == 0 && f->pending_peer_ms >= 0)
        return finish_later(s, f->pending_peer_ms, SL_CONTINUE);
    return rc;
}

static int connected(sl_session_t *s, void *ctx, bool reused, const sl_peer_t *peer, int fd)
{
    fwd_t *f = sl_session_app(s);
    if (f->log_requests)
        SL_INFO("connected to upstream, reused=%s", reused ? "true" : "false");
    return SL_CONTINUE;
}

static void logging(sl_session_t *s, void *ctx, int err)
{
    fwd_t *f = sl_session_app(s);
    if (!f->log_requests)
        return;
    const sl_request_header_t *r = sl_session_req(s);
    char tls[400] = "";
    const sl_stream_t *st = sl_session_stream(s);
    if (st && sl_stream_is_tls(st)) {
        char subject[256];
        if (sl_stream_client_cert_subject(st, subject, sizeof(subject)) != 0)
            snprintf(subject, sizeof(subject), "-");
        const char *sni = sl_stream_sni(st), *alpn = sl_stream_alpn(st);
        snprintf(tls, sizeof(tls), " tls=%s sni=%s alpn=%s resumed=%s client=\"%s\"",
                 sl_stream_tls_version(st), sni ? sni : "-", alpn ? alpn : "-",
                 sl_stream_tls_resumed(st) ? "true" : "false", subject);
    }
    SL_INFO("%s %.*s %.*s -> %d err=%s bytes=%llu%s", sl_session_client_ip(s), (int)r->method.len,
            r->method.ptr, (int)r->uri.len, r->uri.ptr, sl_session_status(s),
            err ? sl_err_name(err) : "-", (unsigned long long)sl_session_body_bytes_sent(s), tls);
}

static long num(const char *flag, const char *v)
{
    char *end;
    long n = strtol(v, &end, 10);
    if (*end || n < 0) {
        fprintf(stderr, "sl-forward: %s needs a number, got '%s'\n", flag, v);
        exit(2);
    }
    return n;
}

int main(int argc, char **argv)
{
    static fwd_t f = {.connect_ms = -1,
                      .read_ms = -1,
                      .write_ms = -1,
                      .idle_ms = -1,
                      .tunnel_ms = -1,
                      .pending_peer_ms = -1,
                      .pending_filter_ms = -1};
    const char *listen = "127.0.0.1:8080";
    long threads = 1, header_ms = -1, body_ms = -1, ka_ms = -1, max_hdr = -1, max_hdrs = -1;
    long max_line = -1, pool = -1, retries = -1;
    const char *tls_cert = NULL, *tls_key = NULL, *client_ca = NULL;
    long hs_ms = -1;
    bool h2 = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--log-requests") == 0) {
            f.log_requests = true;
            continue;
        }
        if (strcmp(a, "--upstream-tls") == 0) {
            f.upstream_tls = true;
            continue;
        }
        if (strcmp(a, "--no-verify") == 0) {
            f.no_verify = true;
            continue;
        }
        if (strcmp(a, "--h2") == 0) {
            h2 = true;
            continue;
        }
        if (!v) {
            fprintf(stderr, "sl-forward: %s needs a value\n", a);
            return 2;
        }
        i++;
        if (strcmp(a, "--listen") == 0)
            listen = v;
        else if (strcmp(a, "--upstream") == 0)
            f.upstream = v;
        else if (strcmp(a, "--threads") == 0)
            threads = num(a, v);
        else if (strcmp(a, "--connect-timeout") == 0)
            f.connect_ms = num(a, v);
        else if (strcmp(a, "--read-timeout") == 0)
            f.read_ms = num(a, v);
        else if (strcmp(a, "--write-timeout") == 0)
            f.write_ms = num(a, v);
        else if (strcmp(a, "--idle-timeout") == 0)
            f.idle_ms = num(a, v);
        else if (strcmp(a, "--header-timeout") == 0)
            header_ms = num(a, v);
        else if (strcmp(a, "--body-timeout") == 0)
            body_ms = num(a, v);
        else if (strcmp(a, "--keepalive-timeout") == 0)
            ka_ms = num(a, v);
        else if (strcmp(a, "--max-header-size") == 0)
            max_hdr = num(a, v);
        else if (strcmp(a, "--max-headers") == 0)
            max_hdrs = num(a, v);
        else if (strcmp(a, "--max-request-line") == 0)
            max_line = num(a, v);
        else if (strcmp(a, "--pool-size") == 0)
            pool = num(a, v);
        else if (strcmp(a, "--retries") == 0)
            retries = num(a, v);
        else if (strcmp(a, "--tls-cert") == 0)
            tls_cert = v;
        else if (strcmp(a, "--tls-key") == 0)
            tls_key = v;
        else if (strcmp(a, "--tunnel-timeout") == 0)
            f.tunnel_ms = num(a, v);
        else if (strcmp(a, "--handshake-timeout") == 0)
            hs_ms = num(a, v);
        else if (strcmp(a, "--client-ca") == 0)
            client_ca = v;
        else if (strcmp(a, "--sni") == 0)
            f.sni = v;
        else if (strcmp(a, "--ca") == 0)
            f.ca = v;
        else if (strcmp(a, "--client-cert") == 0)
            f.client_cert = v;
        else if (strcmp(a, "--client-key") == 0)
            f.client_key = v;
        else if (strcmp(a, "--upstream-alpn") == 0)
            f.alpn = !strcmp(v, "h2") ? SL_ALPN_H2 : !strcmp(v, "h2h1") ? SL_ALPN_H2H1 : SL_ALPN_H1;
        else if (strcmp(a, "--pending-peer") == 0)
            f.pending_peer_ms = num(a, v);
        else if (strcmp(a, "--pending-filter") == 0)
            f.pending_filter_ms = num(a, v);
        else {
            fprintf(stderr, "sl-forward: unknown argument %s\n", a);
            return 2;
        }
    }
    if (!f.upstream) {
        fprintf(stderr, "usage: sl-forward --listen ADDR --upstream ADDR [options]\n");
        return 2;
    }
    sl_tls_settings_t *tls = NULL;
    if (tls_cert) {
        sl_error_t err;
        if (sl_tls_settings_intermediate(tls_cert, tls_key ? tls_key : tls_cert, &tls, &err) != 0 ||
            (client_ca && sl_tls_settings_set_client_ca(tls, client_ca, &err) != 0)) {
            fprintf(stderr, "sl-forward: %s\n", err.msg);
            return 2;
        }
        if (h2)
            sl_tls_settings_enable_h2(tls);
        if (hs_ms >= 0)
            sl_tls_settings_set_handshake_timeout(tls, (uint64_t)hs_ms);
    }
    sl_opt_t opt = {0};
    sl_server_conf_t conf;
    sl_server_conf_init(&conf);
    conf.threads = (int)threads;
    conf.grace_period_seconds = 5;
    if (pool >= 0)
        conf.upstream_keepalive_pool_size = (size_t)pool;
    if (retries >= 0)
        conf.max_retries = (int)retries;
    sl_server_t *server;
    sl_server_new_with_conf(&opt, &conf, &server);
    sl_server_conf_release(&conf);
    static const sl_proxy_hooks_t hooks = {
        .request_filter = request_filter,
        .upstream_peer = upstream_peer,
        .connected_to_upstream = connected,
        .logging = logging,
    };
    sl_service_t *svc = sl_http_proxy_service_new(sl_server_conf(server), &hooks, &f);
    sl_http_options_t *o = sl_http_proxy_options(svc);
    if (header_ms >= 0)
        o->header_timeout_ms = (uint64_t)header_ms;
    if (body_ms >= 0)
        o->body_timeout_ms = (uint64_t)body_ms;
    if (ka_ms >= 0)
        o->keepalive_timeout_ms = (uint64_t)ka_ms;
    if (max_hdr >= 0)
        o->max_header_size = (size_t)max_hdr;
    if (max_hdrs >= 0)
        o->max_headers = (size_t)max_hdrs;
    if (max_line >= 0)
        o->max_request_line = (size_t)max_line;
    if ((tls ? sl_service_add_tls(svc, listen, tls) : sl_service_add_listen(svc, listen)) != 0) {
        fprintf(stderr, "sl-forward: invalid listen address %s\n", listen);
        return 2;
    }
    sl_server_add_service(server, svc);
    int code = sl_server_run_forever(server);
    sl_tls_settings_free(tls);
    return code;
}
