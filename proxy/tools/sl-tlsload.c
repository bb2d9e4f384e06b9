/* sl-tlsload: a TLS handshake load generator (the `tls` scenario of `make bench`).
 *
 *   sl-tlsload [options] HOST:PORT
 *     -c, --conns N          connections in flight (default 50)
 *     -d, --duration S       measured seconds (default 10; fractions allowed)
 *     -w, --warmup S         seconds run before the measurement starts (default 0)
 *     --resume               resume sessions: a connection slot makes one full handshake, then
 *                            offers the newest session (TLS 1.3 ticket, TLS 1.2 ticket or id)
 *                            it received on each following connection. A TLS 1.3 ticket is
 *                            used once (RFC 8446 C.4, as OpenSSL, browsers and curl do): a
 *                            server that sends no new ticket on a resumed connection gets a
 *                            full handshake next time
 *     --reuse-tickets        with --resume: offer a TLS 1.3 ticket again until a newer one
 *                            arrives (what a server costs per resumption when every client
 *                            does so)
 *     --request [PATH]       send one "GET PATH HTTP/1.1" (Connection: close), read the
 *                            response to the end and check its status is 2xx (PATH default /)
 *     --host NAME            Host header of the request (default: the SNI, else HOST)
 *     --tls 1.2|1.3          this version only (default: 1.2 and 1.3)
 *     --ciphers LIST         TLS 1.2 cipher list (OpenSSL syntax)
 *     --ciphersuites LIST    TLS 1.3 suites (e.g. TLS_AES_128_GCM_SHA256)
 *     --groups LIST          key-exchange groups offered (e.g. X25519)
 *     --sigalgs LIST         signature algorithms offered (e.g. ecdsa_secp256r1_sha256)
 *     --sni NAME             server name to send (default: none)
 *     --ca FILE              verify the server's chain against FILE, and its name (the SNI,
 *                            else HOST as an address); without it nothing is verified
 *     --alpn LIST            offer ALPN protocols (comma list, e.g. http/1.1)
 *     --timeout MS           limit for one connection, connect to close (default 5000)
 *     --cpu N                run on CPU N only
 *
 * Each connection: non-blocking connect, handshake, [request and response], then close_notify
 * and a TCP half-close, and read to the end, so that the server sees an orderly close and the
 * TLS 1.3 tickets that arrive after the handshake are read (and, with --resume, kept). Ports
 * left in TIME_WAIT are reused for new loopback connections (Linux's default tcp_tw_reuse = 2);
 * elsewhere many handshakes per second may run out of ports ("connect" failures). One thread,
 * epoll (edge-triggered), OpenSSL's socket BIO with read-ahead, an SSL object per slot that is
 * cleared for the next connection; a slot starts its next connection as soon as one ends.
 *
 * "sl-tlsload: measuring" goes to stderr when the measured window starts (after the warm-up).
 * Prints one JSON object on stdout: handshakes and handshakes/s in the measured window (counted
 * when a handshake completes), full and resumed handshakes, the resumption rate (resumed /
 * sessions offered), failures by kind with the first message of each, tickets received per
 * connection, handshake latency percentiles (connect to handshake done), the client's own CPU
 * time, and what was negotiated (version, cipher, group, the server's signature and key).
 * Exit status 0 when at least one handshake completed in the window and nothing failed, 1 when
 * some failed or none completed, 2 for usage errors. */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* ---- options and state --------------------------------------------------------------------- */

typedef enum {
    F_CONNECT, /* connect refused, unreachable, out of ports */
    F_HANDSHAKE,
    F_VERIFY,  /* the certificate did not verify against --ca */
    F_REQUEST, /* the request or the response failed on the wire */
    F_STATUS,  /* a response that is not 2xx */
    F_TIMEOUT,
    F_COUNT
} fail_kind_t;

static const char *const fail_names[F_COUNT] = {"connect", "handshake", "verify",
                                                "request", "status",    "timeout"};

typedef enum { C_IDLE, C_CONNECTING, C_HANDSHAKE, C_WRITE, C_READ, C_SHUTDOWN, C_DRAIN } cstate_t;

