/* Golden tests of translation: every directory under watcher/test/golden/ is one case.
 *
 *   objects/NAME.yaml  Kubernetes objects (multi-document YAML, JSON, kind: List)
 *   options.yaml       translation options (optional): controller_class, ingress_class,
 *                      watch_without_class, default_backend, default_ssl_cert,
 *                      tls_certificates
 *   expected.json      the config translation must produce (canonical JSON)
 *   diagnostics.txt    optional: substrings that must appear among the diagnostics, one a line
 *   requests.txt       optional: "HOST PATH ROUTE" lines (HOST "-" for none, ROUTE "(none)"):
 *                      the route sluice's own router picks for the request, on the config
 *
 * Every expected config must also pass the gateway's parser (gw_config_parse), and the hash
 * the watcher computes must equal the one sluice computes.
 *
 * WT_GOLDEN_UPDATE=1 build/test/unit --filter "golden/all_cases" rewrites expected.json from the
 * current output (review the diff before committing). */
#include <criterion/criterion.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../src/manifest.h"
#include "../src/render.h"
#include "../src/translate.h"
#include "gateway/gateway.h"
#include "util/arena.h"
#include "util/cfg.h"

static char *golden_dir(void)
{
    /* __FILE__ is watcher/test/test_golden.c relative to the repository root (make runs there);
     * an absolute one works as well. */
    const char *f = __FILE__;
    const char *slash = strrchr(f, '/');
    size_t n = slash ? (size_t)(slash - f) : 0;
    char *d = malloc(n + 16);
    snprintf(d, n + 16, "%.*s%sgolden", (int)n, f, n ? "/" : "");
    return d;
}

static char *read_text(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    size_t got = fread(b, 1, (size_t)n, f);
    b[got] = '\0';
    fclose(f);
    return b;
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Sorted file names of a directory (no hidden files). */
static size_t list_dir(const char *dir, char ***out)
{
    DIR *d = opendir(dir);
    size_t n = 0, cap = 16;
    char **v = malloc(cap * sizeof(*v));
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        if (n == cap)
            v = realloc(v, (cap *= 2) * sizeof(*v));
        v[n++] = strdup(e->d_name);
    }
    if (d)
        closedir(d);
    qsort(v, n, sizeof(*v), cmp_names);
    *out = v;
    return n;
}

static void free_list(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

typedef struct opts_hold {
    wt_tr_opts_t o;
    cJSON *doc;
} opts_hold_t;

static void load_options(const char *dir, opts_hold_t *h)
{
    wt_tr_opts_init(&h->o);
    h->doc = NULL;
    char path[1024];
    snprintf(path, sizeof(path), "%s/options.yaml", dir);
    char *text = read_text(path);
    if (!text)
        return;
    sl_error_t err = {0};
    cr_assert_eq(sl__cfg_parse(text, strlen(text), SL_CFG_YAML, 1000, &h->doc, &err), 0, "%s: %s",
                 path, err.msg);
    free(text);
    const cJSON *v;
    if ((v = cJSON_GetObjectItem(h->doc, "controller_class")))
        h->o.controller_class = v->valuestring;
    if ((v = cJSON_GetObjectItem(h->doc, "ingress_class")))
        h->o.ingress_class = v->valuestring;
    if ((v = cJSON_GetObjectItem(h->doc, "default_backend")))
        h->o.default_backend = v->valuestring;
    if ((v = cJSON_GetObjectItem(h->doc, "default_ssl_cert")))
        h->o.default_ssl_cert = v->valuestring;
    h->o.watch_without_class = cJSON_IsTrue(cJSON_GetObjectItem(h->doc, "watch_without_class"));
    h->o.tls_certificates = cJSON_IsTrue(cJSON_GetObjectItem(h->doc, "tls_certificates"));
}

static void load_objects(const char *dir, wt_objects_t *objs, wt_diags_t *d)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/objects", dir);
    char **files;
    size_t n = list_dir(path, &files);
    cr_assert(n > 0, "%s: no object files", path);
    for (size_t i = 0; i < n; i++) {
        char fp[1400];
        snprintf(fp, sizeof(fp), "%s/%s", path, files[i]);
        cJSON *arr = NULL;
        sl_error_t err = {0};
        cr_assert_eq(wt_manifest_load(fp, &arr, &err), 0, "%s: %s", fp, err.msg);
        wt_manifest_add(objs, arr, files[i], d);
    }
    free_list(files, n);
}

static const char *route_for(gw_config_t *c, const char *host, const char *path)
{
    static sl_arena_t arena;
    sl__arena_init(&arena);
    sl_headers_t h = {.arena = &arena};
    gw_route_t *r = gw_router_match(c->router, host ? sl_str(host) : (sl_str_t){NULL, 0},
                                    sl_str(path), sl_str("GET"), &h);
    const char *name = r ? r->name : "(none)";
    sl__arena_reset(&arena);
    return name;
}

