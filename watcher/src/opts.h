/* The sluice-watcher command line (SPEC §6). Every flag takes "--flag VALUE" or
 * "--flag=VALUE"; a boolean flag alone means true. Errors are usage errors (exit 2). */
#ifndef WT_OPTS_H
#define WT_OPTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef enum wt_source { WT_SOURCE_KUBERNETES, WT_SOURCE_FILES } wt_source_t;

typedef struct wt_opts {
    wt_source_t source;
    char *manifests;
    char *kubeconfig, *api_server, *token_file, *ca_file;
    char *push, *output, *admin_token_file;
    char *controller_class, *ingress_class;
    bool watch_without_class;
    char *watch_namespace;
    char *publish_service, *publish_status_address;
    bool update_status;
    char *election_id, *election_namespace;
    char *default_ssl_certificate, *default_backend_service;
    uint64_t debounce_ms;
    char *healthz_listen; /* NULL: off */
    bool tls_certificates;
    uint64_t lease_duration_ms, renew_deadline_ms, retry_period_ms;
    uint64_t sync_check_ms; /* GET /config period */
    bool help, version;
} wt_opts_t;

/* Fills o with the defaults, then the flags. Returns 0, or -1 with a message in err. */
int wt_opts_parse(wt_opts_t *o, int argc, char **argv, char *err, size_t errcap);
void wt_opts_free(wt_opts_t *o);
void wt_opts_usage(FILE *f);

#endif