typedef struct conn {
    int fd;
    SSL *ssl;
    cstate_t st;
    uint64_t started, deadline; /* ns, CLOCK_MONOTONIC */
    uint64_t restart_at;        /* an idle slot waits until then (after a connect failure) */
    SSL_SESSION *sess;          /* --resume: the newest resumable session of this slot */
    bool offered;               /* this connection offered a session */
    unsigned tickets;           /* sessions received on this connection */
    size_t req_off, resp_len;
    char resp_head[16];
} conn_t;

typedef struct stats {
    uint64_t handshakes, full, resumed, offered, connections, tickets;
    uint64_t responses_ok, unclean_closes, close_errors;
    uint64_t fails[F_COUNT];
    uint32_t *lat_us;
    size_t n_lat, cap_lat;
} stats_t;

static struct {
    const char *target, *sni, *ca, *host_header, *path;
    const char *ciphers, *suites, *groups, *sigalgs, *alpn;
    int conns, version, cpu;
    double duration, warmup;
    long timeout_ms;
    bool resume, reuse, request;
} opt = {.conns = 50, .duration = 10, .timeout_ms = 5000, .cpu = -1, .path = "/"};

static struct sockaddr_storage addr;
static socklen_t addr_len;
static char host[256];
static SSL_CTX *ctx;
static int ep;
static conn_t *conns;
static int *pending; /* slots to start now (a stack) */
static int n_pending;
static bool measuring;
static stats_t st;
static char *request;
static size_t request_len;
static char first_error[F_COUNT][200];
static char first_close_error[200];
static struct {
    bool have;
    char version[16], cipher[64], group[32], sigalg[40], key[32], subject[128];
} info;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void die(const char *msg)
{
    fprintf(stderr, "sl-tlsload: %s\n", msg);
    exit(2);
}

/* ---- bookkeeping ----------------------------------------------------------------------------- */

static void note_error(fail_kind_t k, const char *why)
{
    if (measuring)
        st.fails[k]++;
    if (!first_error[k][0])
        snprintf(first_error[k], sizeof(first_error[k]), "%s", why);
}

/* The server closed without close_notify (OpenSSL 3 reports it as an error). */
static bool unexpected_eof(int e)
{
    if (e == SSL_ERROR_SYSCALL && errno == 0 && !ERR_peek_error())
        return true;
    unsigned long err = ERR_peek_error();
    return e == SSL_ERROR_SSL && ERR_GET_LIB(err) == ERR_LIB_SSL &&
           ERR_GET_REASON(err) == SSL_R_UNEXPECTED_EOF_WHILE_READING;
}

static const char *ssl_why(conn_t *c, int rc)
{
    static char buf[200];
    unsigned long e = ERR_peek_last_error();
    if (e) {
        ERR_error_string_n(e, buf, sizeof(buf));
    } else if (rc == 0) {
        snprintf(buf, sizeof(buf), "the server closed the connection");
    } else {
        snprintf(buf, sizeof(buf), "%s", errno ? strerror(errno) : "unexpected end of stream");
    }
    ERR_clear_error();
    return buf;
}

static void lat_push(uint64_t ns)
{
    if (st.n_lat == st.cap_lat) {
        st.cap_lat = st.cap_lat ? st.cap_lat * 2 : 65536;
        st.lat_us = realloc(st.lat_us, st.cap_lat * sizeof(*st.lat_us));
        if (!st.lat_us)
            die("out of memory");
    }
    uint64_t us = ns / 1000;
    st.lat_us[st.n_lat++] = us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
}

