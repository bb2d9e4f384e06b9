/* Flags: one table, parsed into wt_opts_t, then checked as a whole. */
#include "opts.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "healthz.h"
#include "util/cfg.h"
#include "util/mem.h"

typedef enum kind { F_STR, F_BOOL, F_DUR, F_SOURCE } kind_t;

typedef struct flag {
    const char *name;
    kind_t kind;
    size_t off;
    const char *arg; /* shown in the usage */
    const char *help;
} flag_t;

#define O(f) offsetof(wt_opts_t, f)

static const flag_t flags[] = {
    {"source", F_SOURCE, O(source), "kubernetes|files", "where objects come from (kubernetes)"},
    {"manifests", F_STR, O(manifests), "DIR", "files: a directory of YAML/JSON manifests"},
    {"kubeconfig", F_STR, O(kubeconfig), "FILE", "kubeconfig (default: in-cluster)"},
    {"api-server", F_STR, O(api_server), "URL", "API server URL (overrides the kubeconfig)"},
    {"token-file", F_STR, O(token_file), "F", "bearer token file, re-read when it changes"},
    {"ca-file", F_STR, O(ca_file), "F", "CA certificates of the API server"},
    {"push", F_STR, O(push), "URL", "sluice's PUT /config (http://127.0.0.1:10254/config)"},
    {"output", F_STR, O(output), "FILE", "write the config to FILE (atomically) instead"},
    {"admin-token-file", F_STR, O(admin_token_file), "F", "bearer token for sluice's admin API"},
    {"controller-class", F_STR, O(controller_class), "VALUE",
     "IngressClass controller (sluice.io/ingress-controller)"},
    {"ingress-class", F_STR, O(ingress_class), "NAME", "our IngressClass name (sluice)"},
    {"watch-ingress-without-class", F_BOOL, O(watch_without_class), "[=true|false]",
     "serve Ingresses that name no class (false)"},
    {"watch-namespace", F_STR, O(watch_namespace), "NS", "only this namespace (all)"},
    {"publish-service", F_STR, O(publish_service), "NS/NAME",
     "Service whose address goes into Ingress status"},
    {"publish-status-address", F_STR, O(publish_status_address), "ADDR[,ADDR]",
     "addresses for Ingress status"},
    {"update-status", F_BOOL, O(update_status), "[=true|false]",
     "the leader writes Ingress status (true)"},
    {"election-id", F_STR, O(election_id), "NAME", "leader election Lease (sluice-leader)"},
    {"election-namespace", F_STR, O(election_namespace), "NS",
     "the Lease's namespace (POD_NAMESPACE, the service account's, default)"},
    {"default-ssl-certificate", F_STR, O(default_ssl_certificate), "NS/NAME",
     "TLS Secret for names no Ingress covers"},
    {"default-backend-service", F_STR, O(default_backend_service), "NS/NAME",
     "Service for requests nothing else matches"},
    {"debounce", F_DUR, O(debounce_ms), "DURATION", "wait after a change before pushing (100ms)"},
    {"healthz-listen", F_STR, O(healthz_listen), "IP:PORT|off", "/healthz (127.0.0.1:10255)"},
    {"tls-certificates", F_BOOL, O(tls_certificates), "[=true|false]",
     "read kubernetes.io/tls Secrets, send them as \"certificates\" (true)"},
    {"election-lease-duration", F_DUR, O(lease_duration_ms), "DURATION", "(15s)"},
    {"election-renew-deadline", F_DUR, O(renew_deadline_ms), "DURATION", "(10s)"},
    {"election-retry-period", F_DUR, O(retry_period_ms), "DURATION", "(2s)"},
    {"sync-check-period", F_DUR, O(sync_check_ms), "DURATION",
     "how often sluice's config hash is checked (5s)"},
    {"help", F_BOOL, O(help), "", "this help"},
    {"version", F_BOOL, O(version), "", "print the version"},
};

