/* The response_headers filter: header edits (request_headers.c) applied, in the response
 * hook, to the response header about to go to the client: remove, set, add, then copy, so
 * the guide's lesson 11 is `{remove: [X-App-Version], set: {X-Content-Type-Options: nosniff},
 * copy: {Date: X-Legacy-Date}}`. */
#include "gateway/filters/filters.h"

static int response(void *state, void *scratch, sl_session_t *s, sl_response_header_t *resp)
{
    gw_hdr_edit_apply(state, &resp->headers);
    return SL_CONTINUE;
}

const gw_filter_kind_t gw_filter_response_headers = {
    .name = "response_headers",
    .parse = gw_hdr_edit_parse,
    .free = gw_hdr_edit_free,
    .response = response,
};