/* What this connection negotiated, kept from the first handshake of the window. */
static void capture_info(conn_t *c)
{
    SSL *s = c->ssl;
    snprintf(info.version, sizeof(info.version), "%s", SSL_get_version(s));
    snprintf(info.cipher, sizeof(info.cipher), "%s", SSL_get_cipher_name(s));
    int g = SSL_get_negotiated_group(s);
    const char *gn = g ? SSL_group_to_name(s, g) : NULL;
    snprintf(info.group, sizeof(info.group), "%s", gn ? gn : (g ? OBJ_nid2sn(g) : ""));
    int sig = NID_undef, md = NID_undef;
    if (SSL_get_peer_signature_type_nid(s, &sig) == 1) {
        SSL_get_peer_signature_nid(s, &md);
        const char *alg = sig == EVP_PKEY_EC        ? "ECDSA"
                          : sig == EVP_PKEY_RSA_PSS ? "RSA-PSS"
                          : sig == EVP_PKEY_RSA     ? "RSA-PKCS1"
                                                    : OBJ_nid2sn(sig);
        snprintf(info.sigalg, sizeof(info.sigalg), "%s+%s", alg,
                 md != NID_undef ? OBJ_nid2sn(md) : "?");
    }
    X509 *cert = SSL_get0_peer_certificate(s);
    if (cert) {
        EVP_PKEY *pk = X509_get0_pubkey(cert);
        if (pk)
            snprintf(info.key, sizeof(info.key), "%s-%d", EVP_PKEY_get0_type_name(pk),
                     EVP_PKEY_get_bits(pk));
        X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, info.subject,
                                  sizeof(info.subject));
    }
    info.have = true;
}

/* ---- one connection ----------------------------------------------------------------------------
 */

/* Ends the connection of a slot. The SSL object stays for the next connection (SSL_clear is
 * cheaper than SSL_free + SSL_new), unless the connection failed. */
static void slot_release(conn_t *c, bool abort)
{
    if (c->ssl && abort) {
        SSL_free(c->ssl);
        c->ssl = NULL;
    }
    if (c->fd >= 0) {
        if (abort) {
            /* Reset rather than leave this side in TIME_WAIT. */
            struct linger lg = {1, 0};
            setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
        }
        close(c->fd);
        c->fd = -1;
    }
    c->st = C_IDLE;
}

static void conn_end(conn_t *c)
{
    if (measuring) {
        st.connections++;
        st.tickets += c->tickets;
    }
    /* An orderly end: without SSL_SENT_SHUTDOWN, SSL_free would mark the session (and so the
     * ticket this slot keeps) as not resumable. */
    SSL_set_shutdown(c->ssl, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
    slot_release(c, false);
    pending[n_pending++] = (int)(c - conns);
}

static void conn_fail(conn_t *c, fail_kind_t k, const char *why)
{
    note_error(k, why);
    slot_release(c, true);
    if (k == F_CONNECT) {
        c->restart_at = now_ns() + 10 * 1000000u; /* no busy loop against a closed port */
        return;
    }
    pending[n_pending++] = (int)(c - conns);
}

static void conn_start(conn_t *c)
{
    c->started = now_ns();
    c->deadline = c->started + (uint64_t)opt.timeout_ms * 1000000u;
    c->restart_at = 0;
    c->tickets = 0;
    c->req_off = c->resp_len = 0;
    c->offered = false;
    c->fd = socket(addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        conn_fail(c, F_CONNECT, strerror(errno));
        return;
    }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(c->fd, (struct sockaddr *)&addr, addr_len) != 0 && errno != EINPROGRESS) {
        conn_fail(c, F_CONNECT, strerror(errno));
        return;
    }
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLET, .data.ptr = c};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) != 0)
        die("epoll_ctl failed");
    if (c->ssl) {
        if (SSL_clear(c->ssl) != 1)
            die("SSL_clear failed");
        SSL_set_session(c->ssl, NULL); /* SSL_clear keeps the last one for resumption */
    } else {
        c->ssl = SSL_new(ctx);
        if (!c->ssl)
            die("SSL_new failed");
        SSL_set_app_data(c->ssl, c);
        if (opt.ca) {
            if (opt.sni)
                SSL_set1_host(c->ssl, opt.sni);
            else
                X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl), host);
        }
    }
    SSL_set_fd(c->ssl, c->fd);
    if (opt.sni)
        SSL_set_tlsext_host_name(c->ssl, opt.sni);
    if (opt.resume && c->sess) {
        if (opt.reuse) {
            /* OpenSSL marks a TLS 1.3 session used once as not resumable: offer a copy. */
            SSL_SESSION *copy = SSL_SESSION_dup(c->sess);
            if (!copy)
                die("out of memory");
            SSL_set_session(c->ssl, copy);
            SSL_SESSION_free(copy);
        } else {
            SSL_set_session(c->ssl, c->sess);
        }
        c->offered = true;
    }
    SSL_set_connect_state(c->ssl);
    c->st = C_CONNECTING;
}

