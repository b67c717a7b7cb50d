/*
 * galaxyd — serve galaxy classification and photometric redshift over HTTP
 * (the server is daemon/gx_server.h; this file is flags and signals only).
 *
 * Signals: SIGTERM/SIGINT/SIGHUP are blocked before any thread starts, so
 * every libmicrohttpd and batcher thread inherits the mask and the kernel
 * delivers them to the one place that waits for them: main's sigwaitinfo
 * loop. Nothing runs in a signal handler, and no global flag is needed.
 *   SIGHUP            reload the models directory (as POST /v1/admin/reload)
 *   SIGTERM, SIGINT   stop accepting, answer every accepted request, close
 *                     the database, exit 0
 *
 * The first line on stdout is "galaxyd listening on http://HOST:PORT"
 * (tests start galaxyd with --port 0 and read the port from it).
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gx_tool_omp.h"
#include "gx_tool_device.h"
#include "gx_server.h"
#include "gx_serve_model.h"

static void usage(FILE *f) {
    fputs(
        "usage: galaxyd [options]\n"
        "\n"
        "Serves the models of a directory over HTTP: /v1 (classify, batch, objects,\n"
        "predictions, models, admin/reload; anomaly, anomaly/batch and anomalies with a\n"
        "uda model; counterfactuals, counterfactual.png and generate.png with a cf-inn\n"
        "model; morphology), the Open Inference Protocol under /v2,\n"
        "/healthz, /readyz, /metrics, and the dashboard from --web. See api/openapi.yaml.\n"
        "\n"
        "  --host ADDR            bind address (default 127.0.0.1)\n"
        "  --port N               port, 0 = any free one (default 8080)\n"
        "  --models DIR|FILE      checkpoints to serve (default models/default)\n"
        "  --db FILE              SQLite database, created and migrated if new (default galaxyd.sqlite)\n"
        "  --web DIR              static files (default web)\n"
        "  --threads N            HTTP threads (default 4)\n"
        "  --max-batch N          images per forward pass (default 32)\n"
        "  --batch-delay-us N     longest wait for a fuller batch (default 2000)\n"
        "  --max-queue N          queued images per model before 503 (default 256)\n"
        "  --max-body BYTES       request body limit, K/M/G suffixes (default 16M)\n"
        "  --max-pixels N         decoded width*height limit (default 16777216)\n"
        "  --max-batch-parts N    files per batch request, rows per /v2 infer (default 64)\n"
        "  --max-connections N    open connections (default 256)\n"
        "  --conn-timeout S       close a connection idle this long, or one that has not\n"
        "                         delivered a whole request in this time (default 30)\n"
        "  --max-header-bytes N   per-connection header memory (default 65536)\n"
        "  --deadline-ms N        per-request deadline in the queue, 504 after (default 10000)\n"
        "  --cf-cache-mb N        counterfactual images kept for their URLs, MiB; the oldest\n"
        "                         results are evicted past it (default 64)\n"
        "  --cf-ttl-s N           seconds a counterfactual result's URLs work (default 3600)\n"
        "  --api-key-file FILE    require the key on its first line for POST and admin routes\n"
        "                         (Authorization: Bearer KEY or X-API-Key: KEY)\n"
        "  --protect-reads        require the key for GET data routes too\n"
        "  --cors-origin ORIGIN   send CORS headers allowing ORIGIN (default: none)\n"
        "  --access-log FILE      JSON access log lines to FILE (default stderr)\n"
        "  --device cpu|cuda|auto the backend (default auto): with a usable GPU every model\n"
        "                         runs on cuda:0 (parameters uploaded once, a stream and\n"
        "                         device arena per model); without one, on the CPU. A line\n"
        "                         on stderr says which backend runs and why\n"
        "  --tf32                 on the GPU, let cuBLAS use TF32 tensor cores for matrix\n"
        "                         products (faster, ~1e-3 relative; default exact FP32)\n"
        "  --cuda-graphs on|off   on the GPU, pad the models' classify batches to 1, 2, 4, 8,\n"
        "                         16 or 32 rows and replay each size as a CUDA graph captured\n"
        "                         on its first use (default on; a size whose capture fails\n"
        "                         runs without one, with a line on stderr)\n"
        "  --help                 this text\n"
        "\n"
        "Signals: SIGHUP reloads the models; SIGTERM/SIGINT drain and stop.\n", f);
}

/* A whole decimal number in [lo, hi] with an optional K/M/G (binary) suffix. */
static int parse_num(const char *flag, const char *s, long long lo, long long hi, int suffix, long long *out) {
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    long long mul = 1;
    if (suffix && end != s && *end) {
        switch (*end) {
        case 'k': case 'K': mul = 1LL << 10; break;
        case 'm': case 'M': mul = 1LL << 20; break;
        case 'g': case 'G': mul = 1LL << 30; break;
        default: mul = 0;
        }
        if (mul) end++;
        if (*end == 'i' && end[1] == 'B') end += 2;
        else if (*end == 'B') end++;
    }
    if (errno || end == s || *end || !mul || v < lo / mul || v > hi / mul) {
        fprintf(stderr, "galaxyd: %s: '%s' is not a number in [%lld, %lld]\n", flag, s, lo, hi);
        return 0;
    }
    *out = v * mul;
    return 1;
}

