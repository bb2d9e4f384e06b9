/* The body_inspect filter: fails a request whose body contains a deny word (the guide's
 * lesson 12), without buffering the body.
 *
 * The deny words are compiled at config time into a DFA (Aho-Corasick with every transition
 * resolved), so each body byte costs one table lookup whatever the number of words, case
 * folding is free (it is in the byte-class table), and a word split across chunks is found
 * because the automaton state carries over: that state is the longest tail of the bytes seen
 * that may still become a word, i.e. the (longest word - 1)-byte window, kept in 4 bytes of the
 * filter scratch. Only the first max_buffer bytes are inspected. */
#include <stdlib.h>
#include <string.h>

#include "gateway/filters/filters.h"
#include "util/cfg.h"
#include "util/mem.h"

static const char *const bi_keys[] = {"deny", "ignore_case", "max_buffer", "on_overflow", NULL};

/* ---- the automaton ----------------------------------------------------------------------- */

static unsigned char fold(const gw_body_inspect_t *b, unsigned char c)
{
    return b->ignore_case ? gw__lower(c) : c;
}

/* Bytes that occur in no word share class 0; each other (folded) byte gets its own class. Words
 * are C strings, so NUL never occurs: at most 255 byte classes plus class 0 fit in a uint8_t. */
static void build_classes(gw_body_inspect_t *b, const cJSON *deny)
{
    uint8_t used[256] = {0}, id[256] = {0};
    for (const cJSON *w = deny->child; w; w = w->next)
        for (const unsigned char *p = (const unsigned char *)w->valuestring; *p; p++)
            used[fold(b, *p)] = 1;
    unsigned n = 1;
    for (unsigned c = 1; c < 256; c++)
        if (used[c])
            id[c] = (uint8_t)n++;
    for (unsigned c = 0; c < 256; c++)
        b->cls[c] = id[fold(b, (unsigned char)c)];
    b->n_classes = (uint16_t)n;
}

/* The trie of the words in go[state * nc + class] (-1: no edge); marks word ends in term. */
static size_t build_trie(const gw_body_inspect_t *b, const cJSON *deny, int32_t *go, bool *term)
{
    size_t nc = b->n_classes, n_states = 1;
    for (const cJSON *w = deny->child; w; w = w->next) {
        size_t s = 0;
        for (const unsigned char *p = (const unsigned char *)w->valuestring; *p; p++) {
            int32_t *slot = &go[s * nc + b->cls[*p]];
            if (*slot < 0)
                *slot = (int32_t)n_states++;
            s = (size_t)*slot;
        }
        term[s] = true;
    }
    return n_states;
}

/* Breadth-first, turns the trie into a complete DFA: a missing edge goes where the failure
 * state's edge goes, and a state whose failure chain ends a word ends a word too. */
static void resolve(size_t nc, size_t n_states, int32_t *go, bool *term)
{
    uint32_t *fail = sl_xcalloc(n_states, sizeof(*fail));
    uint32_t *queue = sl_xmalloc(n_states * sizeof(*queue));
    size_t head = 0, tail = 0;
    for (size_t c = 0; c < nc; c++) {
        if (go[c] < 0) {
            go[c] = 0;
        } else {
            fail[go[c]] = 0;
            queue[tail++] = (uint32_t)go[c];
        }
    }
    while (head < tail) {
        size_t s = queue[head++];
        term[s] = term[s] || term[fail[s]]; /* fail[s] is shallower: already final */
        for (size_t c = 0; c < nc; c++) {
            int32_t t = go[s * nc + c], f = go[(size_t)fail[s] * nc + c];
            if (t < 0) {
                go[s * nc + c] = f;
            } else {
                fail[t] = (uint32_t)f;
                queue[tail++] = (uint32_t)t;
            }
        }
    }
    free(fail);
    free(queue);
}