void wt_opts_usage(FILE *f)
{
    fprintf(f, "usage: sluice-watcher --source kubernetes|files [flags]\n\nflags:\n");
    for (size_t i = 0; i < SL_ARRAY_LEN(flags); i++) {
        char left[80];
        snprintf(left, sizeof(left), "--%s%s%s", flags[i].name, flags[i].kind == F_BOOL ? "" : " ",
                 flags[i].arg);
        fprintf(f, "  %-42s %s\n", left, flags[i].help);
    }
}

static int fail(char *err, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int fail(char *err, size_t cap, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, cap, fmt, ap);
    va_end(ap);
    return -1;
}

static void set_str(char **dst, const char *v)
{
    free(*dst);
    *dst = sl_xstrdup(v);
}

static int set_flag(wt_opts_t *o, const flag_t *f, const char *v, char *err, size_t cap)
{
    void *dst = (char *)o + f->off;
    switch (f->kind) {
    case F_STR:
        set_str(dst, v);
        return 0;
    case F_BOOL:
        if (!strcasecmp(v, "true") || !strcmp(v, "1"))
            *(bool *)dst = true;
        else if (!strcasecmp(v, "false") || !strcmp(v, "0"))
            *(bool *)dst = false;
        else
            return fail(err, cap, "--%s: expected true or false, got \"%s\"", f->name, v);
        return 0;
    case F_DUR: {
        uint64_t ms;
        if (sl__parse_duration_ms(v, &ms) != 0)
            return fail(err, cap, "--%s: \"%s\" is not a duration (e.g. 250ms, 5s, 1m)", f->name,
                        v);
        *(uint64_t *)dst = ms;
        return 0;
    }
    case F_SOURCE:
        if (!strcmp(v, "kubernetes"))
            *(wt_source_t *)dst = WT_SOURCE_KUBERNETES;
        else if (!strcmp(v, "files"))
            *(wt_source_t *)dst = WT_SOURCE_FILES;
        else
            return fail(err, cap, "--source: expected kubernetes or files, got \"%s\"", v);
        return 0;
    }
    return -1;
}

static bool dns_name(const char *s, size_t max, bool dots)
{
    size_t n = strlen(s);
    if (!n || n > max || s[0] == '-' || s[n - 1] == '-')
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '-' ||
              (dots && s[i] == '.')))
            return false;
    return true;
}

static int check_ns_name(const char *flag, const char *v, char *err, size_t cap)
{
    const char *slash = v ? strchr(v, '/') : NULL;
    if (!v)
        return 0;
    char ns[64];
    if (!slash || (size_t)(slash - v) >= sizeof(ns))
        return fail(err, cap, "--%s: expected NAMESPACE/NAME, got \"%s\"", flag, v);
    memcpy(ns, v, (size_t)(slash - v));
    ns[slash - v] = '\0';
    if (!dns_name(ns, 63, false) || !dns_name(slash + 1, 253, true))
        return fail(err, cap, "--%s: \"%s\" is not a valid NAMESPACE/NAME", flag, v);
    return 0;
}

static int check_url(const char *flag, const char *v, char *err, size_t cap)
{
    if (v && strncmp(v, "http://", 7) != 0 && strncmp(v, "https://", 8) != 0)
        return fail(err, cap, "--%s: expected an http:// or https:// URL, got \"%s\"", flag, v);
    if (v && strpbrk(v, " \t\r\n"))
        return fail(err, cap, "--%s: a URL has no spaces", flag);
    return 0;
}

