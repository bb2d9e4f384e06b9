/* Lesson 17: DNS peer — every request resolves blue.pingora.local at request time and forwards
 * to the address it got. Port 6161.
 *
 * The lookup never blocks the worker: each worker has its own sluice resolver (c-ares on the
 * worker's loop, with a TTL cache), created and closed on that worker's thread. upstream_peer
 * starts the lookup and returns SL_PENDING; the resolver's callback fills in the peer and resumes
 * the session. A failed lookup (NXDOMAIN, SERVFAIL, no answer) ends the request with a 502 that
 * says why. Servers come from /etc/resolv.conf (in the lab: the dns host, 172.28.0.2); a lookup
 * ends within the resolver's budget (2 s x 2 tries). */
#include <stdlib.h>
#include <string.h>

#define SL_LOG_TAG "17_dns_peer"
#include <sluice/sluice.h>

#define HOSTNAME "blue.pingora.local"
#define PORT     8080

/* One resolver per worker, indexed by worker id. */
typedef struct app {
    sl_resolver_t **resolvers;
} app_t;

/* Per request: the lookup in flight and, on failure, why. */
typedef struct lookup {
    sl_session_t *session;
    sl_peer_t *peer;
    sl_dns_query_t *query;
    sl_worker_t *worker; /* held (sl_worker_ref) while the lookup runs */
    const char *error;
} lookup_t;

static void worker_start(sl_worker_t *w, void *data)
{
    app_t *app = data;
    if (sl_resolver_new(sl_worker_loop(w), NULL, &app->resolvers[sl_worker_id(w)]) != 0)
        SL_ERROR("worker %u: cannot create a DNS resolver", sl_worker_id(w));
}

static void worker_stop(sl_worker_t *w, void *data)
{
    app_t *app = data;
    sl_resolver_t *r = app->resolvers[sl_worker_id(w)];
    if (r)
        sl_resolver_close(r, NULL, NULL);
    app->resolvers[sl_worker_id(w)] = NULL;
}

static void *new_ctx(sl_session_t *s)
{
    lookup_t *l = sl_arena_alloc(sl_session_arena(s), sizeof(*l));
    memset(l, 0, sizeof(*l));
    l->session = s;
    return l;
}

static void free_ctx(sl_session_t *s, void *ctx)
{
    lookup_t *l = ctx;
    if (l->query) { /* the session goes away before the answer: its callback must not run */
        sl_dns_cancel(l->query);
        sl_worker_unref(l->worker);
    }
}

static void resolved(void *data, int err, const sl_dns_result_t *res)
{
    lookup_t *l = data;
    sl_worker_t *w = l->worker;
    l->query = NULL;
    if (err) {
        SL_ERROR("DNS lookup failed for %s: %s", res->host, res->message);
        l->error = sl_arena_printf(sl_session_arena(l->session), "upstream name %s: %s", res->host,
                                   res->message);
        sl_session_resume(l->session, SL_EDNS);
        sl_worker_unref(w); /* after the resume: l may be gone, the worker may stop now */
        return;
    }
    /* A name may have several addresses: like the lesson, take the first. */
    const struct sockaddr_storage *a = &res->addrs[0];
    l->peer->addr_len =
        a->ss_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
    memcpy(&l->peer->addr, a, l->peer->addr_len);
    char text[64];
    sl_sockaddr_str(a, text, sizeof(text));
    SL_INFO("Resolved %s -> %s", HOSTNAME, text);
    sl_session_resume(l->session, SL_CONTINUE);
    sl_worker_unref(w);
}

static int upstream_peer(sl_session_t *s, void *ctx, sl_peer_t *peer)
{
    app_t *app = sl_session_app(s);
    lookup_t *l = ctx;
    SL_INFO("Resolving host: %s:%d", HOSTNAME, PORT);
    /* No TLS; the name is the SNI (and the Host for clients that send none). */
    sl_peer_init(peer);
    memcpy(peer->sni, HOSTNAME, sizeof(HOSTNAME));
    l->peer = peer;
    l->worker = sl_session_worker(s);
    sl_resolver_t *r = app->resolvers[sl_worker_id(l->worker)];
    l->query = sl_dns_resolve(r, HOSTNAME, PORT, AF_UNSPEC, resolved, l);
    if (!l->query)
        return sl_session_error(s, "DNSResolutionFailed");
    /* Even if the client leaves, the session waits for resolved(): the worker must not stop
     * (and close the resolver, which would drop the answer) before it comes. */
    sl_worker_ref(l->worker);
    return SL_PENDING; /* resolved() resumes the session */
}

static int fail_to_proxy(sl_session_t *s, void *ctx, int err)
{
    lookup_t *l = ctx;
    if (err != SL_EDNS || !l->error)
        return 0; /* the default answer */
    sl_session_respond_error(s, 502, l->error);
    return 502;
}

int main(int argc, char **argv)
{
    int code;
    sl_server_t *server = sl_server_from_args(argc, argv, &code);
    if (!server)
        return code;
    sl_server_bootstrap(server);
    int threads = sl_server_conf(server)->threads;
    static app_t app;
    app.resolvers = calloc(threads > 0 ? (size_t)threads : 1, sizeof(sl_resolver_t *));
    if (!app.resolvers)
        return 3;
    sl_server_on_worker_start(server, worker_start, &app);
    sl_server_on_worker_stop(server, worker_stop, &app);

    static const sl_proxy_hooks_t hooks = {
        .new_ctx = new_ctx,
        .free_ctx = free_ctx,
        .upstream_peer = upstream_peer,
        .fail_to_proxy = fail_to_proxy,
    };
    sl_service_t *proxy = sl_http_proxy_service_new(sl_server_conf(server), &hooks, &app);
    sl_service_add_tcp(proxy, "0.0.0.0:6161");
    SL_INFO("DNS Peer Proxy running on 0.0.0.0:6161");
    sl_server_add_service(server, proxy);
    code = sl_server_run_forever(server);
    free(app.resolvers);
    return code;
}
