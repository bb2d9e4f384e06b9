/* Translation of SPEC §6: our Ingresses, oldest first, claim host+path pairs; each claim becomes
 * a route. The gateway's router already ranks routes the way the Ingress spec ranks paths
 * (exact host > one-label wildcard > no host; Exact > longest Prefix by path elements), so a
 * claim maps to one route of the same host, path and type. Where the Ingress semantics differ
 * from the router's, extra routes make them explicit: every host gets a catch-all "/" route
 * (its default backend, or 404), so a request for a known host never falls through to the
 * wildcard or host-less routes of other Ingresses. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "translate_impl.h"
#include "util/mem.h"

#define CLASS_DEFAULT_ANNOTATION "ingressclass.kubernetes.io/is-default-class"
#define CLASS_LEGACY_ANNOTATION  "kubernetes.io/ingress.class"
#define MAX_PATH                 2048

void wt_tr_opts_init(wt_tr_opts_t *o)
{
    memset(o, 0, sizeof(*o));
    o->controller_class = "sluice.io/ingress-controller";
    o->ingress_class = "sluice";
}

/* ---- validation ---------------------------------------------------------------------------- */

bool wt_valid_host(const char *h, bool allow_wildcard)
{
    size_t n = strlen(h);
    if (allow_wildcard && n > 2 && h[0] == '*' && h[1] == '.') {
        h += 2;
        n -= 2;
    }
    if (!n || n > 253)
        return false;
    size_t label = 0;
    for (size_t i = 0; i <= n; i++) {
        char c = h[i];
        if (c == '.' || c == '\0') {
            if (label == 0 || label > 63 || h[i - 1] == '-')
                return false;
            label = 0;
            continue;
        }
        bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
        if (!alnum && !(c == '-' && label > 0))
            return false;
        label++;
    }
    return true;
}

bool wt_valid_path(const char *p, bool prefix)
{
    static const char *const bad_seq[] = {"//", "/./", "/../", "%2f", "%2F", NULL};
    size_t n = strlen(p);
    if (!n || n > MAX_PATH || p[0] != '/')
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c <= 0x20 || c >= 0x7f || c == '?' || c == '#')
            return false;
    }
    for (const char *const *s = bad_seq; *s; s++)
        if (strstr(p, *s))
            return false;
    if ((n >= 3 && !strcmp(p + n - 3, "/..")) || (n >= 2 && !strcmp(p + n - 2, "/.")))
        return false;
    (void)prefix;
    return true;
}

static bool valid_name(const char *s, size_t max, bool dots)
{
    size_t n = s ? strlen(s) : 0;
    if (!n || n > max)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || (dots && c == '.')))
            return false;
    }
    return s[0] != '-' && s[n - 1] != '-';
}

/* ---- class selection ----------------------------------------------------------------------- */

static bool class_is_ours(const wt_objects_t *in, const wt_tr_opts_t *o, const char *name)
{
    const wt_class_t *ic = wt_store_get(&in->kinds[WT_INGRESSCLASS], name);
    if (ic)
        return ic->controller && !strcmp(ic->controller, o->controller_class);
    return !strcmp(name, o->ingress_class);
}

static bool default_class_is_ours(const wt_objects_t *in, const wt_tr_opts_t *o)
{
    const wt_store_t *s = &in->kinds[WT_INGRESSCLASS];
    WT_STORE_FOREACH(s, e)
    {
        const wt_class_t *c = e->obj;
        if (c->is_default && c->controller && !strcmp(c->controller, o->controller_class))
            return true;
    }
    return false;
}

static bool is_ours(const wt_objects_t *in, const wt_tr_opts_t *o, const wt_ingress_t *ing,
                    bool default_ours)
{
    const char *cls = ing->class_name ? ing->class_name : ing->legacy_class;
    if (cls)
        return *cls && class_is_ours(in, o, cls);
    return o->watch_without_class || default_ours;
}

bool wt_ingress_is_ours(const wt_objects_t *in, const wt_tr_opts_t *o, const wt_ingress_t *ing)
{
    return is_ours(in, o, ing, default_class_is_ours(in, o));
}

/* ---- Ingresses, claims, hosts -------------------------------------------------------------- */