static void build_dfa(gw_body_inspect_t *b, const cJSON *deny, size_t total_bytes)
{
    build_classes(b, deny);
    size_t nc = b->n_classes, max_states = total_bytes + 1;
    int32_t *go = sl_xmalloc(max_states * nc * sizeof(*go));
    memset(go, 0xff, max_states * nc * sizeof(*go)); /* -1 everywhere */
    bool *term = sl_xcalloc(max_states, sizeof(*term));
    size_t n = build_trie(b, deny, go, term);
    resolve(nc, n, go, term);
    /* Entries are row offsets, so the scan loop needs no multiplication. */
    b->delta = sl_xmalloc(n * nc * sizeof(*b->delta));
    for (size_t i = 0; i < n * nc; i++)
        b->delta[i] = term[go[i]] ? GW_BODY_MATCH : (uint32_t)((size_t)go[i] * nc);
    b->n_states = n;
    free(go);
    free(term);
}

/* ---- parsing ----------------------------------------------------------------------------- */

static int parse_deny(const cJSON *conf, const char *path, size_t *total, const cJSON **out,
                      sl_error_t *err)
{
    char p[SL_CFG_PATH_MAX], ep[SL_CFG_PATH_MAX];
    const cJSON *l;
    int rc = gw__filter_get_list(conf, path, "deny", GW_BODY_WORDS_MAX, &l, p, sizeof(p), err);
    if (rc)
        return rc;
    if (!l)
        return sl_error_set(err, SL_ECONFIG, "%s: required (a list of words to deny)", p);
    if (!l->child)
        return sl_error_set(err, SL_ECONFIG, "%s: must not be empty", p);
    size_t i = 0;
    *total = 0;
    for (const cJSON *w = l->child; w; w = w->next, i++) {
        sl__cfg_path_index(ep, sizeof(ep), p, i);
        if (!cJSON_IsString(w))
            return gw__filter_type_error(err, ep, "a string", w);
        size_t len = strlen(w->valuestring);
        if (len == 0)
            return sl_error_set(err, SL_ECONFIG, "%s: must not be empty", ep);
        if (len > GW_BODY_WORD_MAX)
            return sl_error_set(err, SL_ECONFIG, "%s: too long (%zu bytes, at most %d)", ep, len,
                                GW_BODY_WORD_MAX);
        *total += len;
    }
    if (*total > GW_BODY_WORDS_BYTES)
        return sl_error_set(err, SL_ECONFIG, "%s: too many bytes in all (%zu, at most %d)", p,
                            *total, GW_BODY_WORDS_BYTES);
    *out = l;
    return 0;
}

static int parse_options(const cJSON *conf, const char *path, gw_body_inspect_t *b, sl_error_t *err)
{
    char p[SL_CFG_PATH_MAX];
    int rc = sl__cfg_get_bool(conf, path, "ignore_case", &b->ignore_case, err);
    if (rc)
        return rc;
    b->limit = GW_BODY_DEFAULT_LIMIT;
    if ((rc = sl__cfg_get_size(conf, path, "max_buffer", &b->limit, err)))
        return rc;
    if (b->limit < 1 || b->limit > GW_BODY_MAX_INSPECT) {
        sl__cfg_path_key(p, sizeof(p), path, "max_buffer");
        return sl_error_set(err, SL_ECONFIG, "%s: must be between 1 and 1g", p);
    }
    char *mode = NULL;
    if ((rc = sl__cfg_get_str(conf, path, "on_overflow", false, &mode, err)))
        return rc;
    if (!mode || strcmp(mode, "pass") == 0) {
        b->on_overflow = GW_OVERFLOW_PASS;
    } else if (strcmp(mode, "reject") == 0) {
        b->on_overflow = GW_OVERFLOW_REJECT;
    } else {
        char q[96];
        gw__filter_quote(q, sizeof(q), mode);
        sl__cfg_path_key(p, sizeof(p), path, "on_overflow");
        rc = sl_error_set(err, SL_ECONFIG, "%s: unknown value %s (pass, reject)", p, q);
    }
    free(mode);
    return rc;
}

int gw_body_inspect_parse(const cJSON *conf, const char *path, gw_body_inspect_t **out,
                          sl_error_t *err)
{
    *out = NULL;
    int rc = sl__cfg_check_keys(conf, path, bi_keys, err);
    if (rc)
        return rc;
    gw_body_inspect_t *b = sl_xcalloc(1, sizeof(*b));
    const cJSON *deny = NULL;
    size_t total = 0;
    if ((rc = parse_deny(conf, path, &total, &deny, err)) ||
        (rc = parse_options(conf, path, b, err))) {
        gw_body_inspect_free(b);
        return rc;
    }
    build_dfa(b, deny, total);
    *out = b;
    return 0;
}

