/* The sluice binary. */
#define SL_LOG_TAG "sluice"
#include <sluice/sluice.h>

int main(int argc, char **argv)
{
    int code;
    sl_server_t *server = sl_server_from_args(argc, argv, &code);
    if (!server)
        return code;
    sl_server_bootstrap(server);
    return sl_server_run_forever(server);
}
