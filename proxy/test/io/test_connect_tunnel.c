/* HTTP CONNECT through a forward proxy (io/connect_tunnel.c): the CONNECT target and pool key
 * of a peer, the request with its credentials, and the exchange over a socketpair whose other
 * end plays the proxy: a 2xx whose tunnel bytes come in the same read (read first afterwards),
 * informational answers and answers split over reads, refusals, garbage, an early close, a head
 * that does not fit, and the explanations of the stages around the exchange. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "io/connect_tunnel.h"
#include "io/stream_impl.h"
#include "sluice/error.h"

static sl_peer_t peer_for(const char *addr, const char *sni)
{
    sl_peer_t p;
    cr_assert_eq(sl_peer_new(&p, addr, sni != NULL, sni), 0);
    cr_assert_eq(sl_peer_set_proxy(&p, "127.0.0.1:3128"), 0);
    return p;
}

/* ---- target, key, options ---------------------------------------------------------------- */

Test(connect_tunnel, target_is_host_or_sni_or_ip_with_the_peers_port)
{
    char buf[300];
    sl_peer_t p = peer_for("10.0.0.1:443", NULL);
    cr_assert_eq(sl__ctun_target(&p, buf, sizeof(buf)), 0);
    cr_assert_str_eq(buf, "10.0.0.1:443");
    p = peer_for("10.0.0.1:443", "advanced.pingora.local");
    sl__ctun_target(&p, buf, sizeof(buf));
    cr_assert_str_eq(buf, "advanced.pingora.local:443");
    p.options.proxy.host = "backend.internal";
    sl__ctun_target(&p, buf, sizeof(buf));
    cr_assert_str_eq(buf, "backend.internal:443");
    p = peer_for("[2001:db8::5]:8443", NULL);
    sl__ctun_target(&p, buf, sizeof(buf));
    cr_assert_str_eq(buf, "[2001:db8::5]:8443");
    /* Through a proxy, logs name the target. */
    p = peer_for("0.0.0.0:8080", NULL);
    p.options.proxy.host = "blue.example";
    sl_peer_addr_str(&p, buf, sizeof(buf));
    cr_assert_str_eq(buf, "blue.example:8080");
    /* Nothing that could end the request line. */
    p.options.proxy.host = "a b";
    cr_assert_eq(sl__ctun_target(&p, buf, sizeof(buf)), SL_ECONFIG);
    p.options.proxy.host = "x\r\nEvil: 1";
    cr_assert_eq(sl__ctun_target(&p, buf, sizeof(buf)), SL_ECONFIG);
    p = peer_for("unix:/tmp/x.sock", NULL);
    cr_assert_eq(sl__ctun_target(&p, buf, sizeof(buf)), SL_ECONFIG);
}

Test(connect_tunnel, proxy_address_needs_a_port)
{
    sl_peer_t p;
    sl_peer_init(&p);
    cr_assert_eq(sl_peer_set_proxy(&p, "127.0.0.1:0"), SL_ECONFIG);
    cr_assert_eq(sl_peer_set_proxy(&p, "proxy.corp:3128"), SL_ECONFIG);
    cr_assert_eq(sl_peer_set_proxy(&p, "[::1]:3128"), 0);
    cr_assert_eq(p.options.proxy.addr.ss_family, AF_INET6);
    cr_assert_eq(sl_peer_set_proxy(&p, "unix:/run/proxy.sock"), 0);
    cr_assert_eq(p.options.proxy.addr.ss_family, AF_UNIX);
}

Test(connect_tunnel, pool_key_tells_tunnels_apart)
{
    unsigned char direct[32], a[32], b[32], zero[32] = {0};
    sl_peer_t p;
    sl_peer_new(&p, "10.0.0.1:443", true, "x.example");
    sl__ctun_key(&p, direct);
    cr_assert_eq(memcmp(direct, zero, 32), 0);
    cr_assert_eq(sl_peer_set_proxy(&p, "127.0.0.1:3128"), 0);
    sl__ctun_key(&p, a);
    cr_assert_neq(memcmp(a, zero, 32), 0);
    sl_peer_set_proxy(&p, "127.0.0.1:3129");
    sl__ctun_key(&p, b);
    cr_assert_neq(memcmp(a, b, 32), 0);
    sl_peer_set_proxy(&p, "127.0.0.1:3128");
    p.options.proxy.authorization = "Basic YTpi";
    sl__ctun_key(&p, b);
    cr_assert_neq(memcmp(a, b, 32), 0);
    p.options.proxy.authorization = NULL;
    p.options.proxy.host = "y.example";
    sl__ctun_key(&p, b);
    cr_assert_neq(memcmp(a, b, 32), 0);
    p.options.proxy.host = NULL;
    sl__ctun_key(&p, b);
    cr_assert_eq(memcmp(a, b, 32), 0);
}

