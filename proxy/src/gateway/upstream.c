/* Upstream backends: parsing, and smooth weighted round robin precomputed as a sequence so a
 * pick is one atomic increment. */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "gateway/gateway.h"
#include "sluice/lb.h"
#include "util/cfg.h"
#include "util/mem.h"

#define MAX_WEIGHT 1000

static const char *const backend_keys[] = {"address", "weight", NULL};

/* A DNS host name: dot-separated labels of letters, digits, '-' and '_' (1-63 characters, not
 * starting or ending with '-'), 253 characters at most, an optional final dot; the last label
 * is not all digits (so a mistyped IP address is not looked up as a name). */
static bool valid_dns_name(const char *h, size_t n)
{
    if (n && h[n - 1] == '.')
        n--;
    if (!n || n > 253)
        return false;
    size_t label = 0;
    bool digits_only = true;
    for (size_t i = 0; i <= n; i++) {
        char c = i < n ? h[i] : '.';
        if (c == '.') {
            if (!label || label > 63 || h[i - 1] == '-')
                return false;
            label = 0;
            if (i < n)
                digits_only = true;
            continue;
        }
        if (!isalnum((unsigned char)c) && c != '-' && c != '_')
            return false;
        if (c == '-' && label == 0)
            return false;
        digits_only &= isdigit((unsigned char)c) != 0;
        label++;
    }
    return !digits_only;
}

/* A copy in the upstream's slab, or malloc'd without one. */
static char *dup_in(sl_slab_t *mem, const char *s, size_t n)
{
    return mem ? sl_slab_strndup(mem, s, n) : sl_xstrndup(s, n);
}

/* "name:port": a host name backend, resolved asynchronously (upstream_dns.c). */
static int parse_name(const char *a, const char *path, sl_slab_t *mem, gw_backend_t *out,
                      sl_error_t *err)
{
    const char *colon = strrchr(a, ':');
    if (!colon || colon == a || !valid_dns_name(a, (size_t)(colon - a)))
        return sl_error_set(err, SL_ECONFIG,
                            "%s: \"%s\": expected ip:port, name:port or unix:/path", path, a);
    char *end;
    errno = 0;
    long port = strtol(colon + 1, &end, 10);
    if (errno || *end || end == colon + 1 || colon[1] == '-' || colon[1] == '+' || port < 1 ||
        port > 65535)
        return sl_error_set(err, SL_ECONFIG, "%s: \"%s\": invalid port (1-65535)", path, a);
    out->address = dup_in(mem, a, strlen(a));
    out->host = dup_in(mem, a, (size_t)(colon - a));
    out->port = (uint16_t)port;
    return 0;
}

static int parse_address(const char *a, const char *path, sl_slab_t *mem, gw_backend_t *out,
                         sl_error_t *err)
{
    sl_endpoint_t ep;
    memset(&ep, 0, sizeof(ep));
    sl_error_t inner;
    if (sl__endpoint_parse(&ep, a, &inner) != 0) {
        if (strncmp(a, "unix:", 5) == 0)
            return sl_error_set(err, SL_ECONFIG, "%s: %s", path, inner.msg);
        return parse_name(a, path, mem, out, err);
    }
    if (ep.kind == SL_EP_TCP && ep.bound_port == 0)
        return sl_error_set(err, SL_ECONFIG, "%s: \"%s\": port 0 is not a backend", path, a);
    out->address = dup_in(mem, a, strlen(a));
    out->addr = ep.addr;
    out->addr_len = ep.addr_len;
    return 0;
}

int gw_backend_parse(const cJSON *v, const char *path, sl_slab_t *mem, gw_backend_t *out,
                     sl_error_t *err)
{
    memset(out, 0, sizeof(*out));
    out->weight = 1;
    if (cJSON_IsString(v))
        return parse_address(v->valuestring, path, mem, out, err);
    if (!cJSON_IsObject(v))
        return sl_error_set(err, SL_ECONFIG,
                            "%s: expected \"ip:port\" or {address, weight}, got %s", path,
                            sl__cfg_type_name(v));
    int rc = sl__cfg_check_keys(v, path, backend_keys, err);
    if (rc)
        return rc;
    const char *addr = NULL;
    if ((rc = sl__cfg_get_strv(v, path, "address", false, &addr, err)))
        return rc;
    if (!addr)
        return sl_error_set(err, SL_ECONFIG, "%s.address: required", path);
    long w = 1;
    rc = sl__cfg_get_int(v, path, "weight", 1, MAX_WEIGHT, &w, err);
    if (!rc)
        rc = parse_address(addr, path, mem, out, err);
    out->weight = (uint32_t)w;
    return rc;
}

void gw_backend_free(gw_backend_t *b)
{
    free(b->address);
    free(b->host);
    b->address = NULL;
    b->host = NULL;
}

void gw_upstream_build_rotation(gw_upstream_t *u)
{
    size_t n = u->n_backends;
    bool equal = true;
    for (size_t i = 1; i < n && equal; i++)
        equal = u->backends[i].weight == u->backends[0].weight;
    if (equal) {
        /* Equal weights: each backend once, in order (what sl_swrr_sequence gives them), made
         * without its allocations: most upstreams look like this. */
        u->seq = sl_slab_alloc(&u->gen->mem, (n ? n : 1) * sizeof(uint32_t));
        for (size_t i = 0; i < n; i++)
            u->seq[i] = (uint32_t)i;
        u->seq_len = n;
        return;
    }
    uint32_t *w = sl_xcalloc(n, sizeof(uint32_t)), *seq = NULL;
    for (size_t i = 0; i < n; i++)
        w[i] = u->backends[i].weight;
    sl_swrr_sequence(w, n, &seq, &u->seq_len);
    u->seq = sl_slab_alloc(&u->gen->mem, u->seq_len * sizeof(uint32_t));
    memcpy(u->seq, seq, u->seq_len * sizeof(uint32_t));
    free(seq);
    free(w);
}

const gw_backend_t *gw_upstream_pick(gw_upstream_t *u)
{
    if (!u->seq_len)
        return NULL;
    uint64_t k = atomic_fetch_add_explicit(&u->state->counter, 1, memory_order_relaxed);
    return &u->backends[u->seq[k % u->seq_len]];
}