/* A new session from the server: a TLS 1.3 ticket (after the handshake), or a TLS 1.2
 * session at the end of the handshake. Returns 1 when the slot keeps it. */
static int on_new_session(SSL *ssl, SSL_SESSION *sess)
{
    conn_t *c = SSL_get_app_data(ssl);
    c->tickets++;
    if (!opt.resume || !SSL_SESSION_is_resumable(sess))
        return 0;
    if (c->sess)
        SSL_SESSION_free(c->sess);
    c->sess = sess;
    return 1;
}

static void handshake_done(conn_t *c)
{
    bool reused = SSL_session_reused(c->ssl) == 1;
    if (measuring) {
        st.handshakes++;
        if (reused)
            st.resumed++;
        else
            st.full++;
        if (c->offered)
            st.offered++;
        lat_push(now_ns() - c->started);
        if (!info.have)
            capture_info(c);
    }
    c->st = opt.request ? C_WRITE : C_SHUTDOWN;
}

/* Response bytes: keep the first few (the status line), count the rest. */
static void response_bytes(conn_t *c, const char *p, int n)
{
    if (c->resp_len < sizeof(c->resp_head)) {
        size_t k = sizeof(c->resp_head) - c->resp_len;
        memcpy(c->resp_head + c->resp_len, p, (size_t)n < k ? (size_t)n : k);
    }
    c->resp_len += (size_t)n;
}

static void response_end(conn_t *c, bool clean)
{
    const char *h = c->resp_head;
    if (c->resp_len < 12 || memcmp(h, "HTTP/1.", 7) != 0 || h[9] != '2') {
        char why[64];
        snprintf(why, sizeof(why), "response starts with \"%.*s\"",
                 (int)(c->resp_len < 12 ? c->resp_len : 12), h);
        conn_fail(c, F_STATUS, why);
        return;
    }
    if (measuring) {
        st.responses_ok++;
        st.unclean_closes += !clean;
    }
    conn_end(c);
}

/* Advances a connection until it has to wait for the socket. */
static void conn_step(conn_t *c, uint32_t events)
{
    static char buf[16384];
    int rc, e;
    for (;;) {
        ERR_clear_error();
        errno = 0;
        switch (c->st) {
        case C_IDLE:
            return;
        case C_CONNECTING: {
            if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
                return;
            int err = 0;
            socklen_t l = sizeof(err);
            getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l);
            if (err) {
                conn_fail(c, F_CONNECT, strerror(err));
                return;
            }
            c->st = C_HANDSHAKE;
            break;
        }
        case C_HANDSHAKE:
            rc = SSL_connect(c->ssl);
            if (rc == 1) {
                handshake_done(c);
                break;
            }
            e = SSL_get_error(c->ssl, rc);
            if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
                return;
            if (opt.ca && SSL_get_verify_result(c->ssl) != X509_V_OK) {
                conn_fail(c, F_VERIFY,
                          X509_verify_cert_error_string(SSL_get_verify_result(c->ssl)));
                ERR_clear_error();
            } else {
                conn_fail(c, F_HANDSHAKE, ssl_why(c, rc));
            }
            return;
        case C_WRITE:
            rc = SSL_write(c->ssl, request + c->req_off, (int)(request_len - c->req_off));
            if (rc > 0) {
                c->req_off += (size_t)rc;
                if (c->req_off == request_len)
                    c->st = C_READ;
                break;
            }
            e = SSL_get_error(c->ssl, rc);
            if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
                return;
            conn_fail(c, F_REQUEST, ssl_why(c, rc));
            return;
        case C_READ:
            rc = SSL_read(c->ssl, buf, sizeof(buf));
            if (rc > 0) {
                response_bytes(c, buf, rc);
                break;
            }
            e = SSL_get_error(c->ssl, rc);
            if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
                return;
            if (e == SSL_ERROR_ZERO_RETURN || unexpected_eof(e)) {
                /* "Connection: close": the server ends the response (with or without
                 * close_notify; a missing one is counted). */
                response_end(c, e == SSL_ERROR_ZERO_RETURN);
                return;
            }
            conn_fail(c, F_REQUEST, ssl_why(c, rc));
            return;
        case C_SHUTDOWN:
            rc = SSL_shutdown(c->ssl); /* sends close_notify */
            if (rc >= 0) {
                /* And the TCP FIN: some servers (h2o 2.2) wait for the end of the stream. */
                shutdown(c->fd, SHUT_WR);
                c->st = C_DRAIN;
                break;
            }
            e = SSL_get_error(c->ssl, rc);
            if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
                return;
            if (measuring)
                st.close_errors++;
            conn_end(c);
            return;
        case C_DRAIN:
            /* Reads what the server still sends (TLS 1.3 tickets) up to its close_notify or
             * end of stream. */
            rc = SSL_read(c->ssl, buf, sizeof(buf));
            if (rc > 0)
                break;
            e = SSL_get_error(c->ssl, rc);
            if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
                return;
            if (unexpected_eof(e)) {
                st.unclean_closes += measuring;
            } else if (e != SSL_ERROR_ZERO_RETURN) {
                st.close_errors += measuring;
                if (!first_close_error[0])
                    snprintf(first_close_error, sizeof(first_close_error), "%s", ssl_why(c, rc));
            }
            ERR_clear_error();
            conn_end(c);
            return;
        }
    }
}

