/* sl-tcpbench: a bulk TCP source and reader for the `tcp` scenario of `make bench`.
 *
 *   sl-tcpbench serve ADDR                 upstream: every connection receives an endless
 *                                          stream of a fixed 256 KiB pattern (what it is sent
 *                                          is read and dropped)
 *   sl-tcpbench get ADDR [--conns N] [--seconds S] [--warmup S] [--verify BYTES]
 *                                          client: N connections read as fast as they can;
 *                                          after the warm-up, bytes are counted for S seconds
 *                                          and one JSON line is printed:
 *                                          {"bytes": B, "seconds": T, "conns": N}
 *                                          --verify: each connection first checks BYTES of
 *                                          the pattern byte by byte (then counting starts)
 *
 * One thread, one libuv loop, static buffers: it costs little CPU per byte, so it can share a
 * core with the upstream and still outpace the proxy under test. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#define BLOCK (256u * 1024)

static char pattern[BLOCK];
static char rbuf[BLOCK];
static uv_loop_t *loop;

static unsigned char pattern_at(uint64_t i)
{
    return (unsigned char)((i * 131u) ^ (i >> 9));
}

static int parse_addr(const char *s, struct sockaddr_storage *out)
{
    char host[64];
    const char *colon = strrchr(s, ':');
    if (!colon || (size_t)(colon - s) >= sizeof(host))
        return -1;
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = '\0';
    int port = (int)strtol(colon + 1, NULL, 10);
    if (uv_ip4_addr(host, port, (struct sockaddr_in *)out) == 0)
        return 0;
    return uv_ip6_addr(host, port, (struct sockaddr_in6 *)out);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    *buf = uv_buf_init(rbuf, sizeof(rbuf));
}

static void on_closed(uv_handle_t *h)
{
    free(h);
}

/* ---- serve ------------------------------------------------------------------------------- */

static void source_write(uv_stream_t *s);

static void on_source_written(uv_write_t *req, int status)
{
    uv_stream_t *s = req->handle;
    free(req);
    if (status < 0) {
        if (!uv_is_closing((uv_handle_t *)s))
            uv_close((uv_handle_t *)s, on_closed);
        return;
    }
    source_write(s);
}

static void source_write(uv_stream_t *s)
{
    if (uv_is_closing((uv_handle_t *)s))
        return;
    uv_write_t *req = malloc(sizeof(*req));
    uv_buf_t b = uv_buf_init(pattern, BLOCK);
    if (!req || uv_write(req, s, &b, 1, on_source_written) != 0) {
        free(req);
        uv_close((uv_handle_t *)s, on_closed);
    }
}

static void on_source_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    if (n < 0 && !uv_is_closing((uv_handle_t *)s))
        uv_close((uv_handle_t *)s, on_closed);
}

static void on_connection(uv_stream_t *server, int status)
{
    if (status < 0)
        return;
    uv_tcp_t *c = malloc(sizeof(*c));
    uv_tcp_init(loop, c);
    if (uv_accept(server, (uv_stream_t *)c) != 0) {
        uv_close((uv_handle_t *)c, on_closed);
        return;
    }
    uv_tcp_nodelay(c, 1);
    uv_read_start((uv_stream_t *)c, on_alloc, on_source_read);
    source_write((uv_stream_t *)c); /* two writes in flight: the socket never waits for us */
    source_write((uv_stream_t *)c);
}

static int serve(const char *addr)
{
    struct sockaddr_storage a;
    if (parse_addr(addr, &a) != 0) {
        fprintf(stderr, "sl-tcpbench: bad address %s\n", addr);
        return 2;
    }
    uv_tcp_t server;
    uv_tcp_init(loop, &server);
    int rc = uv_tcp_bind(&server, (struct sockaddr *)&a, 0);
    if (!rc)
        rc = uv_listen((uv_stream_t *)&server, 1024, on_connection);
    if (rc) {
        fprintf(stderr, "sl-tcpbench: cannot listen on %s: %s\n", addr, uv_strerror(rc));
        return 1;
    }
    return uv_run(loop, UV_RUN_DEFAULT);
}

/* ---- get --------------------------------------------------------------------------------- */

typedef struct getter {
    uv_tcp_t tcp;
    uv_connect_t req;
    uint64_t offset; /* bytes received on this connection */
} getter_t;

static uint64_t total, verify_bytes, verify_errors;
static int conns = 4, open_conns;
static double seconds = 10, warmup = 2;
static uint64_t start_bytes, start_ns, end_bytes, end_ns;
static int phase; /* 0 warm-up, 1 measuring, 2 done */

