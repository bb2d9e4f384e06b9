/* Kubernetes manifests as text: multi-document YAML, a JSON object, a JSON array, `kind: List`.
 * Used by the files source and by the golden tests. */
#ifndef WT_MANIFEST_H
#define WT_MANIFEST_H

#include <cjson/cJSON.h>
#include <stddef.h>

#include "diag.h"
#include "objects.h"
#include "sluice/error.h"

/* Parses every document of text into a flat JSON array of objects (List items expanded,
 * empty documents dropped). All or nothing: on a syntax error in any document returns
 * SL_ECONFIG with "document N: line L column C: ..." in err and *out NULL. */
int wt_manifest_parse(const char *text, size_t len, cJSON **out, sl_error_t *err);
/* Reads and parses a file (at most 64 MiB). */
int wt_manifest_load(const char *path, cJSON **out, sl_error_t *err);

/* Adds the objects of a parsed manifest (an array; taken) to the stores: objects of a kind the
 * watcher reads are pruned and stored under their key; an object without a name, of an
 * unknown apiVersion, or not a mapping is reported in d (naming origin) and skipped. Returns
 * how many were added. */
size_t wt_manifest_add(wt_objects_t *o, cJSON *objects, const char *origin, wt_diags_t *d);

#endif
