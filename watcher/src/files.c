/* Manifests in a directory. Each file keeps its last good parse; after any change the stores
 * are rebuilt from all files in name order (a later file's object of the same key wins). */
#define SL_LOG_TAG "files"
#include "files.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "diag.h"
#include "manifest.h"
#include "sluice/log.h"
#include "util/mem.h"

#define SETTLE_MS 50   /* editors write in steps: wait for the burst to end */
#define CHECK_MS  2000 /* the periodic check, for file systems without inotify */

typedef struct file {
    char *name;
    struct stat st;
    cJSON *objects; /* last good parse (array), or NULL */
    bool seen;      /* still in the directory at the last scan */
} file_t;

struct wt_files {
    uv_loop_t *loop;
    char *dir;
    wt_objects_t *objs;
    void (*on_change)(void *);
    void *arg;
    file_t *files;
    size_t n, cap;
    uv_fs_event_t ev;
    uv_timer_t settle, check;
    bool watching;
    int open_handles;
    wt_diags_t last_diags;
};

static bool wanted(const char *name)
{
    size_t n = strlen(name);
    if (name[0] == '.' || name[0] == '#' || name[n - 1] == '~')
        return false;
    return (n > 5 && !strcmp(name + n - 5, ".yaml")) || (n > 4 && !strcmp(name + n - 4, ".yml")) ||
           (n > 5 && !strcmp(name + n - 5, ".json"));
}

static file_t *find(wt_files_t *f, const char *name)
{
    for (size_t i = 0; i < f->n; i++)
        if (!strcmp(f->files[i].name, name))
            return &f->files[i];
    return NULL;
}

static bool same_stat(const struct stat *a, const struct stat *b)
{
    return a->st_ino == b->st_ino && a->st_size == b->st_size &&
           a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec;
}

/* Parses one file; false when it is unchanged. */
static bool load_file(wt_files_t *f, file_t *fl, const struct stat *st)
{
    if (fl->st.st_ino && same_stat(&fl->st, st))
        return false; /* unchanged since the last attempt, good or bad */
    bool had = fl->objects != NULL;
    fl->st = *st;
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", f->dir, fl->name);
    cJSON *objs = NULL;
    sl_error_t err = {0};
    if (wt_manifest_load(path, &objs, &err) != 0) {
        if (fl->objects)
            SL_ERROR("%s: %s; keeping its previous %d objects", path, err.msg,
                     cJSON_GetArraySize(fl->objects));
        else
            SL_ERROR("%s: %s; the file is ignored until it is fixed", path, err.msg);
        return false;
    }
    SL_INFO("%s: %s, %d objects", path, had ? "changed" : "read", cJSON_GetArraySize(objs));
    cJSON_Delete(fl->objects);
    fl->objects = objs;
    return true;
}

static int cmp_files(const void *a, const void *b)
{
    return strcmp(((const file_t *)a)->name, ((const file_t *)b)->name);
}

static void rebuild(wt_files_t *f)
{
    for (int k = 0; k < WT_NKINDS; k++)
        wt_store_free(&f->objs->kinds[k]);
    if (f->n > 1)
        qsort(f->files, f->n, sizeof(*f->files), cmp_files);
    wt_diags_t d;
    wt_diags_init(&d);
    for (size_t i = 0; i < f->n; i++)
        if (f->files[i].objects)
            wt_manifest_add(f->objs, cJSON_Duplicate(f->files[i].objects, 1), f->files[i].name, &d);
    wt_diags_log_new(&f->last_diags, &d, SL_LOG_TAG);
    wt_diags_free(&f->last_diags);
    f->last_diags = d;
}

