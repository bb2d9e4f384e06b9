/* JSON text exactly as cJSON_PrintUnformatted writes it (same escapes, same numbers), optionally
 * canonical: every mapping's keys in strcmp order (a stable sort, so duplicate keys keep their
 * order), without modifying the tree and without an allocation per object.
 *
 * The writer appends to a growing buffer, or, with a sink, hands full buffers to it (hashing
 * a big document without holding its text). */
#ifndef SL_UTIL_JCANON_H
#define SL_UTIL_JCANON_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A child of a mapping, with its position in the mapping (0-based, document order). */
typedef struct sl_jc_child {
    const cJSON *node;
    size_t index;
} sl_jc_child_t;

typedef struct sl_jc sl_jc_t;
struct sl_jc {
    char *p;
    size_t len, cap;
    /* NULL: p grows to hold everything. Else called with p[0..len) when p is full and at
     * sl_jc_finish; len is reset to 0 after each call. */
    void (*sink)(sl_jc_t *w, const char *p, size_t n);
    void *sink_data;
    bool sort;            /* canonical: keys sorted */
    size_t unsorted;      /* mappings written whose keys were not already in order */
    bool failed;          /* a value cJSON would not print (unknown type, Raw without text) */
    bool pooled;          /* p comes from sl_pool_alloc (free it with sl_pool_free) */
    sl_jc_child_t *stack; /* scratch for sorted views, used as a stack */
    size_t sp, stack_cap;
};

/* sort: canonical order. sink may be NULL. */
void sl_jc_init(sl_jc_t *w, bool sort, void (*sink)(sl_jc_t *, const char *, size_t),
                void *sink_data);
/* A writer into a buffer of the big-chunk pool (util/slab.h), of about size_hint bytes first:
 * text that is rebuilt often and is large. The text, taken from w->p, is freed with
 * sl_pool_free. */
void sl_jc_init_pooled(sl_jc_t *w, bool sort, size_t size_hint);
/* Frees the buffer and the scratch (take w->p first to keep the text). */
void sl_jc_free(sl_jc_t *w);
/* Hands what is left to the sink. */
void sl_jc_finish(sl_jc_t *w);

void sl_jc_raw(sl_jc_t *w, const char *s, size_t n);
/* A quoted string, escaped as cJSON does (a NULL string is ""). */
void sl_jc_string(sl_jc_t *w, const char *s);
/* Any value (a mapping's keys in canonical order when w->sort). */
void sl_jc_value(sl_jc_t *w, const cJSON *v);

/* The children of a mapping in writing order (sorted when w->sort, else document order), pushed
 * on w's scratch stack at w->stack[*base ..]: index them through w->stack (a nested call may
 * move it) until sl_jc_pop(w, n). Returns n. Counts the mapping in w->unsorted when its keys
 * were not in order. */
size_t sl_jc_children(sl_jc_t *w, const cJSON *obj, size_t *base);
void sl_jc_pop(sl_jc_t *w, size_t n);
/* True when the mapping's keys are in strcmp order (equal neighbours allowed). */
bool sl_jc_is_sorted(const cJSON *obj);

/* sha256 of v's text (sorted or as it is), streamed: the text is never held whole. Returns
 * false when cJSON could not print v. */
bool sl_jc_sha256(const cJSON *v, bool sort, unsigned char md[32]);

#endif
