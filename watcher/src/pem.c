/* Base64 and PEM checks for TLS Secrets. */
#include "pem.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/mem.h"

char *wt_base64_decode(const char *in, size_t *len)
{
    size_t n = strlen(in);
    /* Secrets hold unwrapped base64; tolerate line breaks (a hand-written manifest). */
    char *clean = sl_xmalloc(n + 1);
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        if (in[i] != '\n' && in[i] != '\r' && in[i] != ' ' && in[i] != '\t')
            clean[m++] = in[i];
    clean[m] = '\0';
    if (m % 4 != 0) {
        free(clean);
        return NULL;
    }
    unsigned char *out = sl_xmalloc(m / 4 * 3 + 1);
    int got = m ? EVP_DecodeBlock(out, (const unsigned char *)clean, (int)m) : 0;
    if (got < 0) {
        free(clean);
        free(out);
        return NULL;
    }
    /* EVP_DecodeBlock counts the padding as zero bytes. */
    size_t pad = 0;
    if (m >= 1 && clean[m - 1] == '=')
        pad++;
    if (m >= 2 && clean[m - 2] == '=')
        pad++;
    free(clean);
    *len = (size_t)got - pad;
    out[*len] = '\0';
    return (char *)out;
}

static void reason(char *why, size_t cap, const char *what)
{
    unsigned long e = ERR_peek_last_error();
    char buf[256] = "";
    if (e)
        ERR_error_string_n(e, buf, sizeof(buf));
    snprintf(why, cap, "%s%s%s", what, *buf ? ": " : "", buf);
    ERR_clear_error();
}

int wt_pem_check(const char *cert, size_t cert_len, const char *key, size_t key_len, char *why,
                 size_t why_cap)
{
    int rc = -1;
    X509 *x = NULL;
    EVP_PKEY *pk = NULL;
    ERR_clear_error();
    if (!cert_len || !memmem(cert, cert_len, "-----BEGIN", 10)) {
        snprintf(why, why_cap, "tls.crt is not PEM");
        return -1;
    }
    if (!key_len || !memmem(key, key_len, "-----BEGIN", 10)) {
        snprintf(why, why_cap, "tls.key is not PEM");
        return -1;
    }
    BIO *cb = BIO_new_mem_buf(cert, (int)cert_len);
    BIO *kb = BIO_new_mem_buf(key, (int)key_len);
    if (!cb || !kb)
        sl_oom();
    x = PEM_read_bio_X509(cb, NULL, NULL, NULL);
    if (!x) {
        reason(why, why_cap, "tls.crt holds no valid certificate");
        goto out;
    }
    /* The rest of the chain must parse too. */
    for (;;) {
        X509 *more = PEM_read_bio_X509(cb, NULL, NULL, NULL);
        if (!more) {
            unsigned long e = ERR_peek_last_error();
            if (e && ERR_GET_REASON(e) != PEM_R_NO_START_LINE) {
                reason(why, why_cap, "tls.crt: invalid certificate in the chain");
                goto out;
            }
            ERR_clear_error();
            break;
        }
        X509_free(more);
    }
    pk = PEM_read_bio_PrivateKey(kb, NULL, NULL, (void *)"");
    if (!pk) {
        reason(why, why_cap, "tls.key holds no valid private key");
        goto out;
    }
    if (X509_check_private_key(x, pk) != 1) {
        reason(why, why_cap, "tls.key does not match the certificate in tls.crt");
        goto out;
    }
    rc = 0;
out:
    X509_free(x);
    EVP_PKEY_free(pk);
    BIO_free(cb);
    BIO_free(kb);
    ERR_clear_error();
    return rc;
}
