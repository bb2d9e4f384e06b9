#include "util/timeout.h"

#include <stdlib.h>

#include "util/mem.h"

typedef struct sl_tq {
    uv_timer_t timer;
    struct sl_tq *next_q;
    uint64_t ms;
    sl_timeout_t head;  /* circular sentinel */
    uint64_t armed_for; /* deadline the uv timer is set to, 0: not set */
    bool closing;
} sl_tq_t;

static __thread sl_tq_t *queues; /* few: one per distinct duration */
static __thread uv_loop_t *queues_loop;

static void unlink_entry(sl_timeout_t *t)
{
    t->prev->next = t->next;
    t->next->prev = t->prev;
    t->prev = t->next = NULL;
    t->q = NULL;
}

static void arm_queue(sl_tq_t *q);

static void on_timer(uv_timer_t *h)
{
    sl_tq_t *q = h->data;
    q->armed_for = 0;
    uint64_t now = uv_now(h->loop);
    /* Expired entries leave before their callback runs: a callback may re-arm itself, which
     * appends it at the tail with a later deadline. */
    while (q->head.next != &q->head && q->head.next->deadline <= now) {
        sl_timeout_t *t = q->head.next;
        unlink_entry(t);
        t->cb(t);
    }
    arm_queue(q);
}

static void arm_queue(sl_tq_t *q)
{
    if (q->closing || q->head.next == &q->head)
        return;
    uint64_t first = q->head.next->deadline;
    if (q->armed_for && q->armed_for <= first)
        return; /* fires early enough; on_timer re-arms for the rest */
    uint64_t now = uv_now(q->timer.loop);
    q->armed_for = first;
    uv_timer_start(&q->timer, on_timer, first > now ? first - now : 0, 0);
}

static sl_tq_t *queue_for(uv_loop_t *loop, uint64_t ms)
{
    if (queues_loop != loop) {
        /* A thread runs one loop; a new loop (tests create several) starts afresh. */
        queues = NULL;
        queues_loop = loop;
    }
    for (sl_tq_t *q = queues; q; q = q->next_q)
        if (q->ms == ms)
            return q;
    sl_tq_t *q = sl_xcalloc(1, sizeof(*q));
    q->ms = ms;
    q->head.next = q->head.prev = &q->head;
    uv_timer_init(loop, &q->timer);
    q->timer.data = q;
    uv_unref((uv_handle_t *)&q->timer); /* timeouts alone do not keep a loop alive */
    q->next_q = queues;
    queues = q;
    return q;
}

void sl_timeout_stop(sl_timeout_t *t)
{
    if (t->q)
        unlink_entry(t);
}

void sl_timeout_start(uv_loop_t *loop, sl_timeout_t *t, uint64_t ms, sl_timeout_cb cb)
{
    sl_timeout_stop(t);
    if (ms == 0)
        return;
    sl_tq_t *q = queue_for(loop, ms);
    t->cb = cb;
    t->deadline = uv_now(loop) + ms;
    t->q = q;
    t->next = &q->head;
    t->prev = q->head.prev;
    q->head.prev->next = t;
    q->head.prev = t;
    if (t->prev == &q->head)
        arm_queue(q);
}

static void on_closed(uv_handle_t *h)
{
    free(h->data);
}

void sl_timeout_thread_close(void)
{
    for (sl_tq_t *q = queues; q; q = q->next_q) {
        q->closing = true;
        while (q->head.next != &q->head)
            unlink_entry(q->head.next);
        if (!uv_is_closing((uv_handle_t *)&q->timer))
            uv_close((uv_handle_t *)&q->timer, on_closed);
    }
    queues = NULL;
    queues_loop = NULL;
}