typedef struct flag_int { const char *name; int *dst; long long lo, hi; } flag_int;

/* Returns 1 parsed, 0 error, 2 --help. */
static int parse_args(int argc, char **argv, gx_server_opts *o, int *tf32, int *graphs) {
    const flag_int ints[] = {
        { "--port", &o->port, 0, 65535 },
        { "--threads", &o->threads, 1, 256 },
        { "--max-batch", &o->batch.max_batch, 1, 4096 },
        { "--batch-delay-us", &o->batch.batch_delay_us, 0, 10000000 },
        { "--max-queue", &o->batch.max_queue, 1, 1000000 },
        { "--max-batch-parts", &o->max_batch_parts, 1, 4096 },
        { "--max-connections", &o->max_connections, 1, 100000 },
        { "--conn-timeout", &o->conn_timeout_s, 1, 3600 },
        { "--deadline-ms", &o->deadline_ms, 1, 3600000 },
        { "--cf-cache-mb", &o->cf_cache_mb, 1, 65536 },
        { "--cf-ttl-s", &o->cf_ttl_s, 1, 2592000 },
    };
    const struct { const char *name; const char **dst; } strs[] = {
        { "--host", &o->host }, { "--models", &o->models_dir }, { "--db", &o->db_path },
        { "--web", &o->web_dir }, { "--api-key-file", &o->api_key_file },
        { "--cors-origin", &o->cors_origin }, { "--access-log", &o->access_log },
    };
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) return 2;
        if (!strcmp(a, "--protect-reads")) { o->protect_reads = 1; continue; }
        if (!strcmp(a, "--tf32")) { *tf32 = 1; continue; }
        if (i + 1 >= argc) {
            fprintf(stderr, "galaxyd: unknown option or missing value: %s (see --help)\n", a);
            return 0;
        }
        const char *v = argv[i + 1];
        int done = 0;
        long long n;
        for (size_t k = 0; !done && k < sizeof ints / sizeof ints[0]; k++)
            if (!strcmp(a, ints[k].name)) {
                if (!parse_num(a, v, ints[k].lo, ints[k].hi, 0, &n)) return 0;
                *ints[k].dst = (int)n;
                done = 1;
            }
        for (size_t k = 0; !done && k < sizeof strs / sizeof strs[0]; k++)
            if (!strcmp(a, strs[k].name)) *strs[k].dst = v, done = 1;
        if (!done && !strcmp(a, "--cuda-graphs")) {
            if (strcmp(v, "on") && strcmp(v, "off")) {
                fprintf(stderr, "galaxyd: --cuda-graphs: '%s' is not on or off\n", v);
                return 0;
            }
            *graphs = !strcmp(v, "on"), done = 1;
        }
        if (!done && !strcmp(a, "--max-body")) {
            if (!parse_num(a, v, 1024, 1LL << 31, 1, &n)) return 0;
            o->max_body = (size_t)n, done = 1;
        }
        if (!done && !strcmp(a, "--max-pixels")) {
            if (!parse_num(a, v, 64, 1LL << 30, 1, &n)) return 0;
            o->max_pixels = n, done = 1;
        }
        if (!done && !strcmp(a, "--max-header-bytes")) {
            if (!parse_num(a, v, 4096, 1LL << 24, 1, &n)) return 0;
            o->max_header_bytes = (size_t)n, done = 1;
        }
        if (!done) {
            fprintf(stderr, "galaxyd: unknown option: %s (see --help)\n", a);
            return 0;
        }
        i++;
    }
    return 1;
}

