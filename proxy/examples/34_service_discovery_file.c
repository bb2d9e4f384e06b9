/* Lesson 34: file-based service discovery — backends come from conf/upstreams.txt (one
 * "ip:port" per line, '#' comments), re-read every second; a change switches traffic without a
 * restart. Port 6178. SLUICE_UPSTREAMS_FILE names another file. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SL_LOG_TAG "34_service_discovery_file"
#include <sluice/sluice.h>

typedef struct file_discovery {
    const char *path;
} file_discovery_t;

static int discover(void *data, sl_backend_t **out, size_t *n)
{
    file_discovery_t *fd = data;
    FILE *f = fopen(fd->path, "r");
    if (!f) {
        SL_ERROR("Failed to read upstream file: %s", strerror(errno));
        return -errno;
    }
    size_t cap = 8;
    sl_backend_t *list = malloc(cap * sizeof(*list));
    *n = 0;
    char line[512];
    while (list && fgets(line, sizeof(line), f)) {
        char *s = line, *e;
        while (*s == ' ' || *s == '\t')
            s++;
        e = s + strlen(s);
        while (e > s && (e[-1] == '\n' || e[-1] == '\r' || e[-1] == ' ' || e[-1] == '\t'))
            *--e = '\0';
        if (!*s || *s == '#') /* empty lines and comments */
            continue;
        if (*n == cap) {
            cap *= 2;
            sl_backend_t *grown = realloc(list, cap * sizeof(*list));
            if (!grown)
                break;
            list = grown;
        }
        if (sl_backend_init(&list[*n], s, 1) == 0)
            (*n)++;
        else
            SL_ERROR("Failed to parse address '%s'", s);
    }
    fclose(f);
    if (!list)
        return SL_EINTERNAL;
    *out = list;
    return 0;
}

static int upstream_peer(sl_session_t *s, void *ctx, sl_peer_t *peer)
{
    sl_lb_t *lb = sl_session_app(s);
    sl_backend_t b;
    if (sl_lb_select(lb, "", 0, &b) != 0)
        return sl_session_error(s, "NoUpstreamAvailable");
    char addr[64];
    sl_backend_addr_str(&b, addr, sizeof(addr));
    SL_INFO("Routed to upstream: Backend { addr: Inet(%s), weight: %u }", addr, b.weight);
    sl_peer_init(peer);
    peer->addr = b.addr;
    peer->addr_len = b.addr_len;
    return SL_CONTINUE;
}

static int upstream_request_filter(sl_session_t *s, void *ctx, sl_request_header_t *req)
{
    sl_headers_set(&req->headers, "Host", "file-discovery-cluster");
    return SL_CONTINUE;
}

int main(int argc, char **argv)
{
    int code;
    sl_server_t *server = sl_server_from_args(argc, argv, &code);
    if (!server)
        return code;
    sl_server_bootstrap(server);

    static file_discovery_t fd;
    const char *env = getenv("SLUICE_UPSTREAMS_FILE");
    fd.path = env && *env ? env : "conf/upstreams.txt";
    sl_lb_t *lb = sl_lb_new(SL_LB_ROUND_ROBIN, NULL, 0);
    sl_lb_set_discovery(lb, discover, &fd, 1000); /* every second */
    sl_server_add_service(server, sl_lb_background_service("file_discovery", lb));

    static const sl_proxy_hooks_t hooks = {
        .upstream_peer = upstream_peer,
        .upstream_request_filter = upstream_request_filter,
    };
    sl_service_t *proxy = sl_http_proxy_service_new(sl_server_conf(server), &hooks, lb);
    sl_service_add_tcp(proxy, "0.0.0.0:6178");
    SL_INFO("File-Based Discovery LB running on 0.0.0.0:6178");
    SL_INFO("Watching file: %s", fd.path);
    sl_server_add_service(server, proxy);
    code = sl_server_run_forever(server);
    sl_lb_free(lb);
    return code;
}
