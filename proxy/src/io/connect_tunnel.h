/* The client side of an HTTP CONNECT exchange with a forward proxy (RFC 9110 9.3.6), on a
 * stream connected to the proxy: `CONNECT host:port`, a strictly parsed answer, and on 2xx a
 * stream that is a byte tunnel to the target (what the proxy sent after its answer is read
 * first). Callers: the HTTP upstream dial (h1_up.c) and the TCP proxy (tcp_proxy.c).
 *
 * The exchange's state hangs on the stream (like TLS) and goes with it, so an owner torn down
 * mid-exchange only closes the stream. The owner's connect timer bounds the exchange. */
#ifndef SL_IO_CONNECT_TUNNEL_H
#define SL_IO_CONNECT_TUNNEL_H

#include <stddef.h>
#include <stdint.h>

#include "sluice/peer.h"
#include "sluice/stream.h"

typedef struct sl_ctun sl_ctun_t;

/* The exchange ended: err 0 (st is a tunnel to the target now; reads are stopped), or
 * SL_ETUNNEL (the proxy refused, answered garbage or closed) or a read error, explained by
 * sl__ctun_why(). */
typedef void (*sl_ctun_done_cb)(sl_stream_t *st, int err);

/* Prepares the exchange for peer (options.proxy set) on st, before st connects (to the proxy):
 * the request is built now, so the peer's strings are not needed afterwards. Returns 0, or
 * SL_ECONFIG for a peer that cannot be tunnelled (a unix socket target, a host or credentials
 * with control characters). */
int sl__ctun_attach(sl_stream_t *st, const sl_peer_t *peer);
/* Sends CONNECT on st, now connected, and reads the answer. Returns 0 (done follows), or an
 * error (done never comes). */
int sl__ctun_start(sl_stream_t *st, sl_ctun_done_cb done);
/* Why the connection through st's proxy failed with err, in one line for the log and the
 * client ("upstream proxy 127.0.0.1:3128 refused CONNECT: 407 Proxy Authentication Required");
 * it also explains the stages around the exchange (connecting to the proxy, timeouts). NULL
 * when st has no exchange (none, or it succeeded). Valid while st is. */
const char *sl__ctun_why(sl_stream_t *st, int err);
/* Frees a tunnel state (stream.c, when the stream goes). */
void sl__ctun_free(sl_ctun_t *t);

/* "host:port" of the CONNECT target of a proxied peer into buf. Returns 0 or SL_ECONFIG. */
int sl__ctun_target(const sl_peer_t *peer, char *buf, size_t cap);
/* A digest of everything that makes a tunnel different (proxy address, target host,
 * credentials) for pool keys; zeros for a peer without a proxy. */
void sl__ctun_key(const sl_peer_t *peer, unsigned char out[32]);
/* The port of an AF_INET/AF_INET6 address (0 for others). */
uint16_t sl__ctun_addr_port(const struct sockaddr_storage *a);

#endif
