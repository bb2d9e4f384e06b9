/* The Kubernetes API client: where the server is and how to authenticate (in-cluster service
 * account, a kubeconfig file, or flags), and requests with those credentials. */
#ifndef WT_KUBE_H
#define WT_KUBE_H

#include <cjson/cJSON.h>
#include <sys/stat.h>

#include "http.h"
#include "sluice/error.h"

#define WT_SA_DIR "/var/run/secrets/kubernetes.io/serviceaccount"

typedef struct wt_kube_conf {
    char *server;     /* "https://10.96.0.1:443", no trailing slash */
    char *token;      /* a fixed bearer token, or NULL */
    char *token_file; /* a token file re-read when it changes, or NULL */
    wt_tls_t tls;
    char *namespace; /* the context's or service account's namespace, or NULL */
    char *source;    /* "in-cluster", "kubeconfig FILE" (for logs) */
} wt_kube_conf_t;

void wt_kube_conf_free(wt_kube_conf_t *c);
/* In-cluster: KUBERNETES_SERVICE_HOST/PORT and the service account directory (WT_SA_DIR, or
 * the SLUICE_SERVICEACCOUNT_DIR environment variable for tests). */
int wt_kube_conf_incluster(wt_kube_conf_t *c, sl_error_t *err);
/* A kubeconfig file (YAML): the current context's cluster (server, certificate-authority[-data],
 * insecure-skip-tls-verify) and user (token, tokenFile, client-certificate[-data],
 * client-key[-data]). Relative paths are relative to the file's directory. */
int wt_kube_conf_kubeconfig(wt_kube_conf_t *c, const char *path, sl_error_t *err);
/* The service account's namespace file, or NULL (caller frees). */
char *wt_kube_sa_namespace(void);

typedef struct wt_kube {
    wt_http_t *http;
    wt_kube_conf_t conf;
    char *token;          /* current token */
    struct stat token_st; /* of token_file when last read */
    bool have_token_st;
} wt_kube_t;

/* Takes conf. */
void wt_kube_init(wt_kube_t *k, wt_http_t *http, wt_kube_conf_t *conf);
void wt_kube_release(wt_kube_t *k);
/* Forgets the token so the next request re-reads its file (after a 401). */
void wt_kube_token_stale(wt_kube_t *k);

typedef struct wt_kube_req_opts {
    const char *method; /* GET */
    const char *path;   /* "/api/v1/services?limit=500" */
    const char *body;   /* JSON */
    size_t body_len;
    const char *content_type; /* application/json by default when there is a body */
    long timeout_ms;
    size_t max_body;
    wt_http_line_cb on_line;
    size_t max_line;
    wt_http_done_cb on_done;
    void *arg;
} wt_kube_req_opts_t;

wt_http_req_t *wt_kube_request(wt_kube_t *k, const wt_kube_req_opts_t *o);

/* The message of a Kubernetes Status body ("ingresses.networking.k8s.io \"x\" not found"), or
 * a short form of the body; writes into buf. */
const char *wt_kube_status_message(const char *body, size_t len, char *buf, size_t cap);

#endif
