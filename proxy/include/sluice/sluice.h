/* sluice — the whole public API. Programs define SL_LOG_TAG before including it to name
 * their log lines. */
#ifndef SLUICE_SLUICE_H
#define SLUICE_SLUICE_H

#include <stddef.h>

#include "conf.h"
#include "dns.h"
#include "error.h"
#include "log.h"
#include "http.h"
#include "lb.h"
#include "peer.h"
#include "proxy.h"
#include "server.h"
#include "stream.h"
#include "tcp.h"
#include "tls.h"

#endif
