/* Upstream backends: parsing, and smooth weighted round robin precomputed as a sequence so a
 * pick is one atomic increment. */
#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "gateway/gateway.h"
#include "sluice/lb.h"
#include "util/cfg.h"
#include "util/mem.h"

#define MAX_WEIGHT 1000

static const char *const backend_keys[] = {"address", "weight", NULL};

static int parse_address(const char *a, const char *path, gw_backend_t *out, sl_error_t *err)
{
    sl_endpoint_t ep;
    memset(&ep, 0, sizeof(ep));
    sl_error_t inner;
    if (sl__endpoint_parse(&ep, a, &inner) != 0) {
        /* Not an IP literal: a host name, which needs the asynchronous resolver. */
        const char *colon = strrchr(a, ':');
        if (colon && colon != a && strncmp(a, "unix:", 5) != 0)
            return sl_error_set(err, SL_ECONFIG,
                                "%s: \"%s\": host name backends are not supported yet; use "
                                "ip:port or unix:/path",
                                path, a);
        return sl_error_set(err, SL_ECONFIG, "%s: \"%s\": expected ip:port or unix:/path", path, a);
    }
    if (ep.kind == SL_EP_TCP && ep.bound_port == 0)
        return sl_error_set(err, SL_ECONFIG, "%s: \"%s\": port 0 is not a backend", path, a);
    out->address = sl_xstrdup(a);
    out->addr = ep.addr;
    out->addr_len = ep.addr_len;
    return 0;
}

int gw_backend_parse(const cJSON *v, const char *path, gw_backend_t *out, sl_error_t *err)
{
    memset(out, 0, sizeof(*out));
    out->weight = 1;
    if (cJSON_IsString(v))
        return parse_address(v->valuestring, path, out, err);
    if (!cJSON_IsObject(v))
        return sl_error_set(err, SL_ECONFIG,
                            "%s: expected \"ip:port\" or {address, weight}, got %s", path,
                            sl__cfg_type_name(v));
    int rc = sl__cfg_check_keys(v, path, backend_keys, err);
    if (rc)
        return rc;
    char *addr = NULL;
    if ((rc = sl__cfg_get_str(v, path, "address", false, &addr, err)))
        return rc;
    if (!addr)
        return sl_error_set(err, SL_ECONFIG, "%s.address: required", path);
    long w = 1;
    rc = sl__cfg_get_int(v, path, "weight", 1, MAX_WEIGHT, &w, err);
    if (!rc)
        rc = parse_address(addr, path, out, err);
    free(addr);
    out->weight = (uint32_t)w;
    return rc;
}

void gw_backend_free(gw_backend_t *b)
{
    free(b->address);
    b->address = NULL;
}

void gw_upstream_build_rotation(gw_upstream_t *u)
{
    free(u->seq);
    uint32_t *w = sl_xcalloc(u->n_backends ? u->n_backends : 1, sizeof(uint32_t));
    for (size_t i = 0; i < u->n_backends; i++)
        w[i] = u->backends[i].weight;
    sl_swrr_sequence(w, u->n_backends, &u->seq, &u->seq_len);
    free(w);
}

const gw_backend_t *gw_upstream_pick(gw_upstream_t *u)
{
    if (!u->seq_len)
        return NULL;
    uint64_t k = atomic_fetch_add_explicit(&u->state->counter, 1, memory_order_relaxed);
    return &u->backends[u->seq[k % u->seq_len]];
}