typedef struct ing {
    const wt_ingress_t *obj;
    const char *ns, *name, *created;
    const char *who; /* "Ingress ns/name" */
    const char *key; /* "ns/name" (inside who) */
    wt_settings_t settings;
} ing_t;

typedef struct claim {
    ing_t *ing;
    const char *host; /* "" for none */
    const char *path;
    bool exact;
    const wt_backend_t *backend;
} claim_t;

typedef struct host {
    const char *host;
    ing_t *dflt;   /* the oldest Ingress with rules for this host and a spec.defaultBackend */
    bool has_root; /* a Prefix "/" claim */
} host_t;

typedef struct walk {
    wt_tr_t *t;
    ing_t *ings;
    size_t n_ings;
    wt_index_t claim_index; /* claim key -> claim_t* */
    claim_t **claims;
    size_t n_claims, cap_claims;
    wt_index_t host_index; /* host -> host_t* */
    host_t **hosts;
    size_t n_hosts, cap_hosts;
    ing_t *global_dflt; /* the oldest Ingress with a spec.defaultBackend */
} walk_t;

static int cmp_ing(const void *a, const void *b)
{
    const ing_t *x = a, *y = b;
    int c = strcmp(x->created, y->created);
    return c ? c : strcmp(x->key, y->key);
}

/* The host's entry (h must live in the scratch pool). */
static host_t *host_at(walk_t *w, const char *h)
{
    void **slot = wt_index_put(&w->host_index, h, strlen(h));
    host_t *e = *slot;
    if (e)
        return e;
    e = wt_pool_alloc(&w->t->pool, sizeof(*e));
    memset(e, 0, sizeof(*e));
    e->host = h;
    *slot = e;
    if (w->n_hosts == w->cap_hosts) {
        w->cap_hosts = w->cap_hosts ? w->cap_hosts * 2 : 16;
        w->hosts = sl_xrealloc(w->hosts, w->cap_hosts * sizeof(*w->hosts));
    }
    w->hosts[w->n_hosts++] = e;
    return e;
}

/* "/a/b/" and "/a/b" are the same Prefix claim (the router strips trailing slashes too). */
static size_t norm_len(const char *p, bool exact)
{
    size_t n = strlen(p);
    while (!exact && n > 1 && p[n - 1] == '/')
        n--;
    return n;
}

static void claim(walk_t *w, ing_t *ing, const char *host, const char *path, bool exact,
                  const wt_backend_t *backend)
{
    char q[96];
    char *key =
        wt_tr_printf(w->t, "%s\n%c%.*s", host, exact ? 'E' : 'P', (int)norm_len(path, exact), path);
    void **slot = wt_index_put(&w->claim_index, key, strlen(key));
    if (*slot) {
        claim_t *c = *slot;
        if (c->ing == ing)
            wt_diag(w->t->d, SL_LOG_WARN,
                    "%s: host %s path %s (%s) appears twice; the first is "
                    "used",
                    ing->who, *host ? host : "(any)", wt_quote(q, sizeof(q), path),
                    exact ? "Exact" : "Prefix");
        else
            wt_diag(w->t->d, SL_LOG_WARN,
                    "%s: host %s path %s (%s) is already claimed by "
                    "Ingress %s (older); ignored",
                    ing->who, *host ? host : "(any)", wt_quote(q, sizeof(q), path),
                    exact ? "Exact" : "Prefix", c->ing->key);
        return;
    }
    claim_t *c = wt_pool_alloc(&w->t->pool, sizeof(*c));
    c->ing = ing;
    c->host = host;
    c->path = path;
    c->exact = exact;
    c->backend = backend;
    *slot = c;
    if (w->n_claims == w->cap_claims) {
        w->cap_claims = w->cap_claims ? w->cap_claims * 2 : 64;
        w->claims = sl_xrealloc(w->claims, w->cap_claims * sizeof(*w->claims));
    }
    w->claims[w->n_claims++] = c;
    if (!exact && norm_len(path, false) == 1)
        host_at(w, host)->has_root = true;
}

