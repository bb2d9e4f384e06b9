/* Lesson 23: WebSocket upgrade — a proxy on 0.0.0.0:6167 forwards WebSocket handshakes to an
 * echo server on 127.0.0.1:9091; after the upstream's 101 both connections are one byte pipe.
 *
 * Like the guide's program, this one tests itself. Besides the proxy it runs two background
 * services of the same server, each on its worker's libuv loop (no threads of its own):
 *   - the Echo Server accepts WebSocket connections on 127.0.0.1:9091 and answers every text
 *     message with "Echo [HH:MM:SS]: <text>" (local time);
 *   - the Test Client waits 2 s, connects to ws://127.0.0.1:6167 (through the proxy), sends
 *     "Ping #1".."Ping #3" a second apart, logs each echo, then closes the connection.
 * Both speak the part of RFC 6455 they need, strictly: the opening handshake
 * (Sec-WebSocket-Accept = base64(SHA-1(key + GUID))), masked frames from the client only,
 * text messages (whole or fragmented, valid UTF-8), ping/pong, and the closing handshake.
 * Binary messages are ignored, as the guide's server ignores them; messages above 16 MiB are
 * refused with status 1009.
 *
 * The echo server's socket is bound in main(), before the server starts, so a busy port is a
 * startup failure (exit 3, like a busy proxy port) instead of a background task that silently
 * does nothing. That socket is not handed over by a hot upgrade (-u): a new process cannot take
 * it while the old one runs. */
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/rand.h>

#define SL_LOG_TAG "23_websocket_upgrade"
#include <sluice/sluice.h>

#define PROXY_LISTEN "0.0.0.0:6167"
#define PROXY_IP     "127.0.0.1" /* where the test client finds the proxy */
#define PROXY_PORT   6167
#define PROXY_HOST   "127.0.0.1:6167"
#define PROXY_URL    "ws://" PROXY_HOST
#define ECHO_IP      "127.0.0.1"
#define ECHO_PORT    9091
#define ECHO_ADDR    "127.0.0.1:9091"

#define CLIENT_START_MS  2000 /* like the guide: give the proxy time to listen */
#define CLIENT_RETRY_MS  250  /* when the proxy refuses the connection anyway */
#define CLIENT_MAX_TRIES 20
#define CLIENT_PINGS     3
#define CLIENT_PAUSE_MS  1000  /* between a reply and the next ping */
#define CLIENT_REPLY_MS  10000 /* an echo later than this is a failure */
#define HANDSHAKE_MS     10000 /* from TCP connect to the end of the handshake */
#define CLOSE_WAIT_MS    5000  /* for the peer's Close once ours is sent */
#define LINGER_MS        2000  /* for the peer's FIN once the close handshake is over */
#define TUNNEL_IDLE_MS   (24ULL * 3600 * 1000)
#define WS_MAX_HEAD      8192
#define WS_MAX_HEADERS   32
#define WS_MAX_MESSAGE   (16u << 20)
#define WS_MAX_FRAME     (WS_MAX_MESSAGE + 14) /* 14: the longest frame header */
#define WS_READ_CHUNK    (64u << 10)
#define WS_WRITE_HIGH    (8u << 20) /* stop reading while more than this waits to be sent */
#define WS_WRITE_LOW     (1u << 20)
#define LOG_TEXT_MAX     200 /* bytes of a message shown in a log line */

static const char WS_GUID[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/* ---- helpers: buffers, log-safe text, UTF-8, base64 --------------------------------------- */

typedef struct buf {
    char *data;
    size_t len, cap;
} buf_t;

/* Makes room for `want` more bytes (fewer when max is near, but at least one) without growing
 * past max bytes. Returns 0, or -1 when the buffer is full or memory ran out. */
static int buf_reserve(buf_t *b, size_t want, size_t max)
{
    if (want == 0)
        return 0;
    size_t need = b->len + want > max ? max : b->len + want;
    if (need <= b->len)
        return -1;
    if (need <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap * 2 : 4096;
    if (cap < need)
        cap = need;
    if (cap > max)
        cap = max;
    char *p = realloc(b->data, cap);
    if (!p)
        return -1;
    b->data = p;
    b->cap = cap;
    return 0;
}

static int buf_append(buf_t *b, const char *p, size_t n, size_t max)
{
    if (n == 0)
        return 0;
    if (n > max - b->len || buf_reserve(b, n, max) != 0)
        return -1;
    memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

static void buf_consume(buf_t *b, size_t n)
{
    if (n == 0)
        return;
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
}

static void buf_free(buf_t *b)
{
    free(b->data);
    *b = (buf_t){0};
}

/* Text from the network, made safe for one log line: control bytes, DEL and backslashes are
 * escaped, at most LOG_TEXT_MAX bytes are shown (cut at a character boundary). */
typedef struct printable {
    char s[LOG_TEXT_MAX * 4 + 48];
} printable_t;

static const char *printable(printable_t *out, const char *text, size_t len)
{
    size_t shown = len, o = 0;
    if (shown > LOG_TEXT_MAX) {
        shown = LOG_TEXT_MAX;
        while (shown > 0 && ((unsigned char)text[shown] & 0xc0) == 0x80)
            shown--;
    }
    for (size_t i = 0; i < shown; i++) {
        unsigned char ch = (unsigned char)text[i];
        if (ch < 0x20 || ch == 0x7f || ch == '\\')
            o += (size_t)snprintf(out->s + o, sizeof(out->s) - o, "\\x%02x", ch);
        else
            out->s[o++] = (char)ch;
    }
    if (shown < len)
        snprintf(out->s + o, sizeof(out->s) - o, "...(%zu bytes)", len);
    else
        out->s[o] = '\0';
    return out->s;
}

/* RFC 3629: no overlong forms, no surrogates, nothing above U+10FFFF. */
static bool utf8_valid(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned char c = s[i];
        size_t more;
        uint32_t cp, min;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xe0) == 0xc0) {
            more = 1, cp = c & 0x1f, min = 0x80;
        } else if ((c & 0xf0) == 0xe0) {
            more = 2, cp = c & 0x0f, min = 0x800;
        } else if ((c & 0xf8) == 0xf0) {
            more = 3, cp = c & 0x07, min = 0x10000;
        } else {
            return false;
        }
        if (n - i <= more)
            return false;
        for (size_t k = 1; k <= more; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return false;
            cp = cp << 6 | (s[i + k] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        i += more + 1;
    }
    return true;
}

/* A Sec-WebSocket-Key: the base64 form of 16 bytes, i.e. 22 base64 characters and "==". */
static bool ws_key_valid(sl_str_t key)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    if (key.len != 24 || key.ptr[22] != '=' || key.ptr[23] != '=')
        return false;
    for (size_t i = 0; i < 22; i++)
        if (!key.ptr[i] || !strchr(alphabet, key.ptr[i]))
            return false;
    return true;
}

/* Sec-WebSocket-Accept for a valid key: base64(SHA-1(key + GUID)), 28 characters. */
static int ws_accept_for(sl_str_t key, char out[29])
{
    char joined[24 + sizeof(WS_GUID)];
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned md_len = 0;
    if (key.len != 24)
        return -1;
    memcpy(joined, key.ptr, 24);
    memcpy(joined + 24, WS_GUID, sizeof(WS_GUID) - 1);
    if (EVP_Digest(joined, 24 + sizeof(WS_GUID) - 1, md, &md_len, EVP_sha1(), NULL) != 1 ||
        md_len != 20)
        return -1;
    return EVP_EncodeBlock((unsigned char *)out, md, 20) == 28 ? 0 : -1;
}

/* ---- a minimal HTTP/1.1 head parser (the handshake) --------------------------------------- */

typedef struct http_head {
    sl_str_t line; /* request or status line */
    sl_header_t items[WS_MAX_HEADERS];
    sl_headers_t headers; /* read-only view over items (no arena) */
} http_head_t;

static bool is_tchar(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c && strchr("!#$%&'*+-.^_`|~", c));
}

