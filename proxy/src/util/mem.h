/* Allocation helpers: small allocations that fail abort with a message (as h2o and Redis do);
 * there is no useful recovery from running out of memory for a few hundred bytes. */
#ifndef SL_UTIL_MEM_H
#define SL_UTIL_MEM_H

#include <stddef.h>

__attribute__((noreturn)) void sl_oom(void);
void *sl_xmalloc(size_t n);
void *sl_xcalloc(size_t n, size_t size);
void *sl_xrealloc(void *p, size_t n);
char *sl_xstrdup(const char *s);
char *sl_xstrndup(const char *s, size_t n);
void *sl_xmemdup(const void *p, size_t n);

#define SL_ARRAY_LEN(a)                    (sizeof(a) / sizeof((a)[0]))
#define SL_CONTAINER_OF(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

#endif