static int check(wt_opts_t *o, char *err, size_t cap)
{
    if (o->source == WT_SOURCE_FILES && !o->manifests)
        return fail(err, cap, "--source files needs --manifests DIR");
    if (o->source == WT_SOURCE_KUBERNETES && o->manifests)
        return fail(err, cap, "--manifests goes with --source files");
    if (o->push && o->output)
        return fail(err, cap, "--push and --output exclude each other");
    if (!o->output && !o->push)
        o->push = sl_xstrdup("http://127.0.0.1:10254/config");
    if (check_url("push", o->push, err, cap) || check_url("api-server", o->api_server, err, cap))
        return -1;
    if (check_ns_name("publish-service", o->publish_service, err, cap) ||
        check_ns_name("default-ssl-certificate", o->default_ssl_certificate, err, cap) ||
        check_ns_name("default-backend-service", o->default_backend_service, err, cap))
        return -1;
    if (o->watch_namespace && !dns_name(o->watch_namespace, 63, false))
        return fail(err, cap, "--watch-namespace: \"%s\" is not a namespace name",
                    o->watch_namespace);
    if (o->election_namespace && !dns_name(o->election_namespace, 63, false))
        return fail(err, cap, "--election-namespace: \"%s\" is not a namespace name",
                    o->election_namespace);
    if (!dns_name(o->election_id, 253, true))
        return fail(err, cap, "--election-id: \"%s\" is not a valid Lease name", o->election_id);
    if (!*o->ingress_class || !*o->controller_class)
        return fail(err, cap, "--ingress-class and --controller-class cannot be empty");
    if (o->healthz_listen && (!*o->healthz_listen || !strcmp(o->healthz_listen, "off"))) {
        free(o->healthz_listen);
        o->healthz_listen = NULL;
    }
    struct sockaddr_storage ss;
    if (o->healthz_listen && wt_parse_hostport(o->healthz_listen, &ss) != 0)
        return fail(err, cap, "--healthz-listen: expected IP:PORT or off, got \"%s\"",
                    o->healthz_listen);
    if (o->debounce_ms > 60000)
        return fail(err, cap, "--debounce: at most 1m");
    if (!o->retry_period_ms || o->renew_deadline_ms <= o->retry_period_ms ||
        o->lease_duration_ms <= o->renew_deadline_ms)
        return fail(err, cap,
                    "election timing: need lease duration > renew deadline > retry "
                    "period > 0");
    if (o->sync_check_ms < 100)
        return fail(err, cap, "--sync-check-period: at least 100ms");
    return 0;
}

int wt_opts_parse(wt_opts_t *o, int argc, char **argv, char *err, size_t cap)
{
    memset(o, 0, sizeof(*o));
    o->source = WT_SOURCE_KUBERNETES;
    o->controller_class = sl_xstrdup("sluice.io/ingress-controller");
    o->ingress_class = sl_xstrdup("sluice");
    o->update_status = true;
    o->tls_certificates = true;
    o->election_id = sl_xstrdup("sluice-leader");
    o->debounce_ms = 100;
    o->healthz_listen = sl_xstrdup("127.0.0.1:10255");
    o->lease_duration_ms = 15000;
    o->renew_deadline_ms = 10000;
    o->retry_period_ms = 2000;
    o->sync_check_ms = 5000;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h"))
            a = "--help";
        if (strncmp(a, "--", 2) != 0)
            return fail(err, cap, "unexpected argument \"%s\"", a);
        const char *name = a + 2, *eq = strchr(name, '=');
        size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
        const flag_t *f = NULL;
        for (size_t k = 0; k < SL_ARRAY_LEN(flags); k++)
            if (strlen(flags[k].name) == nlen && !strncmp(flags[k].name, name, nlen))
                f = &flags[k];
        if (!f)
            return fail(err, cap, "unknown flag --%.*s (see --help)", (int)nlen, name);
        const char *v = eq ? eq + 1 : NULL;
        if (!v && f->kind == F_BOOL)
            v = "true";
        if (!v) {
            if (i + 1 >= argc)
                return fail(err, cap, "--%s needs a value", f->name);
            v = argv[++i];
        }
        if (set_flag(o, f, v, err, cap) != 0)
            return -1;
    }
    if (o->help || o->version)
        return 0;
    return check(o, err, cap);
}

void wt_opts_free(wt_opts_t *o)
{
    for (size_t i = 0; i < SL_ARRAY_LEN(flags); i++)
        if (flags[i].kind == F_STR)
            free(*(char **)((char *)o + flags[i].off));
    memset(o, 0, sizeof(*o));
}