/* Splits head (without its final CRLF CRLF) into the first line and the header fields. Rejects
 * what RFC 9112 rejects: empty or non-token names, obs-fold, control bytes other than HTAB in
 * values, bare CR or LF. Returns 0 or -1. */
static int http_head_parse(const char *p, size_t len, http_head_t *h)
{
    const char *end = p + len;
    h->line = (sl_str_t){"", 0};
    h->headers = (sl_headers_t){.items = h->items, .cap = WS_MAX_HEADERS};
    for (bool first = true; p < end; first = false) {
        const char *eol = memmem(p, (size_t)(end - p), "\r\n", 2);
        const char *le = eol ? eol : end;
        for (const unsigned char *q = (const unsigned char *)p; q < (const unsigned char *)le; q++)
            if ((*q < 0x20 && *q != '\t') || *q == 0x7f)
                return -1;
        if (first) {
            h->line = (sl_str_t){p, (size_t)(le - p)};
        } else {
            const char *colon = memchr(p, ':', (size_t)(le - p));
            if (!colon || colon == p || h->headers.n == WS_MAX_HEADERS)
                return -1;
            for (const char *q = p; q < colon; q++)
                if (!is_tchar(*q))
                    return -1;
            const char *v = colon + 1, *ve = le;
            while (v < ve && (*v == ' ' || *v == '\t'))
                v++;
            while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
                ve--;
            h->items[h->headers.n++] =
                (sl_header_t){{p, (size_t)(colon - p)}, {v, (size_t)(ve - v)}};
        }
        p = eol ? eol + 2 : end;
    }
    return h->line.len ? 0 : -1;
}

/* The single value of name, or NULL when absent or repeated. */
static const sl_str_t *header_once(const http_head_t *h, const char *name)
{
    return sl_headers_count(&h->headers, name) == 1 ? sl_headers_get(&h->headers, name) : NULL;
}

/* ---- a WebSocket connection: frames and the closing handshake, for both roles -------------- */

enum {
    WS_OP_CONT = 0x0,
    WS_OP_TEXT = 0x1,
    WS_OP_BINARY = 0x2,
    WS_OP_CLOSE = 0x8,
    WS_OP_PING = 0x9,
    WS_OP_PONG = 0xa,
};

/* Close status codes (RFC 6455 §7.4.1). */
enum {
    WS_NORMAL = 1000,
    WS_GOING_AWAY = 1001,
    WS_PROTOCOL_ERROR = 1002,
    WS_NO_STATUS = 1005,
    WS_INVALID_DATA = 1007,
    WS_TOO_BIG = 1009,
};

enum { FRAME_PARTIAL = 0, FRAME_READY = 1 };

typedef struct ws_frame {
    bool fin, masked;
    unsigned opcode;
    unsigned char mask[4];
    size_t header_len, len;
} ws_frame_t;

/* Decodes the frame at p (n bytes so far). Returns FRAME_READY when header and payload are all
 * there, FRAME_PARTIAL when more bytes are needed, or the close status to fail with. */
static int ws_frame_parse(const unsigned char *p, size_t n, ws_frame_t *f)
{
    if (n < 2)
        return FRAME_PARTIAL;
    f->fin = p[0] & 0x80;
    f->opcode = p[0] & 0x0f;
    f->masked = p[1] & 0x80;
    if (p[0] & 0x70) /* RSV1-3: no extension was negotiated */
        return WS_PROTOCOL_ERROR;
    bool control = f->opcode & 0x8;
    if (f->opcode > WS_OP_PONG || (f->opcode > WS_OP_BINARY && !control))
        return WS_PROTOCOL_ERROR;
    uint64_t len = p[1] & 0x7f;
    size_t hl = 2;
    if (len == 126) {
        if (n < 4)
            return FRAME_PARTIAL;
        len = (uint64_t)p[2] << 8 | p[3];
        hl = 4;
        if (len < 126) /* the shortest form is required */
            return WS_PROTOCOL_ERROR;
    } else if (len == 127) {
        if (n < 10)
            return FRAME_PARTIAL;
        len = 0;
        for (int i = 0; i < 8; i++)
            len = len << 8 | p[2 + i];
        hl = 10;
        if (len >> 63 || len <= 0xffff)
            return WS_PROTOCOL_ERROR;
    }
    if (control && (!f->fin || len > 125))
        return WS_PROTOCOL_ERROR;
    if (len > WS_MAX_MESSAGE)
        return WS_TOO_BIG;
    if (f->masked) {
        if (n < hl + 4)
            return FRAME_PARTIAL;
        memcpy(f->mask, p + hl, 4);
        hl += 4;
    }
    f->header_len = hl;
    f->len = (size_t)len;
    return n - hl >= len ? FRAME_READY : FRAME_PARTIAL;
}

