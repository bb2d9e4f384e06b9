/* Command line (Pingora's Opt): -c FILE, -d, -t, -u, --version, -h. */
#include <stdio.h>
#include <string.h>

#include "sluice/conf.h"

void sl_opt_usage(const char *prog)
{
    const char *slash = strrchr(prog, '/');
    if (slash)
        prog = slash + 1;
    printf("Usage: %s [-c FILE] [-d] [-t] [-u] [--version] [-h]\n"
           "\n"
           "  -c, --conf FILE  load the configuration from FILE (YAML or JSON)\n"
           "  -d, --daemon     run in the background (pid_file, error_log)\n"
           "  -t, --test       check the configuration and exit\n"
           "  -u, --upgrade    take over the listening sockets of a running instance\n"
           "      --version    print the version and exit\n"
           "  -h, --help       print this help and exit\n"
           "\n"
           "Signals: SIGTERM graceful shutdown, SIGINT immediate exit, SIGHUP reload the\n"
           "config file, SIGQUIT hand the listeners to a process started with -u, SIGUSR1\n"
           "reopen the log file. Log level: SLUICE_LOG=error|warn|info|debug|trace.\n",
           prog);
}

static int usage_error(const char *prog, const char *what, const char *arg)
{
    fprintf(stderr, "%s: %s '%s'\nTry '%s --help' for more information.\n", prog, what, arg, prog);
    return SL_EPARSE;
}

int sl_opt_parse(sl_opt_t *opt, int argc, char **argv)
{
    memset(opt, 0, sizeof(*opt));
    const char *prog = argc > 0 ? argv[0] : "sluice";
    const char *slash = strrchr(prog, '/');
    if (slash)
        prog = slash + 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-c") == 0 || strcmp(a, "--conf") == 0) {
            if (i + 1 >= argc)
                return usage_error(prog, "missing file name after", a);
            opt->conf = argv[++i];
        } else if (strncmp(a, "--conf=", 7) == 0) {
            opt->conf = a + 7;
        } else if (strcmp(a, "-d") == 0 || strcmp(a, "--daemon") == 0) {
            opt->daemon = true;
        } else if (strcmp(a, "-t") == 0 || strcmp(a, "--test") == 0) {
            opt->test = true;
        } else if (strcmp(a, "-u") == 0 || strcmp(a, "--upgrade") == 0) {
            opt->upgrade = true;
        } else if (strcmp(a, "--version") == 0 || strcmp(a, "-V") == 0) {
            opt->version = true;
        } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            opt->help = true;
        } else {
            return usage_error(prog, "unknown argument", a);
        }
        if (opt->conf && !*opt->conf)
            return usage_error(prog, "empty config file name in", a);
    }
    return 0;
}
