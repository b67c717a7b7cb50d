/*
 * galaxy-train — train and evaluate galaxyd models.
 *
 *   galaxy-train wavelet-mamba --data PATH --db runs.sqlite --out DIR [options]
 *   galaxy-train eval --checkpoint F --data PATH [--sizes 32,64,128] [--db F]
 *
 * Design: argument parsing only; the loop, checkpoints and metrics are the
 * library's (trainer/gx_train_wm.h), so tests drive exactly what this binary
 * runs. Every error names the bad flag (or --set key) and exits with 2;
 * a failure while running exits with 1.
 */
#include "gx_train_wm.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage_main(FILE *f) {
    fprintf(f,
        "usage: galaxy-train COMMAND [options]\n"
        "\n"
        "Commands:\n"
        "  wavelet-mamba   train the WaveletMamba classifier + photo-z model\n"
        "  eval            evaluate a checkpoint on the test part, across input sizes\n"
        "\n"
        "galaxy-train COMMAND --help shows the options of a command.\n");
}

static void usage_wm(FILE *f) {
    fprintf(f,
        "usage: galaxy-train wavelet-mamba --data PATH --db runs.sqlite --out DIR [options]\n"
        "\n"
        "Trains WaveletMamba (spec/wavelet-mamba.md) on a Galaxy10-layout HDF5 file, a\n"
        "folder with catalog.csv, or a galaxy-synth file. Seeded stratified 70/15/15\n"
        "split, class-balanced sampling, the spec's augmentations, AdamW with warm-up +\n"
        "cosine, clipping, accumulation. Per epoch: metrics into the SQLite database,\n"
        "DIR/last.safetensors, DIR/best.safetensors (by validation accuracy) and\n"
        "DIR/train_state.safetensors (for --resume).\n"
        "\n"
        "  --data PATH        dataset (HDF5 file, folder, or CSV)\n"
        "  --db FILE          metrics database (created if absent)\n"
        "  --out DIR          checkpoint directory (created if absent)\n"
        "  --config NAME      tiny | small | default (default: default)\n"
        "  --size S           input size (default: the config's, 64; tiny 32)\n"
        "  --epochs N         epochs (default 120)\n"
        "  --batch N          micro-batch (default 64)\n"
        "  --accum N          micro-batches per optimiser step (default 8: 512 per step)\n"
        "  --seed S           seed of init, split, sampling, augmentation, noise (default 1)\n"
        "  --device cpu       compute device (only cpu in this build)\n"
        "  --set KEY=VALUE    any option by name (repeatable), e.g. lr_peak=2e-3,\n"
        "                     warmup_epochs=1, clip=0, balanced=0, augment=0, max_train=1000,\n"
        "                     threads=2, w_red=0.2, hk_mode=batch, d_model=32 ...\n"
        "                     (the full list: trainer/gx_train_wm.h)\n"
        "  --resume RUN_ID    continue run RUN_ID from DIR/train_state.safetensors; the\n"
        "                     result equals an uninterrupted run with the same seed\n"
        "  --quiet            no progress output\n"
        "  --help             this text\n");
}

static void usage_eval(FILE *f) {
    fprintf(f,
        "usage: galaxy-train eval --checkpoint FILE --data PATH [options]\n"
        "\n"
        "Evaluates a checkpoint on the test part of PATH (the same seeded 70/15/15 split\n"
        "as training) and prints accuracy, per-class recall, AUC, AP and the photo-z\n"
        "metrics; with several sizes, the accuracy per input size and their\n"
        "coefficient of variation.\n"
        "\n"
        "  --checkpoint FILE  a checkpoint written by galaxy-train\n"
        "  --data PATH        dataset\n"
        "  --sizes LIST       comma list of input sizes (default: the checkpoint's size)\n"
        "  --db FILE          also store the metrics (split \"test\") under the checkpoint's run\n"
        "  --batch N          evaluation batch (default 64)\n"
        "  --all              evaluate every sample, not only the test part\n"
        "  --help             this text\n");
}