/* Writes a final frame's header into h (14 bytes at most); mask is NULL for server frames. */
static size_t ws_header_write(unsigned char *h, unsigned opcode, size_t len,
                              const unsigned char *mask)
{
    size_t n = 0;
    unsigned char m = mask ? 0x80 : 0;
    h[n++] = (unsigned char)(0x80 | opcode);
    if (len < 126) {
        h[n++] = (unsigned char)(m | len);
    } else if (len <= 0xffff) {
        h[n++] = m | 126;
        h[n++] = (unsigned char)(len >> 8);
        h[n++] = (unsigned char)len;
    } else {
        h[n++] = m | 127;
        for (int i = 7; i >= 0; i--)
            h[n++] = (unsigned char)((uint64_t)len >> (8 * i));
    }
    if (mask) {
        memcpy(h + n, mask, 4);
        n += 4;
    }
    return n;
}

static void ws_mask(char *p, size_t n, const unsigned char mask[4])
{
    for (size_t i = 0; i < n; i++)
        p[i] ^= (char)mask[i & 3];
}

/* Codes a peer may send in a Close frame (RFC 6455 §7.4). */
static bool close_code_valid(unsigned code)
{
    return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
           (code >= 3000 && code <= 4999);
}

typedef enum ws_role { WS_SERVER, WS_CLIENT } ws_role_t;

typedef enum ws_state {
    WS_HANDSHAKE,  /* connecting, or reading the HTTP head */
    WS_OPEN,       /* messages both ways */
    WS_CLOSE_SENT, /* our Close is out; waiting for the peer's (data is discarded) */
    WS_DRAIN,      /* the close handshake is over (or failed): waiting for the TCP to end */
    WS_CLOSED,     /* handles closing */
} ws_state_t;

typedef struct ws_conn ws_conn_t;

typedef struct ws_conn_ops {
    /* The handshake's HTTP head arrived (without its final CRLF CRLF). Must move the
     * connection on: ws_opened(), or ws_drain()/ws_abort() after refusing it. */
    void (*on_head)(ws_conn_t *c, const char *head, size_t len);
    void (*on_text)(ws_conn_t *c, const char *text, size_t len);
    /* Both handles are closed; the owner may free or reuse c. */
    void (*on_closed)(ws_conn_t *c);
} ws_conn_ops_t;

struct ws_conn {
    uv_tcp_t tcp;
    uv_timer_t timer; /* handshake, Close and linger deadlines */
    uv_shutdown_t shutdown_req;
    const ws_conn_ops_t *ops;
    const char *who; /* "Server" or "Client", for log lines */
    ws_role_t role;
    ws_state_t state;
    int open_handles;
    bool read_paused; /* backpressure: the peer does not read what we send */
    buf_t rx;         /* bytes received and not parsed yet */
    buf_t msg;        /* a fragmented message being put together */
    unsigned msg_opcode;
    unsigned close_code; /* the peer's, once received (WS_NO_STATUS when it gave none) */
};

typedef struct ws_write {
    uv_write_t req;
    ws_conn_t *conn;
    char data[];
} ws_write_t;

static void ws_abort(ws_conn_t *c);
static void ws_drain(ws_conn_t *c);
static void ws_read_cb(uv_stream_t *h, ssize_t nread, const uv_buf_t *buf);
static void ws_alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf);

static void ws_handle_closed(uv_handle_t *h)
{
    ws_conn_t *c = h->data;
    if (--c->open_handles > 0)
        return;
    buf_free(&c->rx);
    buf_free(&c->msg);
    c->ops->on_closed(c);
}

static void ws_timer_cb(uv_timer_t *t)
{
    ws_conn_t *c = t->data;
    if (c->state == WS_HANDSHAKE)
        SL_WARN("%s: no WebSocket handshake within %d s, closing.", c->who, HANDSHAKE_MS / 1000);
    else if (c->state == WS_CLOSE_SENT)
        SL_WARN("%s: no Close reply within %d s, closing.", c->who, CLOSE_WAIT_MS / 1000);
    ws_abort(c);
}

static void ws_conn_init(ws_conn_t *c, uv_loop_t *loop, ws_role_t role, const ws_conn_ops_t *ops)
{
    memset(c, 0, sizeof(*c));
    c->ops = ops;
    c->role = role;
    c->who = role == WS_SERVER ? "Server" : "Client";
    c->state = WS_HANDSHAKE;
    uv_tcp_init(loop, &c->tcp);
    uv_timer_init(loop, &c->timer);
    c->tcp.data = c->timer.data = c;
    c->open_handles = 2;
}

/* Starts the handshake's deadline: from connect (or accept) to its end. */
static void ws_conn_deadline(ws_conn_t *c)
{
    uv_timer_start(&c->timer, ws_timer_cb, HANDSHAKE_MS, 0);
}

/* Starts reading (TCP connected or accepted). */
static int ws_conn_start(ws_conn_t *c)
{
    uv_tcp_nodelay(&c->tcp, 1);
    return uv_read_start((uv_stream_t *)&c->tcp, ws_alloc_cb, ws_read_cb);
}

static void ws_abort(ws_conn_t *c)
{
    if (c->state == WS_CLOSED)
        return;
    c->state = WS_CLOSED;
    uv_close((uv_handle_t *)&c->tcp, ws_handle_closed);
    uv_close((uv_handle_t *)&c->timer, ws_handle_closed);
}

static void ws_write_cb(uv_write_t *req, int status)
{
    ws_write_t *w = req->data;
    ws_conn_t *c = w->conn;
    free(w);
    if (c->state == WS_CLOSED)
        return;
    if (status < 0) {
        SL_DEBUG("%s: write failed: %s", c->who, uv_strerror(status));
        ws_abort(c);
    } else if (c->read_paused &&
               uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) < WS_WRITE_LOW) {
        c->read_paused = false;
        SL_DEBUG("%s: the peer reads again, reading resumes", c->who);
        uv_read_start((uv_stream_t *)&c->tcp, ws_alloc_cb, ws_read_cb);
    }
}

