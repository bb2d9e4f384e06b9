/* The sluice.io/ annotations of SPEC §6: typed, validated, and never copied into the config as
 * text: a timeout becomes a number of seconds we print ourselves, a host name is checked
 * character by character. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "translate_impl.h"

#define PFX "sluice.io/"

static void invalid(wt_diags_t *d, const char *who, const char *key, const wt_kv_t *v,
                    const char *why)
{
    char q[96];
    if (v->value)
        wt_quote(q, sizeof(q), v->value);
    else if (v->is_number)
        snprintf(q, sizeof(q), "%g", v->number);
    else
        snprintf(q, sizeof(q), "(not a string)");
    wt_diag(d, SL_LOG_WARN, "%s: annotation %s: %s %s; ignored", who, key, q, why);
}

/* Whole seconds, as ingress-nginx reads proxy-*-timeout: digits only, 1..86400. A YAML
 * manifest may give a number. */
static bool seconds(const wt_kv_t *v, long *out)
{
    if (v->is_number) {
        double x = v->number;
        if (x != (double)(long)x || x < 1 || x > 86400)
            return false;
        *out = (long)x;
        return true;
    }
    if (!v->value)
        return false;
    const char *s = v->value;
    size_t n = strlen(s);
    if (!n || n > 5 || strspn(s, "0123456789") != n)
        return false;
    long x = strtol(s, NULL, 10);
    if (x < 1 || x > 86400)
        return false;
    *out = x;
    return true;
}

static void timeout(const wt_kv_t *v, const char *key, char out[16], const char *who, wt_diags_t *d)
{
    long s;
    if (!seconds(v, &s)) {
        invalid(d, who, key, v, "is not a number of seconds (1 to 86400)");
        return;
    }
    snprintf(out, 16, "%lds", s);
}

static void backend_protocol(const wt_kv_t *v, const char *key, const char *who, wt_diags_t *d)
{
    static const char *const later[] = {"HTTPS", "GRPC", "GRPCS", "H2C", NULL};
    const char *s = v->value;
    if (s && !strcasecmp(s, "HTTP"))
        return;
    for (const char *const *l = later; s && *l; l++) {
        if (!strcasecmp(s, *l)) {
            wt_diag(d, SL_LOG_WARN,
                    "%s: annotation %s: %s backends are not supported by the gateway yet; "
                    "using HTTP",
                    who, key, *l);
            return;
        }
    }
    invalid(d, who, key, v, "is not one of HTTP, HTTPS, GRPC, GRPCS, H2C");
}

static void load_balance(const wt_kv_t *v, const char *key, const char *who, wt_diags_t *d)
{
    static const char *const later[] = {"ewma",   "least_conn",    "random",
                                        "ketama", "sticky_cookie", NULL};
    const char *s = v->value;
    if (s && !strcmp(s, "round_robin"))
        return;
    for (const char *const *l = later; s && *l; l++) {
        if (!strcmp(s, *l)) {
            wt_diag(d, SL_LOG_WARN,
                    "%s: annotation %s: \"%s\" is not supported by the gateway yet; using "
                    "round_robin",
                    who, key, *l);
            return;
        }
    }
    invalid(d, who, key, v, "is not a load-balancing method (round_robin)");
}

static void vhost(const wt_kv_t *v, const char *key, wt_settings_t *s, const char *who,
                  wt_diags_t *d)
{
    const char *h = v->value;
    if (!h || !wt_valid_host(h, false)) {
        invalid(d, who, key, v, "is not a host name");
        return;
    }
    s->vhost = h;
}

void wt_settings_parse(const wt_ingress_t *ing, const char *who, wt_settings_t *s, wt_diags_t *d)
{
    memset(s, 0, sizeof(*s));
    s->vhost = "";
    for (size_t i = 0; i < ing->n_annotations; i++) {
        const wt_kv_t *v = &ing->annotations[i];
        const char *k = v->key;
        if (strncmp(k, PFX, sizeof(PFX) - 1) != 0)
            continue;
        const char *n = k + sizeof(PFX) - 1;
        if (!strcmp(n, "backend-protocol"))
            backend_protocol(v, k, who, d);
        else if (!strcmp(n, "proxy-connect-timeout"))
            timeout(v, k, s->connect, who, d);
        else if (!strcmp(n, "proxy-read-timeout"))
            timeout(v, k, s->read, who, d);
        else if (!strcmp(n, "proxy-send-timeout"))
            timeout(v, k, s->write, who, d);
        else if (!strcmp(n, "upstream-vhost"))
            vhost(v, k, s, who, d);
        else if (!strcmp(n, "load-balance"))
            load_balance(v, k, who, d);
        else {
            char q[96];
            wt_diag(d, SL_LOG_WARN, "%s: unknown annotation %s; ignored", who,
                    wt_quote(q, sizeof(q), k));
        }
    }
}
