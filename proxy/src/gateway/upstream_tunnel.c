/* upstreams.NAME.tunnel: backends behind an HTTP CONNECT forward proxy (upstream_tunnel.h). */
#include "gateway/upstream_tunnel.h"

#include <arpa/inet.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/stream.h"
#include "util/cfg.h"
#include "util/mem.h"

#define SL_LOG_TAG "gateway"
#include "sluice/log.h"

#define AUTH_MAX 4000 /* a Proxy-Authorization value (the library takes up to 4 KiB) */
#define CRED_MAX 1000 /* user + ":" + password */

static const char *const tunnel_keys[] = {"connect_proxy", "auth", NULL};
static const char *const auth_keys[] = {"user", "password", NULL};

/* A field value that cannot break the request: no control characters (tabs aside), no
 * leading or trailing space. */
static bool valid_value(const char *s)
{
    size_t n = strlen(s);
    if (!n || s[0] == ' ' || s[0] == '\t' || s[n - 1] == ' ' || s[n - 1] == '\t')
        return false;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if ((*p < 0x20 && *p != '\t') || *p == 0x7f)
            return false;
    return true;
}

static int cred_error(const char *p, const char *key, sl_error_t *err)
{
    return sl_error_set(err, SL_ECONFIG, "%s.%s: required (a non-empty string)", p, key);
}

/* auth: {user, password} becomes a Basic value (RFC 7617). */
static int parse_basic(gw_tunnel_t *t, const cJSON *a, const char *p, sl_error_t *err)
{
    char *user = NULL, *password = NULL;
    int rc = sl__cfg_check_keys(a, p, auth_keys, err);
    if (!rc)
        rc = sl__cfg_get_str(a, p, "user", false, &user, err);
    if (!rc)
        rc = sl__cfg_get_str(a, p, "password", false, &password, err);
    if (!rc && !user)
        rc = cred_error(p, "user", err);
    if (!rc && !password)
        rc = cred_error(p, "password", err);
    if (!rc && (strchr(user, ':') || !valid_value(user)))
        rc = sl_error_set(err, SL_ECONFIG,
                          "%s.user: no colon, control characters or surrounding spaces allowed", p);
    if (!rc && !valid_value(password))
        rc = sl_error_set(err, SL_ECONFIG,
                          "%s.password: no control characters or surrounding spaces allowed", p);
    size_t ul = user ? strlen(user) : 0, pl = password ? strlen(password) : 0;
    if (!rc && ul + 1 + pl > CRED_MAX)
        rc = sl_error_set(err, SL_ECONFIG, "%s: user and password longer than %d bytes", p,
                          CRED_MAX);
    if (!rc) {
        unsigned char cred[CRED_MAX + 1];
        memcpy(cred, user, ul);
        cred[ul] = ':';
        memcpy(cred + ul + 1, password, pl);
        size_t n = ul + 1 + pl;
        t->authorization = sl_xmalloc(6 + 4 * ((n + 2) / 3) + 1);
        memcpy(t->authorization, "Basic ", 6);
        EVP_EncodeBlock((unsigned char *)t->authorization + 6, cred, (int)n);
        OPENSSL_cleanse(cred, sizeof(cred));
    }
    if (password) {
        OPENSSL_cleanse(password, strlen(password));
        free(password);
    }
    free(user);
    return rc;
}

static int parse_auth(gw_tunnel_t *t, const cJSON *tv, const char *path, sl_error_t *err)
{
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(tv, "auth");
    if (!a || cJSON_IsNull(a))
        return 0;
    char p[SL_CFG_PATH_MAX];
    sl__cfg_path_key(p, sizeof(p), path, "auth");
    if (cJSON_IsObject(a))
        return parse_basic(t, a, p, err);
    if (!cJSON_IsString(a))
        return sl_error_set(err, SL_ECONFIG,
                            "%s: expected the Proxy-Authorization value (\"Basic ...\") or "
                            "{user, password}, got %s",
                            p, sl__cfg_type_name(a));
    if (!valid_value(a->valuestring) || strlen(a->valuestring) > AUTH_MAX)
        return sl_error_set(err, SL_ECONFIG,
                            "%s: a Proxy-Authorization value (\"Basic ...\"): not empty, at most "
                            "%d bytes, no control characters or surrounding spaces",
                            p, AUTH_MAX);
    t->authorization = sl_xstrdup(a->valuestring);
    return 0;
}