/* Queues w (len bytes of data); fails the connection when that is impossible. */
static void ws_write_queue(ws_conn_t *c, ws_write_t *w, size_t len)
{
    w->conn = c;
    w->req.data = w;
    uv_buf_t b = uv_buf_init(w->data, (unsigned)len);
    if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, ws_write_cb) != 0) {
        free(w);
        ws_abort(c);
        return;
    }
    if (!c->read_paused && uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) > WS_WRITE_HIGH) {
        c->read_paused = true;
        SL_DEBUG("%s: the peer does not read what is sent, reading pauses", c->who);
        uv_read_stop((uv_stream_t *)&c->tcp);
    }
}

static void ws_send_raw(ws_conn_t *c, const char *data, size_t len)
{
    ws_write_t *w = malloc(sizeof(*w) + len);
    if (!w) {
        ws_abort(c);
        return;
    }
    memcpy(w->data, data, len);
    ws_write_queue(c, w, len);
}

/* Sends one final frame whose payload is a then b; a client masks it with fresh random bytes.
 * Nothing is sent once a Close went out (RFC 6455 §5.5.1). */
static void ws_send_frame(ws_conn_t *c, unsigned opcode, const char *a, size_t alen, const char *b,
                          size_t blen)
{
    unsigned char mask[4];
    if (c->state != WS_OPEN)
        return;
    if (c->role == WS_CLIENT && RAND_bytes(mask, sizeof(mask)) != 1) {
        SL_ERROR("%s: RAND_bytes failed", c->who);
        ws_abort(c);
        return;
    }
    size_t len = alen + blen;
    ws_write_t *w = malloc(sizeof(*w) + 14 + len);
    if (!w) {
        ws_abort(c);
        return;
    }
    size_t hl =
        ws_header_write((unsigned char *)w->data, opcode, len, c->role == WS_CLIENT ? mask : NULL);
    if (alen)
        memcpy(w->data + hl, a, alen);
    if (blen)
        memcpy(w->data + hl + alen, b, blen);
    if (c->role == WS_CLIENT)
        ws_mask(w->data + hl, len, mask);
    ws_write_queue(c, w, hl + len);
}

static void ws_send_text(ws_conn_t *c, const char *text, size_t len)
{
    ws_send_frame(c, WS_OP_TEXT, text, len, NULL, 0);
}

static void ws_send_close(ws_conn_t *c, unsigned code)
{
    char body[2] = {(char)(code >> 8), (char)code};
    ws_send_frame(c, WS_OP_CLOSE, body, code == WS_NO_STATUS ? 0 : 2, NULL, 0);
}

/* The handshake succeeded: messages may flow. */
static void ws_opened(ws_conn_t *c)
{
    if (c->state != WS_HANDSHAKE) /* a write failed meanwhile */
        return;
    c->state = WS_OPEN;
    uv_timer_stop(&c->timer);
}

/* Starts the closing handshake (RFC 6455 §7.1.2). */
static void ws_close(ws_conn_t *c, unsigned code)
{
    if (c->state == WS_HANDSHAKE) {
        ws_abort(c);
        return;
    }
    if (c->state != WS_OPEN)
        return;
    ws_send_close(c, code);
    c->state = WS_CLOSE_SENT;
    uv_timer_start(&c->timer, ws_timer_cb, CLOSE_WAIT_MS, 0);
}

static void ws_shutdown_cb(uv_shutdown_t *req, int status)
{
    /* Nothing to do: the peer's FIN, an error or the linger deadline ends the connection. */
}

/* No more WebSocket traffic: the server ends its side of the TCP connection first (RFC 6455
 * §7.1.1) once what is queued has been sent; both then wait for the peer's FIN. */
static void ws_drain(ws_conn_t *c)
{
    if (c->state == WS_DRAIN || c->state == WS_CLOSED)
        return;
    c->state = WS_DRAIN;
    c->rx.len = 0;
    buf_free(&c->msg);
    if (c->read_paused) {
        c->read_paused = false;
        uv_read_start((uv_stream_t *)&c->tcp, ws_alloc_cb, ws_read_cb);
    }
    if (c->role == WS_SERVER &&
        uv_shutdown(&c->shutdown_req, (uv_stream_t *)&c->tcp, ws_shutdown_cb) != 0) {
        ws_abort(c);
        return;
    }
    uv_timer_start(&c->timer, ws_timer_cb, LINGER_MS, 0);
}

/* Fails the connection (RFC 6455 §7.1.7) with a Close frame that says why. */
static void ws_fail(ws_conn_t *c, unsigned code, const char *why)
{
    SL_WARN("%s: closing the WebSocket connection with %u: %s", c->who, code, why);
    if (c->state == WS_OPEN)
        ws_send_close(c, code);
    ws_drain(c);
}

static void ws_on_close_frame(ws_conn_t *c, const char *p, size_t len)
{
    unsigned code = WS_NO_STATUS;
    if (len == 1) {
        ws_fail(c, WS_PROTOCOL_ERROR, "Close frame with a 1-byte body");
        return;
    }
    if (len >= 2) {
        code = (unsigned)(unsigned char)p[0] << 8 | (unsigned char)p[1];
        if (!close_code_valid(code)) {
            ws_fail(c, WS_PROTOCOL_ERROR, "invalid close status");
            return;
        }
        if (!utf8_valid((const unsigned char *)p + 2, len - 2)) {
            ws_fail(c, WS_INVALID_DATA, "close reason is not UTF-8");
            return;
        }
    }
    c->close_code = code;
    if (c->state == WS_OPEN) /* answer with the same status, as endpoints usually do */
        ws_send_close(c, code);
    ws_drain(c);
}