/* ---- setup --------------------------------------------------------------------------------- */

static void usage(void)
{
    fprintf(stderr,
            "usage: sl-tlsload [-c CONNS] [-d SECS] [-w SECS] [--resume [--reuse-tickets]]\n"
            "                  [--request [PATH]] [--host NAME] [--tls 1.2|1.3] [--ciphers L]\n"
            "                  [--ciphersuites L] [--groups L] [--sigalgs L] [--sni NAME]\n"
            "                  [--ca FILE] [--alpn L] [--timeout MS] [--cpu N] HOST:PORT\n");
    exit(2);
}

static double num_arg(const char *name, const char *v, double min, double max)
{
    char *end = NULL;
    double d = v ? strtod(v, &end) : 0;
    if (!v || end == v || *end || d < min || d > max) {
        fprintf(stderr, "sl-tlsload: %s: expected a number in [%g, %g]\n", name, min, max);
        exit(2);
    }
    return d;
}

/* The value of option argv[*i] (moving *i past it), or a usage error. */
static const char *value(int argc, char **argv, int *i)
{
    if (*i + 1 >= argc) {
        fprintf(stderr, "sl-tlsload: %s needs a value\n", argv[*i]);
        exit(2);
    }
    return argv[++*i];
}

static void parse_args(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-c") || !strcmp(a, "--conns"))
            opt.conns = (int)num_arg(a, value(argc, argv, &i), 1, 100000);
        else if (!strcmp(a, "-d") || !strcmp(a, "--duration"))
            opt.duration = num_arg(a, value(argc, argv, &i), 0.01, 86400);
        else if (!strcmp(a, "-w") || !strcmp(a, "--warmup"))
            opt.warmup = num_arg(a, value(argc, argv, &i), 0, 86400);
        else if (!strcmp(a, "--resume"))
            opt.resume = true;
        else if (!strcmp(a, "--reuse-tickets"))
            opt.reuse = true;
        else if (!strcmp(a, "--request")) {
            opt.request = true;
            if (i + 1 < argc && argv[i + 1][0] == '/')
                opt.path = argv[++i];
        } else if (!strcmp(a, "--host"))
            opt.host_header = value(argc, argv, &i);
        else if (!strcmp(a, "--tls")) {
            const char *v = value(argc, argv, &i);
            if (!strcmp(v, "1.2"))
                opt.version = TLS1_2_VERSION;
            else if (!strcmp(v, "1.3"))
                opt.version = TLS1_3_VERSION;
            else
                die("--tls: 1.2 or 1.3");
        } else if (!strcmp(a, "--ciphers"))
            opt.ciphers = value(argc, argv, &i);
        else if (!strcmp(a, "--ciphersuites"))
            opt.suites = value(argc, argv, &i);
        else if (!strcmp(a, "--groups"))
            opt.groups = value(argc, argv, &i);
        else if (!strcmp(a, "--sigalgs"))
            opt.sigalgs = value(argc, argv, &i);
        else if (!strcmp(a, "--sni"))
            opt.sni = value(argc, argv, &i);
        else if (!strcmp(a, "--ca"))
            opt.ca = value(argc, argv, &i);
        else if (!strcmp(a, "--alpn"))
            opt.alpn = value(argc, argv, &i);
        else if (!strcmp(a, "--timeout"))
            opt.timeout_ms = (long)num_arg(a, value(argc, argv, &i), 1, 3600000);
        else if (!strcmp(a, "--cpu"))
            opt.cpu = (int)num_arg(a, value(argc, argv, &i), 0, CPU_SETSIZE - 1);
        else if (a[0] != '-' && !opt.target)
            opt.target = a;
        else
            usage();
    }
    if (!opt.target)
        usage();
}

