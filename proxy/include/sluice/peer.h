/* sluice — upstream peers (Pingora's HttpPeer and PeerOptions). */
#ifndef SLUICE_PEER_H
#define SLUICE_PEER_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

typedef struct sl_peer_options {
    uint64_t connect_timeout_ms;          /* TCP connect; 0: none */
    uint64_t total_connection_timeout_ms; /* connect + TLS handshake; 0: none */
    uint64_t read_timeout_ms;             /* between two reads from the upstream; 0: none */
    uint64_t write_timeout_ms;            /* for one write to complete; 0: none */
    uint64_t idle_timeout_ms;             /* keep-alive in the pool; 0: do not reuse */
    bool verify_cert;                     /* TLS: verify the chain (default true) */
    bool verify_hostname;                 /* TLS: verify the name against sni (default true) */
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
/* "1.2.3.4:80" or "unix:/path". */
void sl_peer_addr_str(const sl_peer_t *p, char *buf, size_t cap);

#endif
