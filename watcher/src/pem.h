/* TLS Secret contents: base64 decoding and PEM validation with OpenSSL (no I/O). */
#ifndef WT_PEM_H
#define WT_PEM_H

#include <stddef.h>

/* Decodes standard base64 (as in a Secret's data); NULL when invalid. *len gets the length;
 * the result is NUL-terminated. Caller frees. */
char *wt_base64_decode(const char *in, size_t *len);

/* Checks that cert holds at least one PEM certificate (a chain may follow), key a PEM private
 * key, and that they match. Returns 0, or -1 with a reason in why. */
int wt_pem_check(const char *cert, size_t cert_len, const char *key, size_t key_len, char *why,
                 size_t why_cap);

#endif