/* Reads what changed; rebuilds the stores and tells the owner when anything did. */
static void scan(wt_files_t *f)
{
    DIR *d = opendir(f->dir);
    if (!d) {
        SL_ERROR("cannot read %s: %s; keeping what was read before", f->dir, strerror(errno));
        return;
    }
    for (size_t i = 0; i < f->n; i++)
        f->files[i].seen = false;
    bool changed = false;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (!wanted(e->d_name))
            continue;
        char path[4096];
        snprintf(path, sizeof(path), "%s/%s", f->dir, e->d_name);
        struct stat st;
        if (stat(path, &st) != 0 || !S_ISREG(st.st_mode))
            continue;
        file_t *fl = find(f, e->d_name);
        if (!fl) {
            if (f->n == f->cap) {
                f->cap = f->cap ? f->cap * 2 : 8;
                f->files = sl_xrealloc(f->files, f->cap * sizeof(*f->files));
            }
            fl = &f->files[f->n++];
            memset(fl, 0, sizeof(*fl));
            fl->name = sl_xstrdup(e->d_name);
        }
        fl->seen = true;
        changed |= load_file(f, fl, &st);
    }
    closedir(d);
    for (size_t i = 0; i < f->n;) {
        if (f->files[i].seen) {
            i++;
            continue;
        }
        SL_INFO("%s/%s: removed", f->dir, f->files[i].name);
        changed |= f->files[i].objects != NULL;
        cJSON_Delete(f->files[i].objects);
        free(f->files[i].name);
        f->files[i] = f->files[--f->n];
    }
    if (changed) {
        rebuild(f);
        f->on_change(f->arg);
    }
}

static void on_settle(uv_timer_t *t)
{
    scan(t->data);
}

static void on_fs_event(uv_fs_event_t *h, const char *name, int events, int status)
{
    wt_files_t *f = h->data;
    if (status < 0) {
        SL_WARN("watching %s: %s; relying on the periodic check", f->dir, uv_strerror(status));
        return;
    }
    uv_timer_start(&f->settle, on_settle, SETTLE_MS, 0);
}

static void on_check(uv_timer_t *t)
{
    scan(t->data);
}

wt_files_t *wt_files_new(uv_loop_t *loop, const char *dir, wt_objects_t *objs,
                         void (*on_change)(void *arg), void *arg)
{
    wt_files_t *f = sl_xcalloc(1, sizeof(*f));
    f->loop = loop;
    f->dir = sl_xstrdup(dir);
    f->objs = objs;
    f->on_change = on_change;
    f->arg = arg;
    wt_diags_init(&f->last_diags);
    uv_fs_event_init(loop, &f->ev);
    uv_timer_init(loop, &f->settle);
    uv_timer_init(loop, &f->check);
    f->ev.data = f->settle.data = f->check.data = f;
    f->open_handles = 3;
    return f;
}

int wt_files_start(wt_files_t *f, sl_error_t *err)
{
    struct stat st;
    if (stat(f->dir, &st) != 0 || !S_ISDIR(st.st_mode))
        return sl_error_set(err, SL_ECONFIG, "--manifests %s: not a directory", f->dir);
    int rc = uv_fs_event_start(&f->ev, on_fs_event, f->dir, 0);
    if (rc)
        SL_WARN("cannot watch %s (%s); checking it every %d ms", f->dir, uv_strerror(rc), CHECK_MS);
    uv_timer_start(&f->check, on_check, CHECK_MS, CHECK_MS);
    SL_INFO("reading manifests from %s", f->dir);
    scan(f);
    if (!f->n)
        SL_WARN("%s holds no *.yaml, *.yml or *.json file yet", f->dir);
    return 0;
}

void wt_files_rescan(wt_files_t *f)
{
    for (size_t i = 0; i < f->n; i++)
        memset(&f->files[i].st, 0, sizeof(f->files[i].st));
    scan(f);
}

static void on_closed(uv_handle_t *h)
{
    wt_files_t *f = h->data;
    if (--f->open_handles)
        return;
    for (size_t i = 0; i < f->n; i++) {
        free(f->files[i].name);
        cJSON_Delete(f->files[i].objects);
    }
    free(f->files);
    free(f->dir);
    wt_diags_free(&f->last_diags);
    free(f);
}

void wt_files_free(wt_files_t *f)
{
    if (!f)
        return;
    uv_close((uv_handle_t *)&f->ev, on_closed);
    uv_close((uv_handle_t *)&f->settle, on_closed);
    uv_close((uv_handle_t *)&f->check, on_closed);
}
