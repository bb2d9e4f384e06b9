/* The files source: the objects of the YAML/JSON manifests in a directory (*.yaml, *.yml,
 * *.json; hidden and editor backup files ignored), read again when the directory changes
 * (inotify through uv_fs_event, plus a periodic check of sizes and modification times). A file
 * that does not parse is reported and its previous good contents stay in use. */
#ifndef WT_FILES_H
#define WT_FILES_H

#include <uv.h>

#include "objects.h"
#include "sluice/error.h"

typedef struct wt_files wt_files_t;

/* on_change runs after the stores were rebuilt from the files. */
wt_files_t *wt_files_new(uv_loop_t *loop, const char *dir, wt_objects_t *objs,
                         void (*on_change)(void *arg), void *arg);
/* Reads the directory once and starts watching it. */
int wt_files_start(wt_files_t *f, sl_error_t *err);
/* Re-reads everything now (SIGHUP). */
void wt_files_rescan(wt_files_t *f);
void wt_files_free(wt_files_t *f);

#endif
