/* sluice — upstream peers (Pingora's HttpPeer and PeerOptions). */
#ifndef SLUICE_PEER_H
#define SLUICE_PEER_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

/* The protocols offered to an upstream (Pingora's ALPN::H1, H2, H2H1). Without TLS, H2 means
 * HTTP/2 in cleartext by prior knowledge (h2c). */
typedef enum sl_alpn { SL_ALPN_H1 = 0, SL_ALPN_H2, SL_ALPN_H2H1, SL_ALPN_NONE } sl_alpn_t;

/* An HTTP forward proxy between us and the peer (RFC 9110 9.3.6): the connection goes to the
 * proxy, which is asked with `CONNECT host:port` to open a tunnel to the peer; TLS (with the
 * peer's sni and verification) and HTTP then run through the tunnel as over a direct
 * connection. This is what lesson 22 builds with a custom L4 connector. */
typedef struct sl_peer_proxy {
    struct sockaddr_storage addr; /* the proxy: AF_INET, AF_INET6 or AF_UNIX */
    unsigned addr_len;            /* 0: no proxy, the peer is dialled directly */
    /* The CONNECT target's host. NULL: the peer's sni when set, else the IP of its address.
     * The port is always the peer address's. A target known only by name (resolved by the
     * proxy) may use an unspecified address (0.0.0.0) with the right port. */
    const char *host;
    /* Proxy-Authorization: the whole value ("Basic dXNlcjpwYXNz", "Bearer ..."), or NULL;
     * without it, user and password (both set) make a Basic one (RFC 7617). */
    const char *authorization;
    const char *user, *password;
} sl_peer_proxy_t;

typedef struct sl_peer_options {
    uint64_t connect_timeout_ms;          /* TCP connect; 0: none */
    uint64_t total_connection_timeout_ms; /* connect + TLS handshake; 0: none */
    uint64_t read_timeout_ms;             /* between two reads from the upstream; 0: none */
    uint64_t write_timeout_ms;            /* for one write to complete; 0: none */
    uint64_t idle_timeout_ms;             /* keep-alive in the pool; 0: do not reuse */
    bool verify_cert;                     /* TLS: verify the chain (default true) */
    bool verify_hostname;                 /* TLS: verify the name against sni (default true) */
    sl_alpn_t alpn;                       /* default H1 */
    /* After an Upgrade (WebSocket) the connection is a byte pipe: it closes after this long
     * without a byte either way (default 1 h; 0: no limit); the read/write timeouts no longer
     * apply. */
    uint64_t tunnel_idle_timeout_ms;
    /* TLS files (paths; the strings must outlive the request): the trust store (NULL: the
     * server's ca_file, else the system's), and a client certificate and key for mTLS. */
    const char *ca_file;
    const char *client_cert;
    const char *client_key;
    /* Through an HTTP CONNECT proxy (addr_len 0: direct). The strings must outlive the request;
     * they are read when a connection is dialled (the pool key holds a digest of them, so
     * tunnelled connections are reused only for the same proxy, target and credentials, and
     * never for direct ones). connect_timeout_ms bounds the connect to the proxy and its
     * answer together; the TLS handshake through the tunnel then has its usual budget. */
    sl_peer_proxy_t proxy;
} sl_peer_options_t;

typedef struct sl_peer {
    struct sockaddr_storage addr; /* AF_INET, AF_INET6 or AF_UNIX */
    unsigned addr_len;
    bool tls;
    char sni[256]; /* TLS server name; also the default upstream Host name for logs */
    sl_peer_options_t options;
} sl_peer_t;

/* Fills p with defaults: no TLS, connect timeout 10 s, read/write 60 s, idle 60 s. */
void sl_peer_init(sl_peer_t *p);
/* Sets the address from "1.2.3.4:80", "[::1]:443" or "unix:/path". Names are not resolved
 * here (see the DNS support). Returns 0 or SL_ECONFIG. */
int sl_peer_set_address(sl_peer_t *p, const char *addr);
/* Convenience: init + address + tls + sni, like HttpPeer::new(addr, tls, sni). */
int sl_peer_new(sl_peer_t *p, const char *addr, bool tls, const char *sni);
/* Sets options.proxy.addr from "1.2.3.4:3128", "[::1]:3128" or "unix:/path" (a port is
 * required). Returns 0 or SL_ECONFIG. */
int sl_peer_set_proxy(sl_peer_t *p, const char *addr);
/* "1.2.3.4:80" or "unix:/path"; through a proxy, the CONNECT target ("name:443"). */
void sl_peer_addr_str(const sl_peer_t *p, char *buf, size_t cap);

#endif