/* ---- the exchange ------------------------------------------------------------------------ */

typedef struct run {
    uv_loop_t loop;
    int fd; /* the proxy's end */
    sl_stream_t *st;
    int done_calls, err;
    char why[512];
    char after[256]; /* what the stream read after a successful exchange */
    size_t after_len;
    const char *later; /* written by the proxy 20 ms after the start */
    uv_timer_t timer;
} run_t;

static run_t R;

static void after_alloc(sl_stream_t *st, size_t suggested, uv_buf_t *buf)
{
    *buf = uv_buf_init(R.after + R.after_len, (unsigned)(sizeof(R.after) - 1 - R.after_len));
}

static void after_read(sl_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    if (nread > 0)
        R.after_len += (size_t)nread;
    if (nread < 0 || R.after_len > 0)
        sl_stream_close(st, NULL);
}

static void done(sl_stream_t *st, int err)
{
    R.done_calls++;
    R.err = err;
    const char *why = sl__ctun_why(st, err);
    snprintf(R.why, sizeof(R.why), "%s", why ? why : "");
    if (err) {
        sl_stream_close(st, NULL);
        return;
    }
    /* The tunnel: what the proxy relayed with its answer comes first. */
    cr_assert_eq(sl_stream_read_start(st, after_alloc, after_read), 0);
}

static void write_later(uv_timer_t *t)
{
    cr_assert_eq(write(R.fd, R.later, strlen(R.later)), (ssize_t)strlen(R.later));
    uv_close((uv_handle_t *)t, NULL);
}

/* Runs one exchange for peer against `answer` (NULL: the proxy closes at once); returns the
 * request the proxy received. */
static const char *exchange(const sl_peer_t *peer, const char *answer, size_t answer_len)
{
    static char req[4096];
    memset(&R.after, 0, sizeof(R.after));
    R.after_len = 0;
    R.done_calls = 0;
    uv_loop_init(&R.loop);
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    R.fd = sv[1];
    R.st = sl__stream_new(&R.loop, SL_STREAM_PIPE, 0);
    cr_assert_eq(uv_pipe_open(&R.st->u.pipe, sv[0]), 0);
    cr_assert_eq(sl__ctun_attach(R.st, peer), 0);
    if (answer)
        cr_assert_eq(write(R.fd, answer, answer_len), (ssize_t)answer_len);
    else
        shutdown(R.fd, SHUT_WR);
    if (R.later) {
        uv_timer_init(&R.loop, &R.timer);
        uv_timer_start(&R.timer, write_later, 20, 0);
    }
    cr_assert_eq(sl__ctun_start(R.st, done), 0);
    uv_run(&R.loop, UV_RUN_DEFAULT);
    sl__stream_thread_cleanup();
    uv_run(&R.loop, UV_RUN_DEFAULT);
    cr_assert_eq(uv_loop_close(&R.loop), 0);
    cr_assert_eq(R.done_calls, 1);
    ssize_t n = read(R.fd, req, sizeof(req) - 1);
    req[n > 0 ? n : 0] = '\0';
    close(R.fd);
    R.later = NULL;
    return req;
}

Test(connect_tunnel, established_with_credentials_and_the_tunnels_first_bytes)
{
    sl_peer_t p = peer_for("10.0.0.1:443", "advanced.pingora.local");
    p.options.proxy.user = "u";
    p.options.proxy.password = "p";
    static const char answer[] = "HTTP/1.1 200 Connection established\r\n\r\nSSH-2.0-x\r\n";
    const char *req = exchange(&p, answer, sizeof(answer) - 1);
    cr_assert_str_eq(req, "CONNECT advanced.pingora.local:443 HTTP/1.1\r\n"
                          "Host: advanced.pingora.local:443\r\n"
                          "Proxy-Authorization: Basic dTpw\r\n\r\n");
    cr_assert_eq(R.err, 0);
    cr_assert_str_eq(R.why, ""); /* nothing to explain: the tunnel left the stream */
    cr_assert_str_eq(R.after, "SSH-2.0-x\r\n");
}

Test(connect_tunnel, informational_then_success_split_over_reads)
{
    sl_peer_t p = peer_for("10.0.0.1:8080", NULL);
    p.options.proxy.authorization = "Bearer tok.en";
    static const char first[] = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 2";
    R.later = "00 OK\r\nVia: 1.1 proxy\r\n\r\nlater";
    const char *req = exchange(&p, first, sizeof(first) - 1);
    cr_assert_str_eq(req, "CONNECT 10.0.0.1:8080 HTTP/1.1\r\nHost: 10.0.0.1:8080\r\n"
                          "Proxy-Authorization: Bearer tok.en\r\n\r\n");
    cr_assert_eq(R.err, 0);
    cr_assert_str_eq(R.after, "later");
}