int main(int argc, char **argv) {
    gx_tool_prefer_passive_omp(argv);
    gx_server_opts o;
    gx_server_opts_default(&o);
    const char *device = gx_tool_take_device(&argc, argv);
    int tf32 = 0, graphs = 1;
    int pr = parse_args(argc, argv, &o, &tf32, &graphs);
    if (pr == 2) { usage(stdout); return 0; }
    if (!pr) return 2;
    /* stderr: the first stdout line is the listening line. */
    gx_device dev;
    if (gx_tool_device_report("galaxyd", device, "every model on the device", &dev, stderr))
        return 2;
    /* One pool for the device, shared by every model's worker (each has its
     * own stream and arena: daemon/gx_serve_model.h). */
    gx_serve_device sdev = { NULL, 0, tf32, graphs };
    gx_tool_tf32_report("galaxyd", tf32, dev, "the models run on the CPU", stderr);
    if (dev == GX_DEVICE_CUDA) {
        if (gx_tool_open_pool("galaxyd", &sdev.pool)) return 1;
        o.batch.device = &sdev;
    }

    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);   /* before any thread exists */
    signal(SIGPIPE, SIG_IGN);                 /* a closed client socket is an error code, not a death */

    gx_server *s;
    gx_err err = { { 0 } };
    if (gx_server_start(&s, &o, &err) != GX_OK) {
        fprintf(stderr, "galaxyd: %s\n", err.msg);
        if (sdev.pool) gx_cuda_pool_destroy(sdev.pool);   /* the failed start freed its models */
        return 1;
    }
    int v6 = strchr(o.host, ':') != NULL;
    printf("galaxyd listening on http://%s%s%s:%d\n", v6 ? "[" : "", o.host, v6 ? "]" : "", gx_server_port(s));
    fflush(stdout);

    for (;;) {
        int sig = sigwaitinfo(&set, NULL);
        if (sig < 0) {
            if (errno == EINTR) continue;
            fprintf(stderr, "galaxyd: sigwaitinfo: %s\n", strerror(errno));
            break;
        }
        if (sig == SIGHUP) {
            if (gx_server_reload(s, &err) == GX_OK) fprintf(stderr, "galaxyd: SIGHUP: models reloaded\n");
            else fprintf(stderr, "galaxyd: SIGHUP: reload failed, the previous models stay: %s\n", err.msg);
            continue;
        }
        fprintf(stderr, "galaxyd: %s: draining and stopping\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
        break;
    }
    if (gx_server_stop(s) != GX_OK) {
        /* A job may still be running on the device: its memory stays
         * allocated until the process is gone. */
        fprintf(stderr, "galaxyd: stopped without waiting for the unanswered request(s)\n");
        return 0;
    }
    if (sdev.pool) gx_cuda_pool_destroy(sdev.pool);   /* after every model is freed */
    fprintf(stderr, "galaxyd: stopped\n");
    return 0;
}
