/*
 * galaxy-train — train and evaluate galaxyd models.
 *
 *   galaxy-train wavelet-mamba --data PATH --db runs.sqlite --out DIR [options]
 *   galaxy-train eval --checkpoint F --data PATH [--sizes 32,64,128] [--db F]
 *   galaxy-train bundle --checkpoint F --data PATH --out FILE.safetensors [--sizes 32,64]
 *   galaxy-train report --db F [--runs 3,4,5,6] [--kind bias|compare] [--out FILE.md]
 *
 * Design: argument parsing only; the loop, checkpoints and metrics are the
 * library's (trainer/gx_train_wm.h), so tests drive exactly what this binary
 * runs. Every error names the bad flag (or --set key) and exits with 2;
 * a failure while running exits with 1.
 */
#include "gx_report.h"
#include "gx_train_wm.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <unistd.h>

static void usage_main(FILE *f) {
    fprintf(f,
        "usage: galaxy-train COMMAND [options]\n"
        "\n"
        "Commands:\n"
        "  wavelet-mamba   train the WaveletMamba classifier + photo-z model\n"
        "  eval            evaluate a checkpoint on the test part, across input sizes\n"
        "  bundle          evaluate a checkpoint and write a copy carrying its test metrics\n"
        "  report          Markdown tables (bias correction, model comparison) from the database\n"
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
        "                     z_train=spec_selected (redshift loss on spec_selected\n"
        "                     training objects only; galaxy-synth files), colour_weights=0\n"
        "                     (plain log-MSE), hk_weight_max=0 (no HK term),\n"
        "                     backbone=resnet18 (the ResNet-18 baseline, same heads; resnet_width=N)\n"
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

static void usage_bundle(FILE *f) {
    fprintf(f,
        "usage: galaxy-train bundle --checkpoint FILE --data PATH --out FILE.safetensors [options]\n"
        "\n"
        "Evaluates the checkpoint on the test part of PATH (as `galaxy-train eval`) and\n"
        "writes a copy of it (same tensors, same metadata) with one more metadata key,\n"
        "\"test_metrics\": a JSON object with accuracy, auc_macro, ap_macro, per-class\n"
        "recall, the photo-z metrics (z_log_mse, z_bias, z_nmad, z_outlier_rate, z_mae,\n"
        "z_r2), n_test, the data file name, and the accuracy per evaluated size with\n"
        "their CV. galaxyd shows it in /v1/models. Written atomically (temp + fsync +\n"
        "rename): --out may be the checkpoint itself.\n"
        "\n"
        "  --checkpoint FILE  a checkpoint written by galaxy-train\n"
        "  --data PATH        the dataset it was trained on\n"
        "  --out FILE         the bundle to write (.safetensors)\n"
        "  --sizes LIST       comma list of input sizes (default: the checkpoint's size)\n"
        "  --batch N          evaluation batch (default 64)\n"
        "  --help             this text\n");
}

static void usage_report(FILE *f) {
    fprintf(f,
        "usage: galaxy-train report --db FILE [--runs LIST] [--kind bias|compare] [--out FILE.md]\n"
        "\n"
        "Writes a Markdown table from the test metrics that `galaxy-train eval --db`\n"
        "stored (the newest evaluated epoch of each run).\n"
        "  bias     the paper's Table 3: one row per run labelled by its loss switches\n"
        "           (MSE only / +colour / +HK / +both); overall log-MSE, bias, outlier\n"
        "           rate, NMAD, then log-MSE and bias per redshift bin.\n"
        "  compare  the paper's Table 2: model (backbone / config), parameters, accuracy,\n"
        "           macro AUC, macro AP, log-MSE, NMAD, outlier rate, images/s.\n"
        "Missing values print as \"—\".\n"
        "\n"
        "  --db FILE          metrics database (must exist)\n"
        "  --runs LIST        run ids in row order, e.g. 3,4,5,6 or 3-6 (default: every\n"
        "                     run with test metrics)\n"
        "  --kind K           bias | compare (default bias)\n"
        "  --out FILE         write the Markdown here (atomically) instead of stdout\n"
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

/* "32,64,128" -> sizes[]; 0 on a bad list (*why says what). */
static int parse_sizes(const char *val, int *sizes, int *n, const char **why) {
    char buf[256];
    long long v;
    if (strlen(val) >= sizeof buf) { *why = "list too long"; return 0; }
    snprintf(buf, sizeof buf, "%s", val);
    *n = 0;
    for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (*n == GX_TRAIN_MAX_SIZES) { *why = "too many sizes (at most 16)"; return 0; }
        if (!parse_ll(t, 8, 1024, &v)) { *why = "each size must be an integer in [8, 1024]"; return 0; }
        sizes[(*n)++] = (int)v;
    }
    if (!*n) { *why = "needs at least one size"; return 0; }
    return 1;
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
            const char *why;
            if (!parse_sizes(val, o.sizes, &o.n_sizes, &why)) return bad(C, a, why);
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

static int cmd_bundle(int argc, char **argv) {
    const char *C = "bundle";
    gx_bundle_opts o;
    memset(&o, 0, sizeof o);
    o.print = stdout;
    o.batch = 64;
    long long v;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { usage_bundle(stdout); return 0; }
        if (strcmp(a, "--checkpoint") && strcmp(a, "--data") && strcmp(a, "--out") &&
            strcmp(a, "--batch") && strcmp(a, "--sizes"))
            return bad(C, a, "unknown option");
        if (!val) return bad(C, a, "needs a value");
        if (!strcmp(a, "--checkpoint")) o.checkpoint = val;
        else if (!strcmp(a, "--data")) o.data = val;
        else if (!strcmp(a, "--out")) o.out = val;
        else if (!strcmp(a, "--batch")) {
            if (!parse_ll(val, 1, 1 << 20, &v)) return bad(C, a, "must be a positive integer");
            o.batch = (int)v;
        } else {
            const char *why;
            if (!parse_sizes(val, o.sizes, &o.n_sizes, &why)) return bad(C, a, why);
        }
        i++;
    }
    if (!o.checkpoint) return bad(C, "--checkpoint", "is required");
    if (!o.data) return bad(C, "--data", "is required");
    if (!o.out) return bad(C, "--out", "is required");
    gx_err err;
    if (gx_bundle_write(&o, NULL, &err) != GX_OK) {
        fprintf(stderr, "galaxy-train bundle: %s\n", err.msg);
        return 1;
    }
    return 0;
}

/* "3,4,5-7" -> ids[]; 0 on a bad list (*why says what). */
static int parse_runs(const char *val, int64_t *ids, int *n, const char **why) {
    char buf[4096];
    if (strlen(val) >= sizeof buf) { *why = "list too long"; return 0; }
    snprintf(buf, sizeof buf, "%s", val);
    *n = 0;
    for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        long long lo, hi;
        char *dash = strchr(t + 1, '-');     /* t + 1: "-3" is a bad id, not a range */
        if (dash) *dash = 0;
        if (!parse_ll(t, 1, (long long)(~0ull >> 1), &lo) ||
            (dash ? !parse_ll(dash + 1, lo, (long long)(~0ull >> 1), &hi) : (hi = lo, 0))) {
            *why = "expected run ids >= 1 as a comma list with optional ranges (3,4,5-7)";
            return 0;
        }
        for (long long r = lo; r <= hi; r++) {
            if (*n == GX_REPORT_MAX_RUNS) { *why = "too many runs (at most 256)"; return 0; }
            ids[(*n)++] = r;
        }
    }
    if (!*n) { *why = "needs at least one run id"; return 0; }
    return 1;
}

static int cmd_report(int argc, char **argv) {
    const char *C = "report";
    const char *db_path = NULL, *out = NULL;
    int64_t ids[GX_REPORT_MAX_RUNS];
    gx_report_opts o;
    memset(&o, 0, sizeof o);
    o.kind = GX_REPORT_BIAS;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { usage_report(stdout); return 0; }
        if (strcmp(a, "--db") && strcmp(a, "--runs") && strcmp(a, "--kind") && strcmp(a, "--out"))
            return bad(C, a, "unknown option");
        if (!val) return bad(C, a, "needs a value");
        if (!strcmp(a, "--db")) db_path = val;
        else if (!strcmp(a, "--out")) out = val;
        else if (!strcmp(a, "--kind")) {
            int k = gx_report_kind_parse(val);
            if (k < 0) {
                fprintf(stderr, "galaxy-train report: --kind: unknown kind '%s' (bias or compare)\n", val);
                return 2;
            }
            o.kind = (gx_report_kind)k;
        } else {
            const char *why;
            if (!parse_runs(val, ids, &o.n_runs, &why)) return bad(C, a, why);
            o.runs = ids;
        }
        i++;
    }
    if (!db_path) return bad(C, "--db", "is required");
    /* gx_db_open would create a missing file: a report of nothing. */
    if (access(db_path, R_OK) != 0) {
        fprintf(stderr, "galaxy-train report: --db %s: %s\n", db_path, strerror(errno));
        return 2;
    }
    gx_db *db = NULL;
    gx_err err;
    char *md = NULL;
    o.source = db_path;
    gx_status s = gx_db_open(&db, db_path, &err);
    if (s != GX_OK) fprintf(stderr, "galaxy-train report: --db %s: %s\n", db_path, err.msg);
    if (s == GX_OK && (s = gx_report_markdown(db, &o, &md, &err)) != GX_OK)
        fprintf(stderr, "galaxy-train report: %s\n", err.msg);
    if (s == GX_OK && out && (s = gx_file_write_atomic(out, md, strlen(md), &err)) != GX_OK)
        fprintf(stderr, "galaxy-train report: --out %s: %s\n", out, err.msg);
    if (s == GX_OK && !out) fputs(md, stdout);
    if (s == GX_OK && out) printf("wrote %s\n", out);
    free(md);
    gx_db_close(db);
    return s == GX_OK ? 0 : 1;
}

int main(int argc, char **argv) {
    if (argc < 2) { usage_main(stderr); return 2; }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) { usage_main(stdout); return 0; }
    if (!strcmp(cmd, "wavelet-mamba")) return cmd_wavelet_mamba(argc - 1, argv + 1, argc, argv);
    if (!strcmp(cmd, "eval")) return cmd_eval(argc - 1, argv + 1);
    if (!strcmp(cmd, "bundle")) return cmd_bundle(argc - 1, argv + 1);
    if (!strcmp(cmd, "report")) return cmd_report(argc - 1, argv + 1);
    fprintf(stderr, "galaxy-train: unknown command '%s' (wavelet-mamba, eval, bundle, report; see --help)\n", cmd);
    return 2;
}
