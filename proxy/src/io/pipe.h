/* A byte pipe between two streams: what an upgraded HTTP connection (WebSocket) becomes. */
#ifndef SL_IO_PIPE_H
#define SL_IO_PIPE_H

#include <stddef.h>
#include <stdint.h>

#include "sluice/stream.h"

typedef struct sl_pipe sl_pipe_t;

/* err: 0 when both directions ended normally; a_to_b/b_to_a: bytes moved each way. */
typedef void (*sl_pipe_done_cb)(void *arg, int err, uint64_t a_to_b, uint64_t b_to_a);

/* Moves bytes both ways until both directions ended, an error, or idle_ms (0: no limit)
 * without a byte either way. An EOF from one side becomes a half-close (shutdown) of the other
 * once the bytes before it are written; a reset or error ends both. lead_a/lead_b are bytes
 * already read from a and b (malloc'd; the pipe takes them; may be NULL): they go first. The
 * pipe takes both streams (their data pointer, reading, closing) and closes them at the end,
 * then calls cb. One buffer per direction: a side is not read while its last bytes are being
 * written to the other (backpressure). */
sl_pipe_t *sl__pipe_start(sl_stream_t *a, sl_stream_t *b, char *lead_a, size_t lead_a_len,
                          char *lead_b, size_t lead_b_len, uint64_t idle_ms, sl_pipe_done_cb cb,
                          void *arg);
/* Ends the pipe now (both streams close); cb runs with err. */
void sl__pipe_close(sl_pipe_t *p, int err);

#endif
