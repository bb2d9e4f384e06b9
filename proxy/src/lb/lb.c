/* Load balancing: backend sets, smooth weighted round robin, discovery. */
#include "sluice/lb.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "util/mem.h"

#define SL_LOG_TAG "lb"
#include "sluice/log.h"

#define MAX_SEQUENCE 8192

struct sl_lb {
    sl_lb_algorithm_t algorithm;
    pthread_rwlock_t lock; /* readers pick, the writer swaps the set */
    sl_backend_t *backends;
    size_t n;
    uint32_t *seq;
    size_t seq_len;
    _Atomic uint64_t counter;
    sl_lb_discover_fn discover;
    void *discover_data;
    uint64_t frequency_ms;
};

int sl_backend_init(sl_backend_t *b, const char *addr, uint32_t weight)
{
    memset(b, 0, sizeof(*b));
    sl_endpoint_t ep;
    memset(&ep, 0, sizeof(ep));
    if (sl__endpoint_parse(&ep, addr, NULL) != 0 || (ep.kind == SL_EP_TCP && ep.bound_port == 0))
        return SL_ECONFIG;
    b->addr = ep.addr;
    b->addr_len = ep.addr_len;
    b->weight = weight ? weight : 1;
    return 0;
}

void sl_backend_addr_str(const sl_backend_t *b, char *buf, size_t cap)
{
    sl_sockaddr_str(&b->addr, buf, cap);
}

static uint32_t gcd(uint32_t a, uint32_t b)
{
    while (b) {
        uint32_t t = a % b;
        a = b;
        b = t;
    }
    return a;
}

void sl_swrr_sequence(const uint32_t *weights, size_t n, uint32_t **seq, size_t *len)
{
    *seq = NULL;
    *len = 0;
    if (!n)
        return;
    uint32_t g = 0;
    for (size_t i = 0; i < n; i++)
        g = gcd(g, weights[i] ? weights[i] : 1);
    uint32_t *w = sl_xcalloc(n, sizeof(uint32_t));
    uint64_t total = 0;
    for (size_t i = 0; i < n; i++) {
        w[i] = (weights[i] ? weights[i] : 1) / g;
        total += w[i];
    }
    if (total > MAX_SEQUENCE) {
        /* Very large weight sums are scaled down; ratios stay within 1/MAX_SEQUENCE. */
        uint64_t t2 = 0;
        for (size_t i = 0; i < n; i++) {
            w[i] = (uint32_t)((uint64_t)w[i] * MAX_SEQUENCE / total);
            if (!w[i])
                w[i] = 1;
            t2 += w[i];
        }
        total = t2;
    }
    /* As nginx: every step each backend gains its weight, the richest is picked and pays the
     * total. Picks spread out instead of coming in runs. */
    int64_t *cur = sl_xcalloc(n, sizeof(int64_t));
    uint32_t *s = sl_xmalloc(total * sizeof(uint32_t));
    for (uint64_t k = 0; k < total; k++) {
        size_t best = 0;
        for (size_t i = 0; i < n; i++) {
            cur[i] += w[i];
            if (cur[i] > cur[best])
                best = i;
        }
        cur[best] -= (int64_t)total;
        s[k] = (uint32_t)best;
    }
    free(cur);
    free(w);
    *seq = s;
    *len = total;
}

static void set_backends(sl_lb_t *lb, const sl_backend_t *b, size_t n)
{
    free(lb->backends);
    free(lb->seq);
    lb->backends = n ? sl_xmemdup(b, n * sizeof(*b)) : NULL;
    lb->n = n;
    uint32_t *w = sl_xcalloc(n ? n : 1, sizeof(uint32_t));
    for (size_t i = 0; i < n; i++)
        w[i] = b[i].weight;
    sl_swrr_sequence(w, n, &lb->seq, &lb->seq_len);
    free(w);
}

sl_lb_t *sl_lb_new(sl_lb_algorithm_t algorithm, const sl_backend_t *backends, size_t n)
{
    sl_lb_t *lb = sl_xcalloc(1, sizeof(*lb));
    lb->algorithm = algorithm;
    pthread_rwlock_init(&lb->lock, NULL);
    set_backends(lb, backends, n);
    return lb;
}

sl_lb_t *sl_lb_from_addrs(const char *const *addrs, size_t n)
{
    sl_backend_t *b = sl_xcalloc(n ? n : 1, sizeof(*b));
    for (size_t i = 0; i < n; i++) {
        if (sl_backend_init(&b[i], addrs[i], 1) != 0) {
            SL_ERROR("invalid backend address \"%s\"", addrs[i]);
            free(b);
            return NULL;
        }
    }
    sl_lb_t *lb = sl_lb_new(SL_LB_ROUND_ROBIN, b, n);
    free(b);
    return lb;
}