/* A complete message. */
static void ws_deliver(ws_conn_t *c, unsigned opcode, const char *p, size_t len)
{
    if (opcode != WS_OP_TEXT) {
        SL_DEBUG("%s: ignoring a binary message of %zu bytes", c->who, len);
        return;
    }
    if (!utf8_valid((const unsigned char *)p, len)) {
        ws_fail(c, WS_INVALID_DATA, "text message is not UTF-8");
        return;
    }
    c->ops->on_text(c, p, len);
}

static void ws_on_frame(ws_conn_t *c, const ws_frame_t *f, const char *p)
{
    if (f->opcode == WS_OP_CLOSE) {
        ws_on_close_frame(c, p, f->len);
        return;
    }
    if (c->state != WS_OPEN) /* after our Close only the peer's Close matters */
        return;
    if (f->opcode == WS_OP_PING) {
        ws_send_frame(c, WS_OP_PONG, p, f->len, NULL, 0);
    } else if (f->opcode == WS_OP_PONG) {
        /* unsolicited or answering nothing: ignored */
    } else if ((f->opcode == WS_OP_CONT) != (c->msg_opcode != 0)) {
        ws_fail(c, WS_PROTOCOL_ERROR,
                c->msg_opcode ? "new message inside a fragmented one" : "stray continuation");
    } else if (f->opcode != WS_OP_CONT && f->fin) {
        ws_deliver(c, f->opcode, p, f->len);
    } else if (buf_append(&c->msg, p, f->len, WS_MAX_MESSAGE) != 0) {
        ws_fail(c, WS_TOO_BIG, "fragmented message too big");
    } else {
        if (f->opcode != WS_OP_CONT)
            c->msg_opcode = f->opcode;
        if (f->fin) {
            unsigned opcode = c->msg_opcode;
            c->msg_opcode = 0;
            ws_deliver(c, opcode, c->msg.data, c->msg.len);
            c->msg.len = 0;
        }
    }
}

/* Handles every complete frame in rx, then keeps what is left of an incomplete one. */
static void ws_process_frames(ws_conn_t *c)
{
    size_t off = 0;
    while (c->state == WS_OPEN || c->state == WS_CLOSE_SENT) {
        ws_frame_t f;
        unsigned char *p = (unsigned char *)c->rx.data + off;
        int rc = ws_frame_parse(p, c->rx.len - off, &f);
        if (rc == FRAME_PARTIAL)
            break;
        if (rc != FRAME_READY) {
            ws_fail(c, (unsigned)rc, rc == WS_TOO_BIG ? "frame too big" : "malformed frame");
            break;
        }
        if (f.masked != (c->role == WS_SERVER)) {
            ws_fail(c, WS_PROTOCOL_ERROR, f.masked ? "masked server frame" : "unmasked frame");
            break;
        }
        char *payload = (char *)p + f.header_len;
        if (f.masked)
            ws_mask(payload, f.len, f.mask);
        off += f.header_len + f.len;
        ws_on_frame(c, &f, payload);
    }
    if (c->state == WS_OPEN || c->state == WS_CLOSE_SENT)
        buf_consume(&c->rx, off);
    else
        c->rx.len = 0;
}

static void ws_alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    ws_conn_t *c = h->data;
    if (buf_reserve(&c->rx, WS_READ_CHUNK, WS_MAX_FRAME) != 0) {
        *buf = uv_buf_init(NULL, 0); /* read_cb gets UV_ENOBUFS */
        return;
    }
    *buf = uv_buf_init(c->rx.data + c->rx.len, (unsigned)(c->rx.cap - c->rx.len));
}

static void ws_on_head_bytes(ws_conn_t *c)
{
    const char *end = memmem(c->rx.data, c->rx.len, "\r\n\r\n", 4);
    if (!end) {
        if (c->rx.len > WS_MAX_HEAD) {
            SL_WARN("%s: handshake head larger than %d bytes, closing.", c->who, WS_MAX_HEAD);
            ws_abort(c);
        }
        return;
    }
    size_t head_len = (size_t)(end - c->rx.data);
    if (head_len > WS_MAX_HEAD) {
        SL_WARN("%s: handshake head larger than %d bytes, closing.", c->who, WS_MAX_HEAD);
        ws_abort(c);
        return;
    }
    c->ops->on_head(c, c->rx.data, head_len);
    if (c->state == WS_OPEN) { /* frames may have come right behind the head */
        buf_consume(&c->rx, head_len + 4);
        ws_process_frames(c);
    } else {
        c->rx.len = 0;
    }
}

static void ws_read_cb(uv_stream_t *h, ssize_t nread, const uv_buf_t *buf)
{
    ws_conn_t *c = h->data;
    if (c->state == WS_CLOSED || nread == 0)
        return;
    if (nread < 0) {
        if (c->state == WS_DRAIN)
            SL_DEBUG("%s: connection closed", c->who);
        else if (c->state == WS_HANDSHAKE)
            SL_DEBUG("%s: connection ended before the handshake: %s", c->who,
                     uv_strerror((int)nread));
        else
            SL_WARN("%s: connection lost without a Close frame: %s", c->who,
                    uv_strerror((int)nread));
        ws_abort(c);
        return;
    }
    c->rx.len += (size_t)nread;
    if (c->state == WS_DRAIN)
        c->rx.len = 0; /* nothing more is expected: discarded */
    else if (c->state == WS_HANDSHAKE)
        ws_on_head_bytes(c);
    else
        ws_process_frames(c);
}

/* ---- the echo server (background service) ------------------------------------------------- */

typedef struct echo_conn echo_conn_t;

typedef struct echo_server {
    int fd, bind_error; /* set in main() before the workers exist */
    sl_bg_task_t *task;
    uv_tcp_t listener;
    bool listening, stopping;
    sl_shutdown_sub_t on_shutdown;
    echo_conn_t *conns;
} echo_server_t;

struct echo_conn {
    ws_conn_t ws;
    echo_server_t *server;
    echo_conn_t *prev, *next;
};

static void echo_maybe_done(echo_server_t *e)
{
    if (e->stopping && !e->listening && !e->conns)
        sl_bg_task_done(e->task);
}