static void walk_path(walk_t *w, ing_t *ing, const char *host, const wt_ipath_t *p)
{
    char q[96];
    const char *type = p->type;
    const char *path = p->path;
    bool exact;
    if (!type) {
        wt_diag(w->t->d, SL_LOG_WARN, "%s: host %s: a path has no pathType; skipped", ing->who,
                *host ? host : "(any)");
        return;
    }
    if (!strcmp(type, "Exact"))
        exact = true;
    else if (!strcmp(type, "Prefix") || !strcmp(type, "ImplementationSpecific"))
        exact = false;
    else {
        wt_diag(w->t->d, SL_LOG_WARN,
                "%s: host %s: pathType %s is not Exact, Prefix or "
                "ImplementationSpecific; skipped",
                ing->who, *host ? host : "(any)", wt_quote(q, sizeof(q), type));
        return;
    }
    if (!path && !strcmp(type, "ImplementationSpecific"))
        path = "/";
    if (!path || !wt_valid_path(path, !exact)) {
        wt_diag(w->t->d, SL_LOG_WARN,
                "%s: host %s: path %s is not a valid absolute path; "
                "skipped",
                ing->who, *host ? host : "(any)",
                wt_quote(q, sizeof(q), path ? path : "(missing)"));
        return;
    }
    if (p->backend.kind == WT_BACKEND_NONE) {
        wt_diag(w->t->d, SL_LOG_WARN, "%s: host %s path %s has no backend; skipped", ing->who,
                *host ? host : "(any)", wt_quote(q, sizeof(q), path));
        return;
    }
    claim(w, ing, host, path, exact, &p->backend);
}

static void walk_ingress(walk_t *w, ing_t *ing)
{
    char q[96];
    const wt_ingress_t *g = ing->obj;
    bool dflt = g->dflt.kind != WT_BACKEND_NONE;
    if (dflt && !w->global_dflt)
        w->global_dflt = ing;
    if (!g->n_rules && !dflt)
        wt_diag(w->t->d, SL_LOG_WARN, "%s: no rules and no default backend; nothing to serve",
                ing->who);
    for (size_t r = 0; r < g->n_rules; r++) {
        const wt_rule_t *rule = &g->rules[r];
        char *host = "";
        if (rule->has_host) {
            const char *h = rule->host;
            if (!h || !wt_valid_host(h, true)) {
                wt_diag(w->t->d, SL_LOG_WARN,
                        "%s: host %s is not a valid host name; rule "
                        "skipped",
                        ing->who, wt_quote(q, sizeof(q), h ? h : "(not a string)"));
                continue;
            }
            host = wt_pool_str(&w->t->pool, h);
            for (size_t i = 0; host[i]; i++)
                if (host[i] >= 'A' && host[i] <= 'Z')
                    host[i] = (char)(host[i] + 32);
        }
        host_t *he = host_at(w, host);
        if (*host && dflt && !he->dflt)
            he->dflt = ing;
        for (size_t k = 0; k < rule->n_paths; k++)
            walk_path(w, ing, host, &rule->paths[k]);
    }
}

/* Our Ingresses, valid names only, oldest first (then namespace/name). */
static size_t collect_ingresses(wt_tr_t *t, ing_t **out)
{
    const wt_store_t *s = &t->in->kinds[WT_INGRESS];
    bool default_ours = default_class_is_ours(t->in, t->o);
    ing_t *v = sl_xcalloc(s->n ? s->n : 1, sizeof(*v));
    size_t n = 0;
    char q[96];
    WT_STORE_FOREACH(s, e)
    {
        const wt_ingress_t *obj = e->obj;
        if (!is_ours(t->in, t->o, obj, default_ours))
            continue;
        ing_t *g = &v[n];
        g->obj = obj;
        g->ns = obj->ns ? obj->ns : "default";
        g->name = obj->name;
        if (!valid_name(g->ns, 63, false) || !valid_name(g->name, 253, true)) {
            wt_diag(t->d, SL_LOG_WARN, "Ingress %s: not a valid namespace/name; skipped",
                    wt_quote(q, sizeof(q), e->key));
            continue;
        }
        g->created = obj->created ? obj->created : "";
        g->who = wt_tr_printf(t, "Ingress %s/%s", g->ns, g->name);
        g->key = g->who + 8;
        wt_settings_parse(obj, g->who, &g->settings, t->d);
        n++;
    }
    if (n > 1)
        qsort(v, n, sizeof(*v), cmp_ing);
    *out = v;
    return n;
}

/* ---- routes ------------------------------------------------------------------------------ */

/* Writes a route as canonical JSON (keys in sorted order: match, name, respond, timeouts,
 * upstream) and adds it to the output. */