void sl_lb_free(sl_lb_t *lb)
{
    if (!lb)
        return;
    pthread_rwlock_destroy(&lb->lock);
    free(lb->backends);
    free(lb->seq);
    free(lb);
}

int sl_lb_select(sl_lb_t *lb, const void *key, size_t key_len, sl_backend_t *out)
{
    (void)key;
    (void)key_len;
    pthread_rwlock_rdlock(&lb->lock);
    if (!lb->seq_len) {
        pthread_rwlock_unlock(&lb->lock);
        return SL_ENOUPSTREAM;
    }
    uint64_t k = atomic_fetch_add_explicit(&lb->counter, 1, memory_order_relaxed);
    *out = lb->backends[lb->seq[k % lb->seq_len]];
    pthread_rwlock_unlock(&lb->lock);
    return 0;
}

static bool same_set(const sl_lb_t *lb, const sl_backend_t *b, size_t n)
{
    if (n != lb->n)
        return false;
    for (size_t i = 0; i < n; i++)
        if (b[i].addr_len != lb->backends[i].addr_len || b[i].weight != lb->backends[i].weight ||
            memcmp(&b[i].addr, &lb->backends[i].addr, b[i].addr_len) != 0)
            return false;
    return true;
}

bool sl_lb_update(sl_lb_t *lb, const sl_backend_t *backends, size_t n)
{
    pthread_rwlock_wrlock(&lb->lock);
    bool changed = !same_set(lb, backends, n);
    if (changed)
        set_backends(lb, backends, n);
    pthread_rwlock_unlock(&lb->lock);
    return changed;
}

void sl_lb_backends(sl_lb_t *lb, sl_backend_t **out, size_t *n)
{
    pthread_rwlock_rdlock(&lb->lock);
    *n = lb->n;
    *out = lb->n ? sl_xmemdup(lb->backends, lb->n * sizeof(**out)) : NULL;
    pthread_rwlock_unlock(&lb->lock);
}

void sl_lb_set_discovery(sl_lb_t *lb, sl_lb_discover_fn fn, void *data,
                         uint64_t update_frequency_ms)
{
    lb->discover = fn;
    lb->discover_data = data;
    lb->frequency_ms = update_frequency_ms;
}

/* ---- the background service -------------------------------------------------------------- */

typedef struct lb_task {
    sl_lb_t *lb;
    sl_bg_task_t *task;
    uv_timer_t timer;
    sl_shutdown_sub_t on_shutdown;
} lb_task_t;

static void discover_now(lb_task_t *t)
{
    sl_lb_t *lb = t->lb;
    sl_backend_t *b = NULL;
    size_t n = 0;
    int rc = lb->discover(lb->discover_data, &b, &n);
    if (rc == 0) {
        if (sl_lb_update(lb, b, n))
            SL_DEBUG("%s: %zu backend(s) after discovery", sl_bg_task_name(t->task), n);
    } else {
        SL_WARN("%s: discovery failed (%s); keeping the current backends", sl_bg_task_name(t->task),
                sl_strerror(rc));
    }
    free(b);
}

static void on_tick(uv_timer_t *h)
{
    discover_now(h->data);
}

static void on_closed(uv_handle_t *h)
{
    lb_task_t *t = h->data;
    sl_bg_task_done(t->task);
    free(t);
}

static void on_shutdown(sl_shutdown_sub_t *sub)
{
    lb_task_t *t = sl_container_of(sub, lb_task_t, on_shutdown);
    uv_close((uv_handle_t *)&t->timer, on_closed);
}

static void lb_start(void *data, sl_bg_task_t *task)
{
    sl_lb_t *lb = data;
    if (!lb->discover || !lb->frequency_ms) {
        /* Nothing to do periodically: the set stays as it is (Pingora's "service exited"). */
        SL_INFO("%s: no discovery to run; background service exited", sl_bg_task_name(task));
        sl_bg_task_done(task);
        return;
    }
    lb_task_t *t = sl_xcalloc(1, sizeof(*t));
    t->lb = lb;
    t->task = task;
    uv_timer_init(sl_bg_task_loop(task), &t->timer);
    t->timer.data = t;
    discover_now(t);
    uv_timer_start(&t->timer, on_tick, lb->frequency_ms, lb->frequency_ms);
    sl_shutdown_subscribe(sl_bg_task_shutdown(task), &t->on_shutdown, on_shutdown);
}

sl_service_t *sl_lb_background_service(const char *name, sl_lb_t *lb)
{
    return sl_background_service_new(name, lb_start, lb);
}
