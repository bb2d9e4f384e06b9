/* Arenas: bump allocation, freed all at once. The first block is embedded in the owner (a
 * request reuses it for every request on its connection); bigger needs chain heap blocks. */
#ifndef SL_UTIL_ARENA_H
#define SL_UTIL_ARENA_H

#include <stddef.h>

#include "sluice/http.h"

#define SL_ARENA_FIRST 4096

typedef struct sl_arena_block {
    struct sl_arena_block *next;
    size_t size;
    char data[];
} sl_arena_block_t;

struct sl_arena {
    char *cur, *end;
    sl_arena_block_t *blocks; /* heap blocks, newest first */
    size_t total;             /* bytes handed out, for limits and metrics */
    _Alignas(16) char first[SL_ARENA_FIRST];
};

void sl__arena_init(sl_arena_t *a);
/* Frees heap blocks and rewinds to the first block. */
void sl__arena_reset(sl_arena_t *a);
void sl__arena_release(sl_arena_t *a);

#endif