static void route_out(wt_tr_t *t, const char *name, const char *host, const char *path, bool exact,
                      wt_target_t to, const wt_settings_t *s)
{
    char unique[2700];
    snprintf(unique, sizeof(unique), "%s", name);
    for (int i = 2; wt_index_get(&t->route_names, unique, strlen(unique)); i++)
        snprintf(unique, sizeof(unique), "%s~%d", name, i);
    wt_buf_t *b = &t->buf;
    b->len = 0;
    wt_buf_puts(b, "{\"match\":{");
    if (*host) {
        wt_buf_puts(b, "\"host\":");
        wt_buf_str(b, host);
        wt_buf_put(b, ",", 1);
    }
    wt_buf_puts(b, "\"path\":");
    wt_buf_str(b, path);
    wt_buf_puts(b, exact ? ",\"path_type\":\"exact\"},\"name\":"
                         : ",\"path_type\":\"prefix\"},\"name\":");
    wt_buf_str(b, unique);
    if (!to.upstream) {
        wt_buf_puts(b, ",\"respond\":");
        wt_respond_text(b, to.status, to.why);
    }
    if (s && (*s->connect || *s->read || *s->write)) {
        const char *sep = "";
        wt_buf_puts(b, ",\"timeouts\":{");
        if (*s->connect) {
            wt_buf_puts(b, "\"connect\":");
            wt_buf_str(b, s->connect);
            sep = ",";
        }
        if (*s->read) {
            wt_buf_puts(b, sep);
            wt_buf_puts(b, "\"read\":");
            wt_buf_str(b, s->read);
            sep = ",";
        }
        if (*s->write) {
            wt_buf_puts(b, sep);
            wt_buf_puts(b, "\"write\":");
            wt_buf_str(b, s->write);
        }
        wt_buf_put(b, "}", 1);
    }
    if (to.upstream) {
        wt_buf_puts(b, ",\"upstream\":");
        wt_buf_str(b, to.upstream);
    }
    wt_buf_put(b, "}", 1);
    wt_item_t *it = wt_items_add(t, &t->out->routes, unique, b->p);
    it->upstream = to.upstream; /* resolved below, once the upstream list is final */
    *wt_index_put(&t->route_names, it->name, strlen(it->name)) = it;
}

static void emit_claim(wt_tr_t *t, const claim_t *c)
{
    char name[2600];
    snprintf(name, sizeof(name), "%s/%s%s%s", c->ing->key, *c->host ? c->host : "_", c->path,
             c->exact ? "#exact" : "");
    wt_target_t to = wt_tr_target(t, c->ing->ns, c->backend, &c->ing->settings, c->ing->who);
    route_out(t, name, c->host, c->path, c->exact, to, &c->ing->settings);
}

/* The --default-backend-service (its first port). */
static wt_target_t default_service(wt_tr_t *t)
{
    const char *key = t->o->default_backend;
    const char *slash = strchr(key, '/');
    const wt_service_t *svc = wt_store_get(&t->in->kinds[WT_SERVICE], key);
    int port = svc && svc->n_ports ? svc->ports[0].port : 0;
    if (!slash || !svc || port <= 0) {
        wt_diag(t->d, SL_LOG_WARN,
                "--default-backend-service: Service %s %s; requests for it "
                "answer 503",
                key, svc ? "has no port" : "not found");
        wt_target_t r = {.status = 503, .why = "default backend service not available"};
        return r;
    }
    char ns[64];
    snprintf(ns, sizeof(ns), "%.*s", (int)(slash - key), key);
    wt_backend_t b = {.kind = WT_BACKEND_SERVICE, .service = slash + 1, .port_number = port};
    wt_settings_t none;
    memset(&none, 0, sizeof(none));
    none.vhost = "";
    return wt_tr_target(t, ns, &b, &none, "--default-backend-service");
}

static void emit_catch_all(wt_tr_t *t, const host_t *h, ing_t *dflt)
{
    char name[300];
    snprintf(name, sizeof(name), "default-backend:%s", *h->host ? h->host : "_");
    if (dflt) {
        wt_target_t to = wt_tr_target(t, dflt->ns, &dflt->obj->dflt, &dflt->settings, dflt->who);
        route_out(t, name, h->host, "/", false, to, &dflt->settings);
    } else if (t->o->default_backend) {
        route_out(t, name, h->host, "/", false, default_service(t), NULL);
    } else {
        wt_target_t to = {.status = 404, .why = "no route"};
        route_out(t, name, h->host, "/", false, to, NULL);
    }
}

