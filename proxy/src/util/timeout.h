/* Timeouts: FIFO queues of equal durations, one libuv timer per queue.
 *
 * Connection timeouts come in few distinct durations (header, keep-alive, upstream read...).
 * Entries of one duration expire in the order they were armed, so each duration is a FIFO list
 * whose head is the next to expire: arming and disarming are O(1) list operations instead of
 * libuv's O(log n) timer heap, and a connection embeds a 40-byte node instead of a 150-byte
 * uv_timer_t. Queues belong to the calling thread's loop. */
#ifndef SL_UTIL_TIMEOUT_H
#define SL_UTIL_TIMEOUT_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

typedef struct sl_timeout sl_timeout_t;
typedef void (*sl_timeout_cb)(sl_timeout_t *t);

struct sl_timeout {
    sl_timeout_t *prev, *next;
    uint64_t deadline;
    struct sl_tq *q;
    sl_timeout_cb cb;
};

/* Arms t to fire cb after ms (re-arming if armed). ms == 0 disarms. */
void sl_timeout_start(uv_loop_t *loop, sl_timeout_t *t, uint64_t ms, sl_timeout_cb cb);
void sl_timeout_stop(sl_timeout_t *t);
static inline bool sl_timeout_armed(const sl_timeout_t *t)
{
    return t->q != NULL;
}
/* Closes the calling thread's queues (at worker exit, before its loop's last run). */
void sl_timeout_thread_close(void);

#endif