static void on_get_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    getter_t *g = (getter_t *)s;
    if (n < 0) {
        fprintf(stderr, "sl-tcpbench: connection ended: %s\n", uv_strerror((int)n));
        uv_close((uv_handle_t *)s, NULL);
        open_conns--;
        return;
    }
    for (ssize_t i = 0; g->offset + (uint64_t)i < verify_bytes && i < n; i++)
        if ((unsigned char)buf->base[i] != pattern_at((g->offset + (uint64_t)i) % BLOCK))
            verify_errors++;
    g->offset += (uint64_t)n;
    total += (uint64_t)n;
}

static void on_get_connect(uv_connect_t *req, int status)
{
    getter_t *g = req->data;
    if (status < 0) {
        fprintf(stderr, "sl-tcpbench: connect: %s\n", uv_strerror(status));
        uv_close((uv_handle_t *)&g->tcp, NULL);
        open_conns--;
        return;
    }
    uv_read_start((uv_stream_t *)&g->tcp, on_alloc, on_get_read);
}

static void close_all(uv_handle_t *h, void *arg)
{
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

static void on_tick(uv_timer_t *t)
{
    uint64_t now = uv_hrtime();
    if (phase == 0) {
        phase = 1;
        start_bytes = total;
        start_ns = now;
        uv_timer_start(t, on_tick, (uint64_t)(seconds * 1000), 0);
        return;
    }
    phase = 2;
    end_bytes = total;
    end_ns = now;
    uv_walk(loop, close_all, NULL);
}

static int get(const char *addr)
{
    struct sockaddr_storage a;
    if (parse_addr(addr, &a) != 0) {
        fprintf(stderr, "sl-tcpbench: bad address %s\n", addr);
        return 2;
    }
    getter_t *gs = calloc((size_t)conns, sizeof(*gs));
    for (int i = 0; i < conns; i++) {
        uv_tcp_init(loop, &gs[i].tcp);
        uv_tcp_nodelay(&gs[i].tcp, 1);
        gs[i].req.data = &gs[i];
        if (uv_tcp_connect(&gs[i].req, &gs[i].tcp, (struct sockaddr *)&a, on_get_connect) == 0)
            open_conns++;
    }
    uv_timer_t tick;
    uv_timer_init(loop, &tick);
    uv_timer_start(&tick, on_tick, (uint64_t)(warmup * 1000), 0);
    uv_run(loop, UV_RUN_DEFAULT);
    free(gs);
    if (phase != 2 || verify_errors) {
        fprintf(stderr, "sl-tcpbench: %s\n",
                verify_errors ? "the data was corrupted" : "the run did not complete");
        return 1;
    }
    printf("{\"bytes\": %llu, \"seconds\": %.6f, \"conns\": %d, \"open_at_end\": %d, "
           "\"verified_bytes\": %llu}\n",
           (unsigned long long)(end_bytes - start_bytes), (double)(end_ns - start_ns) / 1e9, conns,
           open_conns, (unsigned long long)verify_bytes * (unsigned long long)conns);
    return open_conns == conns ? 0 : 1;
}

static void usage(void)
{
    fprintf(stderr, "usage: sl-tcpbench serve ADDR\n"
                    "       sl-tcpbench get ADDR [--conns N] [--seconds S] [--warmup S] "
                    "[--verify BYTES]\n");
}

int main(int argc, char **argv)
{
    for (uint64_t i = 0; i < BLOCK; i++)
        pattern[i] = (char)pattern_at(i);
    loop = uv_default_loop();
    signal(SIGPIPE, SIG_IGN); /* a peer that leaves is an error code, not the end */
    if (argc < 3) {
        usage();
        return 2;
    }
    if (strcmp(argv[1], "serve") == 0)
        return serve(argv[2]);
    if (strcmp(argv[1], "get") != 0) {
        usage();
        return 2;
    }
    for (int i = 3; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--conns") == 0)
            conns = (int)strtol(argv[i + 1], NULL, 10);
        else if (strcmp(argv[i], "--seconds") == 0)
            seconds = strtod(argv[i + 1], NULL);
        else if (strcmp(argv[i], "--warmup") == 0)
            warmup = strtod(argv[i + 1], NULL);
        else if (strcmp(argv[i], "--verify") == 0)
            verify_bytes = strtoull(argv[i + 1], NULL, 10);
        else {
            usage();
            return 2;
        }
    }
    if (conns < 1 || seconds <= 0 || warmup < 0) {
        usage();
        return 2;
    }
    return get(argv[2]);
}