Test(connect_tunnel, refused_says_the_status_and_reason)
{
    sl_peer_t p = peer_for("10.0.0.1:443", NULL);
    static const char answer[] = "HTTP/1.1 407 Proxy Authentication Required\r\n"
                                 "Proxy-Authenticate: Basic realm=\"x\"\r\n"
                                 "Content-Length: 3\r\n\r\nabc";
    exchange(&p, answer, sizeof(answer) - 1);
    cr_assert_eq(R.err, SL_ETUNNEL);
    cr_assert_str_eq(R.why, "upstream proxy 127.0.0.1:3128 refused CONNECT: 407 Proxy "
                            "Authentication Required");
    static const char forbidden[] = "HTTP/1.0 403 \r\n\r\n";
    exchange(&p, forbidden, sizeof(forbidden) - 1);
    cr_assert_str_eq(R.why, "upstream proxy 127.0.0.1:3128 refused CONNECT: 403");
}

Test(connect_tunnel, garbage_close_and_oversize_are_invalid)
{
    sl_peer_t p = peer_for("10.0.0.1:443", NULL);
    static const char ssh[] = "SSH-2.0-OpenSSH_9.2\r\n";
    exchange(&p, ssh, sizeof(ssh) - 1);
    cr_assert_eq(R.err, SL_ETUNNEL);
    cr_assert(strstr(R.why, "upstream proxy 127.0.0.1:3128 sent an invalid response to CONNECT"),
              "%s", R.why);
    static const char status[] = "HTTP/1.1 2x0 OK\r\n\r\n";
    exchange(&p, status, sizeof(status) - 1);
    cr_assert_eq(R.err, SL_ETUNNEL);
    static const char field[] = "HTTP/1.1 200 OK\r\nBad Field: x\r\n\r\n";
    exchange(&p, field, sizeof(field) - 1);
    cr_assert_eq(R.err, SL_ETUNNEL);
    exchange(&p, NULL, 0);
    cr_assert_eq(R.err, SL_ETUNNEL);
    cr_assert_str_eq(R.why, "upstream proxy 127.0.0.1:3128 closed the connection before "
                            "answering CONNECT");
    static char big[20000];
    memset(big, 'a', sizeof(big));
    memcpy(big, "HTTP/1.1 200 OK\r\nX-Pad: ", 24);
    exchange(&p, big, sizeof(big));
    cr_assert_eq(R.err, SL_ETUNNEL);
    cr_assert(strstr(R.why, "header larger than 16384 bytes"), "%s", R.why);
}

Test(connect_tunnel, bad_targets_and_credentials_are_refused_before_dialling)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    sl_stream_t *st = sl__stream_new(&loop, SL_STREAM_TCP, 0);
    sl_peer_t p = peer_for("10.0.0.1:443", NULL);
    p.options.proxy.user = "a:b";
    p.options.proxy.password = "c";
    cr_assert_eq(sl__ctun_attach(st, &p), SL_ECONFIG);
    p.options.proxy.user = "a";
    p.options.proxy.password = "c\r\nX: y";
    cr_assert_eq(sl__ctun_attach(st, &p), SL_ECONFIG);
    p.options.proxy.user = NULL;
    p.options.proxy.authorization = "Basic x\ny";
    cr_assert_eq(sl__ctun_attach(st, &p), SL_ECONFIG);
    sl_peer_t u = peer_for("unix:/tmp/x.sock", NULL);
    cr_assert_eq(sl__ctun_attach(st, &u), SL_ECONFIG);
    cr_assert_null(sl__ctun_why(st, SL_ETIMEDOUT_CONNECT));
    /* The stages around the exchange explain themselves too. */
    p.options.proxy.authorization = NULL;
    cr_assert_eq(sl__ctun_attach(st, &p), 0);
    cr_assert_str_eq(sl__ctun_why(st, UV_ECONNREFUSED),
                     "cannot connect to upstream proxy 127.0.0.1:3128: connection refused");
    cr_assert_eq(sl__ctun_attach(st, &p), 0);
    cr_assert_str_eq(sl__ctun_why(st, SL_ETIMEDOUT_CONNECT),
                     "connecting to upstream proxy 127.0.0.1:3128 timed out");
    sl_stream_close(st, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(uv_loop_close(&loop), 0);
}
