/* A JSON text writer that produces exactly the bytes cJSON_PrintUnformatted would for the same
 * tree (same string escapes, integers as %d): translation writes its output as canonical text
 * directly, and the hash sluice computes over its re-printed copy is the same. */
#ifndef WT_JSONW_H
#define WT_JSONW_H

#include <stddef.h>

typedef struct wt_buf {
    char *p;
    size_t len, cap;
} wt_buf_t;

void wt_buf_init(wt_buf_t *b);
void wt_buf_free(wt_buf_t *b);
void wt_buf_put(wt_buf_t *b, const char *s, size_t n);
void wt_buf_puts(wt_buf_t *b, const char *s);
/* s as a JSON string (quotes included), escaped as cJSON does. */
void wt_buf_str(wt_buf_t *b, const char *s);
void wt_buf_int(wt_buf_t *b, long v);
/* The text (NUL-terminated); the buffer is empty afterwards. Caller frees. */
char *wt_buf_take(wt_buf_t *b);

#endif
