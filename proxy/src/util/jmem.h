/* cJSON trees made in bulk: while a scope is open on a thread, cJSON's allocations on that thread
 * come from the scope's slab and its frees of them do nothing; closing the scope frees them all
 * at once. A configuration change parses, moves and drops trees of a few hundred thousand nodes:
 * one allocation each, then one free each, when done with malloc.
 *
 * Every tree made in a scope must be gone (deleted, or simply dropped) when it closes; a tree
 * made before the scope may be read or deleted in it but not changed (what is added to it, keys
 * too, would be the scope's memory); and no text printed by cJSON in a scope may be freed with
 * free(): print outside. Other threads, and
 * this one outside scopes, use malloc and free as before. */
#ifndef SL_UTIL_JMEM_H
#define SL_UTIL_JMEM_H

#include <stddef.h>

#include "util/slab.h"

typedef struct sl_jmem_scope {
    sl_slab_t mem;
    struct sl_jmem_scope *outer;
} sl_jmem_scope_t;

/* Installs the hooks (cJSON_InitHooks) once; call before other threads use cJSON. */
void sl_jmem_init(void);
/* size_hint: about how many bytes the trees will take (8 per byte of JSON text is typical). */
void sl_jmem_begin(sl_jmem_scope_t *s, size_t size_hint);
void sl_jmem_end(sl_jmem_scope_t *s);

#endif