/* Refuses a handshake with an HTTP error; the connection ends once it is sent. */
static void echo_refuse(ws_conn_t *c, int status, const char *extra, const char *why)
{
    char resp[512];
    SL_WARN("Server: refused a WebSocket handshake (%d): %s", status, why);
    int n = snprintf(resp, sizeof(resp),
                     "HTTP/1.1 %d %s\r\n%sContent-Type: text/plain\r\nContent-Length: %zu\r\n"
                     "Connection: close\r\n\r\n%s\n",
                     status, sl_http_reason(status), extra, strlen(why) + 1, why);
    ws_send_raw(c, resp, (size_t)n);
    ws_drain(c);
}

/* RFC 6455 §4.2.1: what a server checks in the opening handshake. */
static void echo_on_head(ws_conn_t *c, const char *head, size_t len)
{
    http_head_t h;
    const sl_str_t *key, *version;
    char accept[29], resp[256];
    if (http_head_parse(head, len, &h) != 0) {
        echo_refuse(c, 400, "", "malformed request head");
        return;
    }
    const char *sp = memchr(h.line.ptr, ' ', h.line.len);
    const char *sp2 = sp ? memchr(sp + 1, ' ', h.line.len - (size_t)(sp + 1 - h.line.ptr)) : NULL;
    if (!sp2 || sp2 == sp + 1 ||
        !sl_str_eq((sl_str_t){h.line.ptr, (size_t)(sp - h.line.ptr)}, SL_STR("GET")) ||
        !sl_str_eq((sl_str_t){sp2 + 1, (size_t)(h.line.ptr + h.line.len - sp2 - 1)},
                   SL_STR("HTTP/1.1"))) {
        echo_refuse(c, 400, "", "not a GET request in HTTP/1.1");
    } else if (!sl_headers_has_token(&h.headers, "Upgrade", "websocket")) {
        echo_refuse(c, 426, "Upgrade: websocket\r\n", "this is a WebSocket server");
    } else if (!sl_headers_has_token(&h.headers, "Connection", "upgrade")) {
        echo_refuse(c, 400, "", "no Connection: upgrade");
    } else if (!header_once(&h, "Host")) {
        echo_refuse(c, 400, "", "missing Host");
    } else if (!(version = header_once(&h, "Sec-WebSocket-Version")) ||
               !sl_str_eq(*version, SL_STR("13"))) {
        echo_refuse(c, 426, "Sec-WebSocket-Version: 13\r\n", "unsupported WebSocket version");
    } else if (!(key = header_once(&h, "Sec-WebSocket-Key")) || !ws_key_valid(*key) ||
               ws_accept_for(*key, accept) != 0) {
        echo_refuse(c, 400, "", "invalid Sec-WebSocket-Key");
    } else {
        /* No subprotocol and no extension (permessage-deflate) is accepted: not offering them
         * back declines them. */
        int n = snprintf(resp, sizeof(resp),
                         "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                         "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
                         accept);
        ws_send_raw(c, resp, (size_t)n);
        ws_opened(c);
    }
}

static void echo_on_text(ws_conn_t *c, const char *text, size_t len)
{
    char stamp[16] = "??:??:??", prefix[32];
    struct tm tm;
    time_t now = time(NULL);
    if (localtime_r(&now, &tm))
        strftime(stamp, sizeof(stamp), "%H:%M:%S", &tm);
    int n = snprintf(prefix, sizeof(prefix), "Echo [%s]: ", stamp);
    printable_t shown;
    SL_INFO("Server: Received '%s', Replying...", printable(&shown, text, len));
    ws_send_frame(c, WS_OP_TEXT, prefix, (size_t)n, text, len);
}

static void echo_on_closed(ws_conn_t *ws)
{
    echo_conn_t *ec = sl_container_of(ws, echo_conn_t, ws);
    echo_server_t *e = ec->server;
    if (ec->prev)
        ec->prev->next = ec->next;
    else
        e->conns = ec->next;
    if (ec->next)
        ec->next->prev = ec->prev;
    free(ec);
    echo_maybe_done(e);
}

static const ws_conn_ops_t echo_ops = {
    .on_head = echo_on_head,
    .on_text = echo_on_text,
    .on_closed = echo_on_closed,
};

static void echo_on_connection(uv_stream_t *listener, int status)
{
    echo_server_t *e = listener->data;
    if (status < 0) {
        SL_WARN("Echo Server: accept failed: %s", uv_strerror(status));
        return;
    }
    echo_conn_t *ec = calloc(1, sizeof(*ec));
    if (!ec) {
        SL_ERROR("Echo Server: out of memory");
        return;
    }
    ec->server = e;
    ws_conn_init(&ec->ws, listener->loop, WS_SERVER, &echo_ops);
    ec->next = e->conns;
    if (e->conns)
        e->conns->prev = ec;
    e->conns = ec;
    ws_conn_deadline(&ec->ws);
    if (uv_accept(listener, (uv_stream_t *)&ec->ws.tcp) != 0 || ws_conn_start(&ec->ws) != 0)
        ws_abort(&ec->ws);
}

static void echo_listener_closed(uv_handle_t *h)
{
    echo_server_t *e = h->data;
    e->listening = false;
    echo_maybe_done(e);
}

/* Shutdown: no new connections; open ones get a Close "going away" and end with its reply. */
static void echo_on_shutdown(sl_shutdown_sub_t *sub)
{
    echo_server_t *e = sl_container_of(sub, echo_server_t, on_shutdown);
    e->stopping = true;
    if (e->listening)
        uv_close((uv_handle_t *)&e->listener, echo_listener_closed);
    for (echo_conn_t *ec = e->conns; ec; ec = ec->next)
        ws_close(&ec->ws, WS_GOING_AWAY);
    echo_maybe_done(e);
}

static void echo_start(void *data, sl_bg_task_t *task)
{
    echo_server_t *e = data;
    e->task = task;
    e->stopping = true; /* until listening */
    if (e->fd < 0) {    /* startup fails: see echo_check_bound() */
        sl_bg_task_done(task);
        return;
    }
    uv_tcp_init(sl_bg_task_loop(task), &e->listener);
    e->listener.data = e;
    e->listening = true; /* the handle exists: it must be closed */
    int rc = uv_tcp_open(&e->listener, e->fd);
    if (rc != 0)
        close(e->fd);
    else
        rc = uv_listen((uv_stream_t *)&e->listener, 128, echo_on_connection);
    if (rc != 0) {
        SL_ERROR("Echo Server: cannot listen on %s: %s", ECHO_ADDR, uv_strerror(rc));
        uv_close((uv_handle_t *)&e->listener, echo_listener_closed);
        return;
    }
    e->stopping = false;
    SL_INFO("Echo Server listening on %s", ECHO_ADDR);
    sl_shutdown_subscribe(sl_bg_task_shutdown(task), &e->on_shutdown, echo_on_shutdown);
}