static void resolve(void)
{
    const char *colon = strrchr(opt.target, ':');
    if (!colon || colon == opt.target || !colon[1])
        die("target: expected HOST:PORT");
    size_t n = (size_t)(colon - opt.target);
    if (opt.target[0] == '[' && n >= 2 && opt.target[n - 1] == ']') {
        n -= 2;
        memcpy(host, opt.target + 1, n < sizeof(host) ? n : sizeof(host) - 1);
    } else {
        memcpy(host, opt.target, n < sizeof(host) ? n : sizeof(host) - 1);
    }
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
    int rc = getaddrinfo(host, colon + 1, &hints, &res);
    if (rc != 0 || !res) {
        fprintf(stderr, "sl-tlsload: %s: %s\n", opt.target, gai_strerror(rc));
        exit(2);
    }
    memcpy(&addr, res->ai_addr, res->ai_addrlen);
    addr_len = res->ai_addrlen;
    freeaddrinfo(res);
}

static void ssl_setup(void)
{
    ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx)
        die("SSL_CTX_new failed");
    SSL_CTX_set_min_proto_version(ctx, opt.version ? opt.version : TLS1_2_VERSION);
    SSL_CTX_set_max_proto_version(ctx, opt.version);
    if (opt.ciphers && SSL_CTX_set_cipher_list(ctx, opt.ciphers) != 1)
        die("--ciphers: no usable cipher");
    if (opt.suites && SSL_CTX_set_ciphersuites(ctx, opt.suites) != 1)
        die("--ciphersuites: no usable suite");
    if (opt.groups && SSL_CTX_set1_groups_list(ctx, opt.groups) != 1)
        die("--groups: unknown group");
    if (opt.sigalgs && SSL_CTX_set1_sigalgs_list(ctx, opt.sigalgs) != 1)
        die("--sigalgs: unknown signature algorithm");
    if (opt.ca) {
        if (SSL_CTX_load_verify_locations(ctx, opt.ca, NULL) != 1)
            die("--ca: cannot load the CA file");
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    } else {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    }
    if (opt.alpn) {
        unsigned char wire[256];
        size_t w = 0;
        const char *p = opt.alpn;
        while (*p) {
            size_t len = strcspn(p, ",");
            if (!len || len > 255 || w + 1 + len > sizeof(wire))
                die("--alpn: bad list");
            wire[w++] = (unsigned char)len;
            memcpy(wire + w, p, len);
            w += len;
            p += len + (p[len] == ',');
        }
        SSL_CTX_set_alpn_protos(ctx, wire, (unsigned)w);
    }
    /* One read for several records: fewer syscalls per handshake. */
    SSL_CTX_set_read_ahead(ctx, 1);
    /* The new-session callback sees every ticket; nothing goes to OpenSSL's own cache. */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(ctx, on_new_session);
}

