/* Config trees: YAML or JSON text becomes one cJSON tree, read by typed accessors that know
 * the key path of every value so errors can name it (`routes[2].match.path_type: ...`). */
#ifndef SL_UTIL_CFG_H
#define SL_UTIL_CFG_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sluice/error.h"

enum sl_cfg_format { SL_CFG_AUTO, SL_CFG_YAML, SL_CFG_JSON };

#define SL_CFG_PATH_MAX 256

/* Parses text into a tree. YAML plain scalars are typed by the YAML 1.2 core schema (null,
 * booleans, integers, floats); quoted scalars are strings. Duplicate keys, several documents
 * and more than max_nodes nodes (alias expansion included) are errors. */
int sl__cfg_parse(const char *text, size_t len, enum sl_cfg_format fmt, size_t max_nodes,
                  cJSON **out, sl_error_t *err);
/* Reads and parses a file (format from the extension, else sniffed). */
int sl__cfg_load_file(const char *path, cJSON **out, sl_error_t *err);

/* Writes parent + "." + key (or parent + "[i]") into dst. */
void sl__cfg_path_key(char *dst, size_t cap, const char *parent, const char *key);
void sl__cfg_path_index(char *dst, size_t cap, const char *parent, size_t index);

/* "string", "integer", "mapping", ... for messages. */
const char *sl__cfg_type_name(const cJSON *v);

/* Errors unless obj is a mapping whose keys are all in known (NULL-terminated). The message
 * for an unknown key suggests the closest known one. */
int sl__cfg_expect_object(const cJSON *obj, const char *path, sl_error_t *err);
int sl__cfg_check_keys(const cJSON *obj, const char *path, const char *const *known,
                       sl_error_t *err);

/* Typed getters: when key is absent (or null) they leave *out unchanged and return 0. */
int sl__cfg_get_bool(const cJSON *obj, const char *path, const char *key, bool *out,
                     sl_error_t *err);
int sl__cfg_get_int(const cJSON *obj, const char *path, const char *key, long min, long max,
                    long *out, sl_error_t *err);
/* Replaces *out with a malloc'd copy (freeing the old one). allow_empty false rejects "". */
int sl__cfg_get_str(const cJSON *obj, const char *path, const char *key, bool allow_empty,
                    char **out, sl_error_t *err);
/* The same checks; *out points into the tree (valid as long as obj). */
int sl__cfg_get_strv(const cJSON *obj, const char *path, const char *key, bool allow_empty,
                     const char **out, sl_error_t *err);
/* "250ms", "5s", "1m", "1h" (a bare integer means seconds) -> milliseconds. */
int sl__cfg_get_duration_ms(const cJSON *obj, const char *path, const char *key, uint64_t *out_ms,
                            sl_error_t *err);
/* 1024, "8k", "1m", "1g" -> bytes. */
int sl__cfg_get_size(const cJSON *obj, const char *path, const char *key, size_t *out,
                     sl_error_t *err);
/* A list of non-empty strings. *out is a malloc'd array of malloc'd strings. */
int sl__cfg_get_str_list(const cJSON *obj, const char *path, const char *key, char ***out,
                         size_t *n_out, sl_error_t *err);
void sl__cfg_free_str_list(char **list, size_t n);

/* Parsers behind the getters, usable on raw strings. Return 0 or -1. */
int sl__parse_duration_ms(const char *s, uint64_t *out_ms);
int sl__parse_size(const char *s, size_t *out);

#endif