static void check_requests(const char *dir, const char *name, gw_config_t *c)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/requests.txt", dir);
    char *text = read_text(path);
    if (!text)
        return;
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (!*line || line[0] == '#')
            continue;
        char host[256], p[1024], want[1024];
        cr_assert_eq(sscanf(line, "%255s %1023s %1023s", host, p, want), 3, "%s: bad line \"%s\"",
                     path, line);
        const char *got = route_for(c, strcmp(host, "-") ? host : NULL, p);
        cr_expect_str_eq(got, want, "%s: %s %s: routed to %s, expected %s", name, host, p, got,
                         want);
    }
    free(text);
}

static void check_diagnostics(const char *dir, const char *name, const wt_diags_t *d)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/diagnostics.txt", dir);
    char *text = read_text(path);
    if (!text)
        return;
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (!*line || line[0] == '#')
            continue;
        if (!wt_diags_find(d, line)) {
            fprintf(stderr, "%s: diagnostics were:\n", name);
            for (size_t i = 0; i < d->n; i++)
                fprintf(stderr, "  %s\n", d->items[i].msg);
        }
        cr_expect(wt_diags_find(d, line), "%s: no diagnostic containing \"%s\"", name, line);
    }
    free(text);
}

/* The expected document must be a valid gateway config with the hash the watcher computes. */
static void check_gateway_accepts(const char *name, const cJSON *doc, const char *gw_hash,
                                  const char *dir)
{
    cJSON *copy = cJSON_Duplicate(doc, 1);
    gw_config_t *c = NULL;
    sl_error_t err = {0};
    int rc = gw_config_parse(copy, &c, &err); /* takes copy */
    cr_assert_eq(rc, 0, "%s: the gateway refuses the config: %s", name, err.msg);
    cr_expect_str_eq(c->hash, gw_hash, "%s: hash differs from the gateway's", name);
    check_requests(dir, name, c);
    gw_config_release(c);
}

static void run_case(const char *root, const char *name)
{
    char dir[1024], path[1100];
    snprintf(dir, sizeof(dir), "%s/%s", root, name);
    wt_objects_t objs;
    wt_objects_init(&objs);
    wt_diags_t d;
    wt_diags_init(&d);
    opts_hold_t oh;
    load_options(dir, &oh);
    load_objects(dir, &objs, &d);
    wt_config_t *cfg = wt_translate(&objs, &oh.o, &d);
    wt_rendered_t r;
    wt_render_config(cfg, &r);
    cJSON *doc = wt_config_json(cfg);
    /* The text the watcher writes is exactly what cJSON prints for it (so sluice's hash of
     * its re-printed copy is the same). */
    cJSON *reparsed = cJSON_Parse(r.text);
    char *reprinted = cJSON_PrintUnformatted(reparsed);
    cr_expect_str_eq(reprinted, r.text, "%s: the text is not canonical", name);
    free(reprinted);
    cJSON_Delete(reparsed);

    snprintf(path, sizeof(path), "%s/expected.json", dir);
    const char *update = getenv("WT_GOLDEN_UPDATE");
    if (update && *update && strcmp(update, "0") != 0) {
        wt_rendered_t canon;
        wt_render(doc, &canon); /* sorts doc */
        wt_rendered_free(&canon);
        char *pretty = cJSON_Print(doc);
        FILE *f = fopen(path, "w");
        cr_assert(f, "cannot write %s", path);
        fprintf(f, "%s\n", pretty);
        fclose(f);
        free(pretty);
    }
    char *text = read_text(path);
    cr_assert(text, "%s: no expected.json (run with WT_GOLDEN_UPDATE=1 to create it)", name);
    cJSON *want = cJSON_Parse(text);
    cr_assert(want, "%s: expected.json is not JSON", name);
    wt_rendered_t wr;
    wt_render(want, &wr);
    if (strcmp(wr.text, r.text) != 0) {
        char *pretty = cJSON_Print(doc);
        fprintf(stderr, "== golden %s: got\n%s\n", name, pretty);
        free(pretty);
    }
    cr_expect_str_eq(r.hash, wr.hash, "golden %s: the translation differs from expected.json",
                     name);
    check_gateway_accepts(name, want, wr.gw_hash, dir);
    check_diagnostics(dir, name, &d);

    wt_rendered_free(&wr);
    wt_rendered_free(&r);
    cJSON_Delete(want);
    free(text);
    cJSON_Delete(doc);
    wt_config_free(cfg);
    cJSON_Delete(oh.doc);
    wt_diags_free(&d);
    wt_objects_free(&objs);
}

Test(golden, all_cases)
{
    char *root = golden_dir();
    char **cases;
    size_t n = list_dir(root, &cases);
    cr_assert(n >= 10, "%s: expected the golden cases there, found %zu", root, n);
    for (size_t i = 0; i < n; i++)
        run_case(root, cases[i]);
    free_list(cases, n);
    free(root);
}