static void build_request(void)
{
    const char *h = opt.host_header ? opt.host_header : opt.sni ? opt.sni : host;
    size_t cap = strlen(opt.path) + strlen(h) + 128;
    request = malloc(cap);
    if (!request)
        die("out of memory");
    int n = snprintf(request, cap,
                     "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: sl-tlsload\r\n"
                     "Connection: close\r\n\r\n",
                     opt.path, h);
    request_len = (size_t)n;
}

/* ---- report -------------------------------------------------------------------------------- */

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static uint32_t pct(double q)
{
    if (!st.n_lat)
        return 0;
    size_t k = (size_t)(q / 100.0 * (double)st.n_lat);
    return st.lat_us[k >= st.n_lat ? st.n_lat - 1 : k];
}

static void json_str(const char *s)
{
    putchar('"');
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            printf("\\%c", ch);
        else if (ch < 0x20)
            printf("\\u%04x", ch);
        else
            putchar(ch);
    }
    putchar('"');
}

static double cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static void report(double secs, double cpu)
{
    uint64_t failed = 0;
    for (int k = 0; k < F_COUNT; k++)
        failed += st.fails[k];
    qsort(st.lat_us, st.n_lat, sizeof(*st.lat_us), cmp_u32);
    double sum = 0;
    for (size_t i = 0; i < st.n_lat; i++)
        sum += st.lat_us[i];
    printf("{\"target\":");
    json_str(opt.target);
    printf(",\"mode\":\"%s\",\"request\":%s,\"conns\":%d,\"duration_s\":%.3f,"
           "\"handshakes\":%llu,\"handshakes_per_s\":%.1f,\"full\":%llu,\"resumed\":%llu,"
           "\"sessions_offered\":%llu,\"resumption_rate\":",
           opt.resume ? (opt.reuse ? "resume-reuse" : "resume") : "full",
           opt.request ? "true" : "false", opt.conns, secs, (unsigned long long)st.handshakes,
           secs > 0 ? (double)st.handshakes / secs : 0.0, (unsigned long long)st.full,
           (unsigned long long)st.resumed, (unsigned long long)st.offered);
    if (st.offered)
        printf("%.4f", (double)st.resumed / (double)st.offered);
    else
        printf("null");
    printf(",\"connections\":%llu,\"tickets_per_conn\":%.2f,\"responses_ok\":%llu,"
           "\"unclean_closes\":%llu,\"close_errors\":%llu,\"failures_total\":%llu,"
           "\"failures\":{",
           (unsigned long long)st.connections,
           st.connections ? (double)st.tickets / (double)st.connections : 0.0,
           (unsigned long long)st.responses_ok, (unsigned long long)st.unclean_closes,
           (unsigned long long)st.close_errors, (unsigned long long)failed);
    for (int k = 0; k < F_COUNT; k++)
        printf("%s\"%s\":%llu", k ? "," : "", fail_names[k], (unsigned long long)st.fails[k]);
    printf("},\"first_errors\":{");
    bool first = true;
    for (int k = 0; k < F_COUNT; k++) {
        if (!first_error[k][0])
            continue;
        printf("%s\"%s\":", first ? "" : ",", fail_names[k]);
        json_str(first_error[k]);
        first = false;
    }
    if (first_close_error[0]) {
        printf("%s\"close\":", first ? "" : ",");
        json_str(first_close_error);
    }
    printf("},\"latency_us\":{\"p50\":%u,\"p90\":%u,\"p99\":%u,\"max\":%u,\"mean\":%.1f},", pct(50),
           pct(90), pct(99), st.n_lat ? st.lat_us[st.n_lat - 1] : 0,
           st.n_lat ? sum / (double)st.n_lat : 0.0);
    printf("\"client_cpu_s\":%.3f,\"client_cpu_pct\":%.1f,\"client_cpu_us_per_handshake\":%.1f,",
           cpu, secs > 0 ? 100.0 * cpu / secs : 0.0,
           st.handshakes ? cpu * 1e6 / (double)st.handshakes : 0.0);
    printf("\"tls\":");
    if (info.have) {
        printf("{\"version\":");
        json_str(info.version);
        printf(",\"cipher\":");
        json_str(info.cipher);
        printf(",\"group\":");
        json_str(info.group);
        printf(",\"peer_sigalg\":");
        json_str(info.sigalg);
        printf(",\"peer_key\":");
        json_str(info.key);
        printf(",\"peer_cn\":");
        json_str(info.subject);
        printf("}");
    } else {
        printf("null");
    }
    printf("}\n");
}