void gw_body_inspect_free(gw_body_inspect_t *b)
{
    if (!b)
        return;
    free(b->delta);
    free(b);
}

/* ---- inspecting -------------------------------------------------------------------------- */

/* Runs the DFA over p; true on a deny word. */
static bool scan(const gw_body_inspect_t *b, uint32_t *state, const unsigned char *p, size_t n)
{
    const uint32_t *delta = b->delta;
    const uint8_t *cls = b->cls;
    uint32_t s = *state;
    for (size_t i = 0; i < n; i++) {
        s = delta[s + cls[p[i]]];
        if (s == GW_BODY_MATCH)
            return true;
    }
    *state = s;
    return false;
}

gw_body_verdict_t gw_body_inspect_feed(const gw_body_inspect_t *b, gw_body_scratch_t *sc,
                                       const char *data, size_t len)
{
    if (sc->done || len == 0)
        return GW_BODY_PASS;
    uint64_t room = b->limit - sc->seen; /* seen never passes limit */
    size_t n = len < room ? len : (size_t)room;
    if (scan(b, &sc->state, (const unsigned char *)data, n))
        return GW_BODY_DENIED;
    sc->seen += n;
    if (n == len)
        return GW_BODY_PASS;
    sc->done = true;
    return b->on_overflow == GW_OVERFLOW_REJECT ? GW_BODY_TOO_LARGE : GW_BODY_PASS;
}

gw_body_verdict_t gw_body_inspect_check_length(const gw_body_inspect_t *b, const sl_headers_t *h)
{
    if (b->on_overflow != GW_OVERFLOW_REJECT)
        return GW_BODY_PASS;
    const sl_str_t *cl = sl_headers_get(h, "content-length");
    if (!cl || cl->len == 0)
        return GW_BODY_PASS;
    uint64_t v = 0;
    for (size_t i = 0; i < cl->len; i++) {
        unsigned char c = (unsigned char)cl->ptr[i];
        if (c < '0' || c > '9')
            return GW_BODY_PASS; /* the codec rejects malformed lengths; not ours to judge */
        if (v > b->limit)
            break; /* already too large; stop before v can overflow */
        v = v * 10 + (c - '0');
    }
    return v > b->limit ? GW_BODY_TOO_LARGE : GW_BODY_PASS;
}

/* ---- the filter -------------------------------------------------------------------------- */

static int parse(const cJSON *conf, const char *path, void **state, sl_error_t *err)
{
    gw_body_inspect_t *b;
    int rc = gw_body_inspect_parse(conf, path, &b, err);
    if (rc == 0)
        *state = b;
    return rc;
}

static void release(void *state)
{
    gw_body_inspect_free(state);
}

static int verdict_to_rc(sl_session_t *s, gw_body_verdict_t v)
{
    switch (v) {
    case GW_BODY_DENIED:
        return sl_session_error(s, gw_reason_body_denied);
    case GW_BODY_TOO_LARGE:
        return sl_session_error(s, gw_reason_body_too_large);
    default:
        return SL_CONTINUE;
    }
}

/* Lesson 40's fast path: with on_overflow: reject, a Content-Length above the limit is refused
 * before anything is sent upstream. */
static int request(void *state, void *scratch, sl_session_t *s)
{
    return verdict_to_rc(s, gw_body_inspect_check_length(state, &sl_session_req(s)->headers));
}

static int request_body(void *state, void *scratch, sl_session_t *s, sl_body_t *body, bool end)
{
    return verdict_to_rc(s, gw_body_inspect_feed(state, scratch, body->data, body->len));
}

const gw_filter_kind_t gw_filter_body_inspect = {
    .name = "body_inspect",
    .scratch_size = sizeof(gw_body_scratch_t),
    .parse = parse,
    .free = release,
    .request = request,
    .request_body = request_body,
};