/* What does not go with a tunnel: resolving names here, unix socket backends. */
static int check_upstream(const gw_upstream_t *u, const cJSON *v, const char *path, sl_error_t *err)
{
    const cJSON *dns = cJSON_GetObjectItemCaseSensitive(v, "dns");
    if (dns && !cJSON_IsNull(dns))
        return sl_error_set(err, SL_ECONFIG,
                            "%s.dns: not with tunnel (the proxy resolves the backends' host names)",
                            path);
    for (size_t i = 0; i < u->n_backends; i++) {
        const gw_backend_t *b = &u->backends[i];
        if (b->addr_len && b->addr.ss_family == AF_UNIX)
            return sl_error_set(err, SL_ECONFIG,
                                "%s.backends[%zu]: \"%s\" is a unix socket, which cannot be "
                                "reached through tunnel",
                                path, i, b->address);
    }
    return 0;
}

int gw_tunnel_parse(gw_upstream_t *u, const cJSON *v, const char *path, sl_error_t *err)
{
    const cJSON *tv = cJSON_GetObjectItemCaseSensitive(v, "tunnel");
    if (!tv || cJSON_IsNull(tv))
        return 0;
    char p[SL_CFG_PATH_MAX];
    sl__cfg_path_key(p, sizeof(p), path, "tunnel");
    int rc = sl__cfg_check_keys(tv, p, tunnel_keys, err);
    if (rc)
        return rc;
    gw_tunnel_t *t = u->tunnel = sl_xcalloc(1, sizeof(*t));
    if ((rc = sl__cfg_get_str(tv, p, "connect_proxy", false, &t->connect_proxy, err)))
        return rc;
    if (!t->connect_proxy)
        return sl_error_set(err, SL_ECONFIG, "%s.connect_proxy: required", p);
    sl_peer_t probe;
    sl_peer_init(&probe);
    if (sl_peer_set_proxy(&probe, t->connect_proxy) != 0)
        return sl_error_set(err, SL_ECONFIG,
                            "%s.connect_proxy: \"%s\" is not ip:port, [ipv6]:port or unix:/path", p,
                            t->connect_proxy);
    t->addr = probe.options.proxy.addr;
    t->addr_len = probe.options.proxy.addr_len;
    if ((rc = parse_auth(t, tv, p, err)))
        return rc;
    return check_upstream(u, v, path, err);
}

void gw_tunnel_free(gw_tunnel_t *t)
{
    if (!t)
        return;
    free(t->connect_proxy);
    if (t->authorization) {
        OPENSSL_cleanse(t->authorization, strlen(t->authorization));
        free(t->authorization);
    }
    free(t);
}

int gw_tunnel_peer(const gw_upstream_t *u, const gw_backend_t *b, sl_peer_t *peer, char *host)
{
    const gw_tunnel_t *t = u->tunnel;
    sl_peer_proxy_t *px = &peer->options.proxy;
    if (b->addr_len && b->addr.ss_family == AF_UNIX) {
        /* Refused with the config; kept for backends that arrive otherwise. */
        SL_WARN("upstream %s: backend %s is a unix socket, which cannot be reached through "
                "its tunnel",
                u->name, b->address);
        return SL_ENOUPSTREAM;
    }
    px->addr = t->addr;
    px->addr_len = t->addr_len;
    px->authorization = t->authorization;
    if (b->addr_len) {
        /* The proxy is asked for the backend as written: its IP. */
        sl_sockaddr_ip_str(&b->addr, host, GW_TUNNEL_HOST_MAX);
        px->host = host;
        return 0;
    }
    /* A host name: the proxy resolves it; the address only carries the port. */
    struct sockaddr_in *in = (struct sockaddr_in *)&peer->addr;
    memset(&peer->addr, 0, sizeof(peer->addr));
    in->sin_family = AF_INET;
    in->sin_port = htons(b->port);
    peer->addr_len = sizeof(*in);
    px->host = b->host;
    return 0;
}

void gw_tunnel_redact(cJSON *upstreams)
{
    cJSON *u;
    cJSON_ArrayForEach(u, upstreams)
    {
        cJSON *t = cJSON_GetObjectItemCaseSensitive(u, "tunnel");
        cJSON *a = cJSON_GetObjectItemCaseSensitive(t, "auth");
        if (cJSON_IsString(a))
            cJSON_ReplaceItemInObjectCaseSensitive(t, "auth", cJSON_CreateString("<redacted>"));
        else if (cJSON_GetObjectItemCaseSensitive(a, "password"))
            cJSON_ReplaceItemInObjectCaseSensitive(a, "password", cJSON_CreateString("<redacted>"));
    }
}