static int cmp_item(const void *a, const void *b)
{
    return strcmp(((const wt_item_t *)a)->name, ((const wt_item_t *)b)->name);
}

/* Sorts both lists and points each route at its upstream's name in the final list. */
static void finish_items(wt_config_t *c)
{
    if (c->upstreams.n > 1)
        qsort(c->upstreams.v, c->upstreams.n, sizeof(wt_item_t), cmp_item);
    if (c->routes.n > 1)
        qsort(c->routes.v, c->routes.n, sizeof(wt_item_t), cmp_item);
    for (size_t i = 0; i < c->routes.n; i++) {
        wt_item_t *r = &c->routes.v[i];
        if (!r->upstream)
            continue;
        wt_item_t key = {.name = (char *)r->upstream};
        wt_item_t *u = c->upstreams.n ? bsearch(&key, c->upstreams.v, c->upstreams.n,
                                                sizeof(wt_item_t), cmp_item)
                                      : NULL;
        r->upstream = u ? u->name : NULL;
    }
}

void wt_config_free(wt_config_t *c)
{
    if (!c)
        return;
    free(c->upstreams.v);
    free(c->routes.v);
    free(c->certificates);
    wt_pool_free(&c->pool);
    free(c);
}

cJSON *wt_config_json(const wt_config_t *c)
{
    cJSON *doc = cJSON_CreateObject();
    cJSON *u = cJSON_AddObjectToObject(doc, "upstreams");
    for (size_t i = 0; i < c->upstreams.n; i++)
        cJSON_AddItemToObject(u, c->upstreams.v[i].name, cJSON_Parse(c->upstreams.v[i].text));
    cJSON *r = cJSON_AddArrayToObject(doc, "routes");
    for (size_t i = 0; i < c->routes.n; i++)
        cJSON_AddItemToArray(r, cJSON_Parse(c->routes.v[i].text));
    if (c->certificates)
        cJSON_AddItemToObject(doc, "certificates", cJSON_Parse(c->certificates));
    return doc;
}

static void walk_free(walk_t *w)
{
    free(w->claims);
    free(w->hosts);
    wt_index_free(&w->claim_index);
    wt_index_free(&w->host_index);
    free(w->ings);
}

wt_config_t *wt_translate(const wt_objects_t *in, const wt_tr_opts_t *o, wt_diags_t *d)
{
    wt_tr_t t = {.in = in, .o = o, .d = d};
    t.out = sl_xcalloc(1, sizeof(*t.out));
    wt_buf_init(&t.buf);
    wt_index_init(&t.route_names);
    wt_tr_backends_init(&t);

    walk_t w = {.t = &t};
    wt_index_init(&w.claim_index);
    wt_index_init(&w.host_index);
    w.n_ings = collect_ingresses(&t, &w.ings);
    for (size_t i = 0; i < w.n_ings; i++)
        walk_ingress(&w, &w.ings[i]);
    for (size_t i = 0; i < w.n_claims; i++)
        emit_claim(&t, w.claims[i]);
    for (size_t i = 0; i < w.n_hosts; i++)
        if (*w.hosts[i]->host && !w.hosts[i]->has_root)
            emit_catch_all(&t, w.hosts[i], w.hosts[i]->dflt);
    host_t *any = wt_index_get(&w.host_index, "", 0);
    if ((!any || !any->has_root) && (w.global_dflt || o->default_backend)) {
        host_t none = {.host = ""};
        emit_catch_all(&t, &none, w.global_dflt);
    }
    if (o->tls_certificates) {
        const wt_ingress_t **objs = sl_xmalloc((w.n_ings ? w.n_ings : 1) * sizeof(*objs));
        for (size_t i = 0; i < w.n_ings; i++)
            objs[i] = w.ings[i].obj;
        t.out->certificates = wt_tr_certificates(&t, objs, w.n_ings);
        free(objs);
    }
    finish_items(t.out);
    walk_free(&w);
    wt_tr_backends_free(&t);
    wt_index_free(&t.route_names);
    wt_buf_free(&t.buf);
    wt_pool_free(&t.pool);
    return t.out;
}
