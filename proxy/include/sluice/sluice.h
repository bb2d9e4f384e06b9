/* sluice — the whole public API. Programs define SL_LOG_TAG before including it to name
 * their log lines. */
#ifndef SLUICE_SLUICE_H
#define SLUICE_SLUICE_H

#include <stddef.h>

#include "conf.h"
#include "error.h"
#include "log.h"
#include "server.h"
#include "stream.h"

/* The struct of type `type` whose member `member` is at ptr. */
#define sl_container_of(ptr, type, member) ((type *)((char *)(ptr) - offsetof(type, member)))

#endif