/* Binds the echo server's socket (main thread, before the server runs). */
static int echo_bind(int *err)
{
    struct sockaddr_in sa;
    int one = 1;
    uv_ip4_addr(ECHO_IP, ECHO_PORT, &sa);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        *err = -errno;
        return -1;
    }
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(fd, 128) != 0) {
        *err = -errno;
        close(fd);
        return -1;
    }
    return fd;
}

/* on_start: a port the echo server could not bind fails the startup (exit 3). */
static int echo_check_bound(sl_server_t *server, void *data, sl_error_t *err)
{
    echo_server_t *e = data;
    if (e->fd >= 0)
        return 0;
    return sl_error_set(err, e->bind_error, "Failed to bind Echo Server on %s: %s", ECHO_ADDR,
                        uv_strerror(e->bind_error));
}

/* ---- the test client (background service) ------------------------------------------------- */

typedef struct test_client {
    sl_bg_task_t *task;
    uv_timer_t timer; /* start delay, connect retries, pause between pings, reply deadline */
    ws_conn_t ws;
    bool ws_active; /* ws's handles exist */
    bool retry;     /* connect again once ws has closed */
    bool waiting;   /* for the echo of the last ping */
    bool complete;  /* the guide's exchange has been done */
    bool stopping;
    uv_connect_t connect_req;
    sl_shutdown_sub_t on_shutdown;
    int tries, pings_sent;
    char key[25], accept[29];
} test_client_t;

static void client_connect(test_client_t *tc);

static void client_timer_closed(uv_handle_t *h)
{
    test_client_t *tc = h->data;
    sl_shutdown_unsubscribe(&tc->on_shutdown);
    sl_bg_task_done(tc->task);
}

static void client_finish(test_client_t *tc)
{
    uv_close((uv_handle_t *)&tc->timer, client_timer_closed);
}

static void client_on_timer(uv_timer_t *t);

/* Sends the next ping and waits for its echo. */
static void client_send_ping(test_client_t *tc)
{
    char text[32];
    int n = snprintf(text, sizeof(text), "Ping #%d", ++tc->pings_sent);
    SL_INFO("Client: Sending '%s'", text);
    ws_send_text(&tc->ws, text, (size_t)n);
    tc->waiting = true;
    uv_timer_start(&tc->timer, client_on_timer, CLIENT_REPLY_MS, 0);
}

static void client_on_timer(uv_timer_t *t)
{
    test_client_t *tc = t->data;
    if (!tc->ws_active) { /* the start delay or a retry pause is over */
        client_connect(tc);
    } else if (tc->ws.state != WS_OPEN) {
        /* closing already: client_on_closed finishes */
    } else if (tc->waiting) {
        SL_ERROR("Client: no echo of 'Ping #%d' within %d s.", tc->pings_sent,
                 CLIENT_REPLY_MS / 1000);
        ws_close(&tc->ws, WS_NORMAL);
    } else if (tc->pings_sent < CLIENT_PINGS) {
        client_send_ping(tc);
    } else {
        SL_INFO("Client: Test Complete. Closing connection.");
        tc->complete = true;
        ws_close(&tc->ws, WS_NORMAL);
    }
}

/* RFC 6455 §4.1: what a client checks in the server's handshake answer. */
static void client_on_head(ws_conn_t *c, const char *head, size_t len)
{
    test_client_t *tc = sl_container_of(c, test_client_t, ws);
    http_head_t h;
    const sl_str_t *accept;
    const char *why = NULL;
    if (http_head_parse(head, len, &h) != 0)
        why = "malformed response head";
    else if (!sl_str_starts_with(h.line, "HTTP/1.1 101") ||
             (h.line.len > 12 && h.line.ptr[12] != ' '))
        why = "the answer is not 101 Switching Protocols";
    else if (!sl_headers_has_token(&h.headers, "Upgrade", "websocket"))
        why = "no Upgrade: websocket";
    else if (!sl_headers_has_token(&h.headers, "Connection", "upgrade"))
        why = "no Connection: upgrade";
    else if (!(accept = header_once(&h, "Sec-WebSocket-Accept")) ||
             !sl_str_eq(*accept, sl_str(tc->accept)))
        why = "wrong Sec-WebSocket-Accept";
    else if (sl_headers_get(&h.headers, "Sec-WebSocket-Extensions") ||
             sl_headers_get(&h.headers, "Sec-WebSocket-Protocol"))
        why = "an extension or subprotocol that was not asked for";
    if (why) {
        printable_t shown;
        SL_ERROR("Client: WebSocket handshake failed: %s (%s)", why,
                 printable(&shown, h.line.ptr, h.line.len));
        ws_abort(c);
        return;
    }
    ws_opened(c);
    if (c->state != WS_OPEN)
        return;
    SL_INFO("Client: Connected! Starting message loop...");
    client_send_ping(tc);
}

static void client_on_text(ws_conn_t *c, const char *text, size_t len)
{
    test_client_t *tc = sl_container_of(c, test_client_t, ws);
    printable_t shown;
    SL_INFO("Client: Received '%s'", printable(&shown, text, len));
    if (!tc->waiting)
        return;
    tc->waiting = false;
    uv_timer_start(&tc->timer, client_on_timer, CLIENT_PAUSE_MS, 0);
}

static void client_on_closed(ws_conn_t *c)
{
    test_client_t *tc = sl_container_of(c, test_client_t, ws);
    tc->ws_active = false;
    uv_timer_stop(&tc->timer);
    if (tc->retry && !tc->stopping) {
        tc->retry = false;
        uv_timer_start(&tc->timer, client_on_timer, CLIENT_RETRY_MS, 0);
        return;
    }
    if (tc->complete)
        SL_INFO("Client: Connection closed (status %u).", c->close_code);
    else if (!tc->stopping)
        SL_ERROR("Client: the connection ended before the test was complete.");
    client_finish(tc);
}