/* ---- main loop ----------------------------------------------------------------------------- */

static void check_slots(uint64_t now)
{
    for (int i = 0; i < opt.conns; i++) {
        conn_t *c = &conns[i];
        if (c->st != C_IDLE && now > c->deadline) {
            conn_fail(c, F_TIMEOUT, "no end within --timeout");
        } else if (c->st == C_IDLE && c->restart_at && now >= c->restart_at) {
            c->restart_at = 0;
            pending[n_pending++] = i;
        }
    }
}

int main(int argc, char **argv)
{
    parse_args(argc, argv);
    signal(SIGPIPE, SIG_IGN);
    if (opt.cpu >= 0) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(opt.cpu, &set);
        if (sched_setaffinity(0, sizeof(set), &set) != 0)
            die("--cpu: sched_setaffinity failed");
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    resolve();
    ssl_setup();
    if (opt.request)
        build_request();
    ep = epoll_create1(EPOLL_CLOEXEC);
    conns = calloc((size_t)opt.conns, sizeof(*conns));
    pending = calloc((size_t)opt.conns, sizeof(*pending));
    if (ep < 0 || !conns || !pending)
        die("out of memory");
    for (int i = 0; i < opt.conns; i++) {
        conns[i].fd = -1;
        pending[n_pending++] = i;
    }

    uint64_t t_start = now_ns();
    uint64_t t_measure = t_start + (uint64_t)(opt.warmup * 1e9);
    uint64_t t_end = t_measure + (uint64_t)(opt.duration * 1e9);
    uint64_t next_check = t_start;
    double cpu0 = 0;
    measuring = opt.warmup <= 0;
    if (measuring) {
        cpu0 = cpu_s();
        fprintf(stderr, "sl-tlsload: measuring\n");
    }
    struct epoll_event evs[256];
    for (;;) {
        while (n_pending > 0) {
            conn_t *c = &conns[pending[--n_pending]];
            conn_start(c);
        }
        uint64_t now = now_ns();
        if (!measuring && now >= t_measure) {
            memset(first_error, 0, sizeof(first_error));
            first_close_error[0] = 0;
            measuring = true;
            cpu0 = cpu_s();
            t_measure = now;
            t_end = now + (uint64_t)(opt.duration * 1e9);
            /* A mark for whoever samples the server's CPU time over the same window. */
            fprintf(stderr, "sl-tlsload: measuring\n");
        }
        if (now >= t_end)
            break;
        if (now >= next_check) {
            check_slots(now);
            next_check = now + 10 * 1000000u;
            continue;
        }
        int ms = (int)((t_end - now) / 1000000u) + 1;
        int n = epoll_wait(ep, evs, 256, ms < 10 ? ms : 10);
        for (int i = 0; i < n; i++)
            conn_step(evs[i].data.ptr, evs[i].events);
    }
    double secs = (double)(now_ns() - t_measure) / 1e9;
    double cpu = cpu_s() - cpu0;
    for (int i = 0; i < opt.conns; i++) {
        if (conns[i].st != C_IDLE)
            slot_release(&conns[i], true); /* cut off at the end: not counted */
        SSL_free(conns[i].ssl);
        if (conns[i].sess)
            SSL_SESSION_free(conns[i].sess);
    }
    report(secs, cpu);
    uint64_t failed = 0;
    for (int k = 0; k < F_COUNT; k++)
        failed += st.fails[k];
    free(st.lat_us);
    free(conns);
    free(pending);
    free(request);
    SSL_CTX_free(ctx);
    close(ep);
    return st.handshakes > 0 && failed == 0 ? 0 : 1;
}
