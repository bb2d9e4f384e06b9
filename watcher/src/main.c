/* sluice-watcher: the Kubernetes ingress controller of sluice (SPEC §6). It turns Ingress,
 * IngressClass, Service, EndpointSlice and TLS Secret objects -- from the API server or from
 * manifest files -- into sluice's dynamic config and pushes it to sluice's admin API.
 * Exit codes: 0 stopped by a signal, 1 cannot run with this configuration, 2 usage error. */
#define SL_LOG_TAG "watcher"
#include <curl/curl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "controller.h"
#include "opts.h"
#include "sluice/log.h"
#include "sluice/server.h"

int main(int argc, char **argv)
{
    sl_log_init_from_env();
    wt_opts_t o;
    char err[512];
    if (wt_opts_parse(&o, argc, argv, err, sizeof(err)) != 0) {
        fprintf(stderr, "sluice-watcher: %s\n", err);
        fprintf(stderr, "usage: sluice-watcher --source kubernetes|files [flags]; --help lists "
                        "the flags\n");
        wt_opts_free(&o);
        return 2;
    }
    if (o.help || o.version) {
        if (o.help)
            wt_opts_usage(stdout);
        else
            printf("sluice-watcher (%s)\n", sl_version());
        wt_opts_free(&o);
        return 0;
    }
    signal(SIGPIPE, SIG_IGN);
    srand((unsigned)time(NULL) ^ (unsigned)getpid());
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "sluice-watcher: libcurl failed to initialize\n");
        wt_opts_free(&o);
        return 3;
    }
    uv_loop_t loop;
    uv_loop_init(&loop);
    int code = wt_controller_run(&loop, &o);
    uv_loop_close(&loop);
    curl_global_cleanup();
    wt_opts_free(&o);
    return code;
}