static int bad(const char *cmd, const char *flag, const char *why) {
    /* Library messages already start with the flag ("--set lr_peak: ..."). */
    if (!strncmp(why, flag, strlen(flag)))
        fprintf(stderr, "galaxy-train %s: %s (see galaxy-train %s --help)\n", cmd, why, cmd);
    else
        fprintf(stderr, "galaxy-train %s: %s: %s (see galaxy-train %s --help)\n", cmd, flag, why, cmd);
    return 2;
}

/* Flags of `wavelet-mamba` that take a value (--quiet and --help do not). */
static int wm_flag_known(const char *a) {
    static const char *const f[] = { "--data", "--db", "--out", "--config", "--size", "--epochs",
                                     "--batch", "--accum", "--seed", "--device", "--resume", "--set" };
    for (size_t i = 0; i < sizeof f / sizeof *f; i++) if (!strcmp(a, f[i])) return 1;
    return 0;
}

/* Strict integer parsing: the whole argument, within [lo, hi]. */
static int parse_ll(const char *s, long long lo, long long hi, long long *v) {
    char *e;
    *v = strtoll(s, &e, 10);
    return *s && !*e && *v >= lo && *v <= hi;
}

/* Joins argv for the run's command_line column. */
static char *join_args(int argc, char **argv) {
    size_t n = 1;
    for (int i = 0; i < argc; i++) n += strlen(argv[i]) + 1;
    char *s = malloc(n), *p = s;
    if (!s) return NULL;
    for (int i = 0; i < argc; i++) p += sprintf(p, "%s%s", i ? " " : "", argv[i]);
    *p = 0;
    return s;
}

/* Set by SIGINT/SIGTERM; the loop stops at the next micro-batch and the
 * run is marked interrupted (resumable). A second signal kills as usual. */
static volatile sig_atomic_t g_stop;

static void on_signal(int sig) {
    (void)sig;
    g_stop = 1;
}

static void install_stop_handler(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESETHAND;       /* the second Ctrl-C is not caught */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

static int cmd_wavelet_mamba(int argc, char **argv, int argc0, char **argv0) {
    const char *C = "wavelet-mamba";
    /* --config first: it sets the defaults that the other flags override. */
    const char *config = "default";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) { usage_wm(stdout); return 0; }
        if (!strcmp(argv[i], "--config")) {
            if (i + 1 >= argc) return bad(C, "--config", "needs a value");
            config = argv[++i];
        }
    }
    gx_train_wm_opts o;
    gx_err err;
    if (gx_train_wm_opts_default(&o, config, &err) != GX_OK) return bad(C, "--config", err.msg);
    long long v;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        int takes = strcmp(a, "--quiet") != 0;
        if (takes && !wm_flag_known(a)) return bad(C, a, "unknown option");
        if (takes && !val) return bad(C, a, "needs a value");
        if (!strcmp(a, "--data")) o.data = val;
        else if (!strcmp(a, "--db")) o.db_path = val;
        else if (!strcmp(a, "--out")) o.out_dir = val;
        else if (!strcmp(a, "--config")) { /* handled above */ }
        else if (!strcmp(a, "--size")) {
            if (!parse_ll(val, 8, 1024, &v)) return bad(C, a, "must be an integer in [8, 1024]");
            o.model.size = v;
        } else if (!strcmp(a, "--epochs")) {
            if (!parse_ll(val, 1, 1000000, &v)) return bad(C, a, "must be a positive integer");
            o.epochs = (int)v;
        } else if (!strcmp(a, "--batch")) {
            if (!parse_ll(val, 2, 1 << 20, &v)) return bad(C, a, "must be an integer >= 2");
            o.batch = (int)v;
        } else if (!strcmp(a, "--accum")) {
            if (!parse_ll(val, 1, 1 << 20, &v)) return bad(C, a, "must be a positive integer");
            o.accum = (int)v;
        } else if (!strcmp(a, "--seed")) {
            if (!parse_ll(val, 0, (long long)(~0ull >> 1), &v)) return bad(C, a, "must be a non-negative integer");
            o.seed = (uint64_t)v;
        } else if (!strcmp(a, "--device")) {
            if (strcmp(val, "cpu")) return bad(C, a, "only 'cpu' is available in this build");
        } else if (!strcmp(a, "--resume")) {
            if (!parse_ll(val, 1, (long long)(~0ull >> 1), &v)) return bad(C, a, "must be a run id (>= 1)");
            o.resume_run = v;
        } else if (!strcmp(a, "--set")) {
            char kv[256];
            snprintf(kv, sizeof kv, "%s", val);
            char *eq = strchr(kv, '=');
            if (!eq) return bad(C, "--set", "expected KEY=VALUE");
            *eq = 0;
            if (gx_train_wm_set(&o, kv, eq + 1, &err) != GX_OK) return bad(C, "--set", err.msg);
        } else if (!strcmp(a, "--quiet")) {
            o.progress = 0;
        } else {
            return bad(C, a, "unknown option");
        }
        if (takes) i++;
    }
    if (!o.data) return bad(C, "--data", "is required");
    if (!o.db_path) return bad(C, "--db", "is required");
    if (!o.out_dir) return bad(C, "--out", "is required");
    char *cl = join_args(argc0, argv0);
    o.command_line = cl;
    o.stop = &g_stop;
    install_stop_handler();
    gx_train_wm_result r;
    gx_status s = gx_train_wm(&o, &r, &err);
    free(cl);
    if (s != GX_OK) {
        fprintf(stderr, "galaxy-train %s: %s\n", C, err.msg);
        return 1;
    }
    if (r.interrupted) {
        printf("run %lld: interrupted after %d complete epochs; continue with --resume %lld\n",
               (long long)r.run_id, r.epochs_done, (long long)r.run_id);
        return 130;
    }
    printf("run %lld: %d epochs, best val accuracy %.4f (epoch %d), %.1f images/s\n",
           (long long)r.run_id, r.epochs_done, r.best_val_accuracy, r.best_epoch + 1, r.images_per_s);
    return 0;
}