static const ws_conn_ops_t client_ops = {
    .on_head = client_on_head,
    .on_text = client_on_text,
    .on_closed = client_on_closed,
};

static void client_on_connect(uv_connect_t *req, int status)
{
    test_client_t *tc = req->data;
    if (status == UV_ECANCELED || tc->ws.state != WS_HANDSHAKE)
        return;
    if (status < 0) {
        if (status == UV_ECONNREFUSED && tc->tries < CLIENT_MAX_TRIES && !tc->stopping)
            tc->retry = true;
        else
            SL_ERROR("Client: Failed to connect to proxy: %s", uv_strerror(status));
        ws_abort(&tc->ws);
        return;
    }
    unsigned char raw[16];
    char req_head[512];
    if (RAND_bytes(raw, sizeof(raw)) != 1) {
        SL_ERROR("Client: RAND_bytes failed");
        ws_abort(&tc->ws);
        return;
    }
    EVP_EncodeBlock((unsigned char *)tc->key, raw, sizeof(raw));
    if (ws_accept_for(sl_str(tc->key), tc->accept) != 0) {
        ws_abort(&tc->ws);
        return;
    }
    int n = snprintf(req_head, sizeof(req_head),
                     "GET / HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n",
                     PROXY_HOST, tc->key);
    if (ws_conn_start(&tc->ws) != 0) {
        ws_abort(&tc->ws);
        return;
    }
    ws_send_raw(&tc->ws, req_head, (size_t)n);
}

static void client_connect(test_client_t *tc)
{
    struct sockaddr_in sa;
    if (tc->tries++ == 0)
        SL_INFO("Client: Connection to Proxy at %s", PROXY_URL);
    uv_ip4_addr(PROXY_IP, PROXY_PORT, &sa);
    ws_conn_init(&tc->ws, sl_bg_task_loop(tc->task), WS_CLIENT, &client_ops);
    tc->ws_active = true;
    ws_conn_deadline(&tc->ws);
    tc->connect_req.data = tc;
    int rc =
        uv_tcp_connect(&tc->connect_req, &tc->ws.tcp, (struct sockaddr *)&sa, client_on_connect);
    if (rc != 0) {
        SL_ERROR("Client: Failed to connect to proxy: %s", uv_strerror(rc));
        ws_abort(&tc->ws);
    }
}

static void client_on_shutdown(sl_shutdown_sub_t *sub)
{
    test_client_t *tc = sl_container_of(sub, test_client_t, on_shutdown);
    tc->stopping = true;
    uv_timer_stop(&tc->timer);
    if (tc->ws_active)
        ws_close(&tc->ws, WS_GOING_AWAY); /* client_on_closed finishes */
    else if (!uv_is_closing((uv_handle_t *)&tc->timer))
        client_finish(tc);
}

static void client_start(void *data, sl_bg_task_t *task)
{
    test_client_t *tc = data;
    tc->task = task;
    uv_timer_init(sl_bg_task_loop(task), &tc->timer);
    tc->timer.data = tc;
    uv_timer_start(&tc->timer, client_on_timer, CLIENT_START_MS, 0);
    sl_shutdown_subscribe(sl_bg_task_shutdown(task), &tc->on_shutdown, client_on_shutdown);
}

/* ---- the proxy ------------------------------------------------------------------------------ */

static int upstream_peer(sl_session_t *s, void *ctx, sl_peer_t *peer)
{
    int rc = sl_peer_new(peer, ECHO_ADDR, false, "");
    if (rc != 0)
        return rc;
    peer->options.connect_timeout_ms = 5000;
    /* The guide sets read_timeout and write_timeout to None so that quiet WebSockets are not
     * cut off. Here 0 means "none" for both, and they only bound the HTTP exchange: waiting
     * for the upstream's 101 (which may thus take forever, as in the guide). Once the 101 has
     * gone to the client, the two connections are one byte pipe and only the tunnel idle
     * timeout applies: the pipe closes after that long without a byte either way. A day is
     * generous: a quiet chat never meets it, yet a peer that vanished without a FIN (a dead
     * host, a NAT that forgot the flow) does not hold two sockets forever. */
    peer->options.read_timeout_ms = 0;
    peer->options.write_timeout_ms = 0;
    peer->options.tunnel_idle_timeout_ms = TUNNEL_IDLE_MS;
    return SL_CONTINUE;
}

static int upstream_request_filter(sl_session_t *s, void *ctx, sl_request_header_t *req)
{
    /* The Upgrade and Connection headers go upstream by themselves; logged for visibility. */
    const sl_str_t *upgrade = sl_headers_get(&req->headers, "Upgrade");
    if (upgrade) {
        printable_t shown;
        SL_INFO("Proxy: Detected Upgrade Header: \"%s\"",
                printable(&shown, upgrade->ptr, upgrade->len));
    }
    return SL_CONTINUE;
}

int main(int argc, char **argv)
{
    int code;
    sl_server_t *server = sl_server_from_args(argc, argv, &code);
    if (!server)
        return code;
    sl_server_bootstrap(server);
    tzset(); /* before any thread calls localtime_r */

    static echo_server_t echo = {.fd = -1};
    if (!sl_server_opt(server)->test)
        echo.fd = echo_bind(&echo.bind_error);
    sl_server_on_start(server, echo_check_bound, &echo);
    sl_server_add_service(server, sl_background_service_new("Echo Server", echo_start, &echo));

    static test_client_t client;
    sl_server_add_service(server, sl_background_service_new("Test Client", client_start, &client));

    static const sl_proxy_hooks_t hooks = {
        .upstream_peer = upstream_peer,
        .upstream_request_filter = upstream_request_filter,
    };
    sl_service_t *proxy = sl_http_proxy_service_new(sl_server_conf(server), &hooks, NULL);
    sl_service_add_tcp(proxy, PROXY_LISTEN);
    SL_INFO("WebSocket Proxy running on %s", PROXY_LISTEN);
    sl_server_add_service(server, proxy);
    return sl_server_run_forever(server);
}