static int cmd_eval(int argc, char **argv) {
    const char *C = "eval";
    gx_eval_wm_opts o;
    memset(&o, 0, sizeof o);
    o.print = stdout;
    o.batch = 64;
    long long v;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { usage_eval(stdout); return 0; }
        if (!strcmp(a, "--all")) { o.all = 1; continue; }
        if (strcmp(a, "--checkpoint") && strcmp(a, "--data") && strcmp(a, "--db") &&
            strcmp(a, "--batch") && strcmp(a, "--sizes"))
            return bad(C, a, "unknown option");
        if (!val) return bad(C, a, "needs a value");
        if (!strcmp(a, "--checkpoint")) o.checkpoint = val;
        else if (!strcmp(a, "--data")) o.data = val;
        else if (!strcmp(a, "--db")) o.db_path = val;
        else if (!strcmp(a, "--batch")) {
            if (!parse_ll(val, 1, 1 << 20, &v)) return bad(C, a, "must be a positive integer");
            o.batch = (int)v;
        } else if (!strcmp(a, "--sizes")) {
            char buf[256];
            snprintf(buf, sizeof buf, "%s", val);
            o.n_sizes = 0;
            for (char *t = strtok(buf, ","); t; t = strtok(NULL, ",")) {
                if (o.n_sizes == GX_TRAIN_MAX_SIZES) return bad(C, a, "too many sizes (at most 16)");
                if (!parse_ll(t, 8, 1024, &v)) return bad(C, a, "each size must be an integer in [8, 1024]");
                o.sizes[o.n_sizes++] = (int)v;
            }
            if (!o.n_sizes) return bad(C, a, "needs at least one size");
        } else {
            return bad(C, a, "unknown option");
        }
        i++;
    }
    if (!o.checkpoint) return bad(C, "--checkpoint", "is required");
    if (!o.data) return bad(C, "--data", "is required");
    gx_eval_wm_result r;
    gx_err err;
    if (gx_eval_wm(&o, &r, &err) != GX_OK) {
        fprintf(stderr, "galaxy-train eval: %s\n", err.msg);
        return 1;
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) { usage_main(stderr); return 2; }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) { usage_main(stdout); return 0; }
    if (!strcmp(cmd, "wavelet-mamba")) return cmd_wavelet_mamba(argc - 1, argv + 1, argc, argv);
    if (!strcmp(cmd, "eval")) return cmd_eval(argc - 1, argv + 1);
    fprintf(stderr, "galaxy-train: unknown command '%s' (wavelet-mamba, eval; see --help)\n", cmd);
    return 2;
}
