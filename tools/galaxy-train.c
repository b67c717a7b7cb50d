/*
 * galaxy-train — train and evaluate galaxyd models.
 *
 *   galaxy-train wavelet-mamba --data PATH --db runs.sqlite --out DIR [options]
 *   galaxy-train cf-inn --data PATH --db runs.sqlite --out DIR [options]
 *   galaxy-train eval --checkpoint F --data PATH [--sizes 32,64,128] [--db F] [--judge WM]
 *   galaxy-train bundle --checkpoint F --data PATH --out FILE.safetensors [--sizes 32,64] [--judge WM]
 *   galaxy-train uda --source S --target T --db runs.sqlite --out DIR [options]
 *   galaxy-train score --model CKPT --data FILE.h5|DIR --db F [--survey NAME]
 *   galaxy-train report --db F [--runs 3,4,5,6] [--kind bias|compare|uda|two-models] [--out FILE.md]
 *
 * Design: argument parsing only; the loop, checkpoints and metrics are the
 * library's (trainer/gx_train_wm.h), so tests drive exactly what this binary
 * runs. Every error names the bad flag (or --set key) and exits with 2;
 * a failure while running exits with 1.
 */
#include "gx_tool_omp.h"
#include "gx_tool_device.h"
#include "gx_eval_cf.h"
#include "gx_report.h"
#include "gx_train_cf.h"
#include "gx_train_uda.h"
#include "gx_train_wm.h"
#include "gx_two_models.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <limits.h>
#include <unistd.h>

static void usage_main(FILE *f) {
    fprintf(f,
        "usage: galaxy-train COMMAND [options]\n"
        "\n"
        "Commands:\n"
        "  wavelet-mamba   train the WaveletMamba classifier + photo-z model\n"
        "  cf-inn          train the CF-INN classifier with counterfactual explanations\n"
        "  uda             train DeepAstroUDA (source -> target adaptation + anomaly score)\n"
        "  score           score a dataset with a uda checkpoint into the anomaly store\n"
        "  eval            evaluate a checkpoint on the test part, across input sizes\n"
        "  bundle          evaluate a checkpoint and write a copy carrying its test metrics\n"
        "  report          Markdown tables (bias correction, model comparison) from the database\n"
        "  two-models      train two CF-INNs on disjoint halves and run the generative checks\n"
        "\n"
        "galaxy-train COMMAND --help shows the options of a command.\n"
        "Every command also takes --device cpu|cuda|auto (default: the CPU). With cuda or\n"
        "auto, wavelet-mamba, cf-inn and uda train (and validate), score scores, eval and bundle\n"
        "evaluate and two-models trains its two models on GPU 0 when one is usable; report runs\n"
        "on the CPU. With --device given, a line on stderr\n"
        "says which backend runs and why (cuda falls back to the CPU without a GPU).\n"
        "--tf32 (with the device) lets cuBLAS use TF32 tensor cores for the matrix products\n"
        "(faster, about 1e-3 relative; FP32 exact by default); ignored, with a line, on the CPU.\n");
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
        "  --device cpu|cuda|auto  where to train (default cpu): cuda/auto train on GPU 0\n"
        "                     when usable, else the CPU with a line on stderr saying why\n"
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

static void usage_cf(FILE *f) {
    fprintf(f,
        "usage: galaxy-train cf-inn --data PATH --db runs.sqlite --out DIR [options]\n"
        "\n"
        "Trains the CF-INN (spec/cf-inn.md): encoder, decoder and an invertible flow\n"
        "with a Gaussian-mixture hidden space, under the reconstruction, MMD and\n"
        "information-bottleneck losses. Seeded stratified 70/15/15 split, rotation and\n"
        "flip augmentation, Adam (lr 3e-4, means at 3x, x0.99 per epoch), clip 8.\n"
        "Per epoch: losses, accuracy, per-class recall, reconstruction MSD/SSIM and\n"
        "counterfactual validity/MSD/SSIM (first 64 validation images x the other\n"
        "classes) into the database; DIR/last.safetensors, DIR/best.safetensors (by\n"
        "validation accuracy; both get the exact m-hat over the training part at the\n"
        "end) and DIR/train_state.safetensors (for --resume).\n"
        "\n"
        "  --data PATH        dataset (HDF5 file, folder, or CSV)\n"
        "  --db FILE          metrics database (created if absent)\n"
        "  --out DIR          checkpoint directory (created if absent)\n"
        "  --config NAME      tiny | default (default: default; 64x64, d 64, d1 16)\n"
        "  --size S           input size, 16 * 2^k (default: the config's, 64; tiny 32)\n"
        "  --epochs N         epochs (default 100)\n"
        "  --batch N          batch (default 128)\n"
        "  --seed S           seed of init, split, sampling, augmentation, noise (default 1)\n"
        "  --judge FILE       a wavelet-mamba checkpoint that also classifies each\n"
        "                     counterfactual (metric cf_valid_judge)\n"
        "  --init FILE        start from this cf-inn checkpoint's weights (same config\n"
        "                     and size; a new run with a fresh optimiser: fine-tuning)\n"
        "  --set KEY=VALUE    any option by name (repeatable): lr, mu_lr_mult, lr_decay,\n"
        "                     beta1, beta2, eps, clip, warmup_epochs (epochs with L_R +\n"
        "                     L_MMD only; the paper's option is 10), noise_sigma, d, d1,\n"
        "                     hidden, blocks, subnet, clamp, beta, label_smooth, w_rec,\n"
        "                     w_mmd, w_ib, w_cyc (latent cycle term), w_bg (background\n"
        "                     term), w_z2 (z2 class-mean term; the three are our\n"
        "                     additions, docs/models.md), ssim_weight,\n"
        "                     crop_frac, balanced, augment, aug_rot, aug_hflip, aug_vflip,\n"
        "                     max_train, cf_eval_n,\n"
        "                     prefetch, threads (the list: trainer/gx_train_cf.h)\n"
        "  --resume RUN_ID    continue run RUN_ID from DIR/train_state.safetensors; the\n"
        "                     result equals an uninterrupted run with the same seed\n"
        "  --device cpu|cuda|auto  where to train (default cpu; cuda/auto: GPU 0 when usable)\n"
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
        "\n"
        "A cf-inn checkpoint (metadata \"model\": the command dispatches on it) is\n"
        "evaluated at its own size: accuracy, recall, AUC, reconstruction SSIM/MSD and\n"
        "the counterfactual metrics (validity in hidden space, re-encoded and by the\n"
        "judge; MSD/SSIM; background change outside the galaxy's segment), stored with\n"
        "--db under the checkpoint's run (trainer/gx_eval_cf.h). Its options:\n"
        "  --judge FILE       a wavelet-mamba checkpoint that classifies each counterfactual\n"
        "  --cf-n N           counterfactuals of the first N test images (default 0: all)\n"
        "  --split-seed S     the split's seed, for checkpoints without metadata split_seed\n"
        "  --grid FILE.png    also draw counterfactuals of one test image per class (rows)\n"
        "                     for every class (columns), with their difference maps\n"
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
        "  --judge, --cf-n, --split-seed, --grid   for a cf-inn checkpoint, as in galaxy-train eval;\n"
        "                     its test_metrics hold the cf-inn metrics (trainer/gx_eval_cf.h)\n"
        "  --help             this text\n");
}

static void usage_report(FILE *f) {
    fprintf(f,
        "usage: galaxy-train report --db FILE [--runs LIST] [--kind bias|compare|uda|two-models] [--out FILE.md]\n"
        "\n"
        "Writes a Markdown table from the test metrics that `galaxy-train eval --db`\n"
        "stored (the newest evaluated epoch of each run).\n"
        "  bias     the paper's Table 3: one row per run labelled by its loss switches\n"
        "           (MSE only / +colour / +HK / +both); overall log-MSE, bias, outlier\n"
        "           rate, NMAD, then log-MSE and bias per redshift bin.\n"
        "  compare  the paper's Table 2: model (backbone / config), parameters, accuracy,\n"
        "           macro AUC, macro AP, log-MSE, NMAD, outlier rate, images/s.\n"
        "  uda      DeepAstroUDA's Tables 1-2 from `galaxy-train uda` runs (their own\n"
        "           per-epoch metrics, at each run's best epoch): per experiment the\n"
        "           no-adaptation (lambda 0) target accuracy, the adapted source/target\n"
        "           accuracy, target F1, unknown accuracy, anomaly AUC.\n"
        "  two-models  `galaxy-train two-models` runs: memorisation and inversion\n"
        "           verdicts with their numbers, A-vs-B cosine, morphology W1.\n"
        "Missing values print as \"—\".\n"
        "\n"
        "  --db FILE          metrics database (must exist)\n"
        "  --runs LIST        run ids in row order, e.g. 3,4,5,6 or 3-6 (default: every\n"
        "                     run with test metrics)\n"
        "  --kind K           bias | compare | uda | two-models (default bias)\n"
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

/* A failure while running: the library's message (it names the file or
 * flag), exit status 1. */
static int failed(const char *cmd, const gx_err *err) {
    fprintf(stderr, "galaxy-train %s: %s\n", cmd, err->msg);
    return 1;
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

/* ------------------------------------------------------ training commands */

/* Pass one of a training command: --help anywhere (usage on stdout, exit
 * 0), and `flag`, whose value sets the defaults that the other flags
 * override (--config; uda's --backbone), each value handed to take(dst,
 * value) in order. -1 to go on parsing, else the exit status. */
static int first_pass(const char *C, int argc, char **argv, void (*usage)(FILE *), const char *flag,
                      int (*take)(void *dst, const char *val), void *dst) {
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) { usage(stdout); return 0; }
        if (!strcmp(argv[i], flag)) {
            if (i + 1 >= argc) return bad(C, flag, "needs a value");
            int rc = take(dst, argv[++i]);
            if (rc) return rc;
        }
    }
    return -1;
}

static int take_name(void *dst, const char *val) {
    *(const char **)dst = val;
    return 0;
}

/* Where the flags that the training commands share go (NULL where a
 * command has no such flag, or parses it its own way), and the options
 * every trainer has. */
typedef struct train_flags {
    const char **data, **db, **out;
    int *epochs, *batch;
    uint64_t *seed;
    int64_t *resume;
    int *progress;
    const char **command_line;
    const volatile sig_atomic_t **stop;
    /* --set KEY=VALUE: set(opts, KEY, VALUE, err); NULL: the command's own parser */
    gx_status (*set)(void *opts, const char *key, const char *value, gx_err *err);
    void *opts;
} train_flags;

/* --set KEY=VALUE: KEY into kv (NUL-terminated); returns the VALUE after
 * its '=', or NULL when there is none (said; the exit status is 2). */
static char *split_set(const char *C, const char *val, char kv[static 256]) {
    snprintf(kv, 256, "%s", val);
    char *eq = strchr(kv, '=');
    if (!eq) {
        bad(C, "--set", "expected KEY=VALUE");
        return NULL;
    }
    *eq = 0;
    return eq + 1;
}

/* A shared flag with its value: 0 taken, 2 a bad value (said), -1 not one
 * of t's. */
static int train_flag(const char *C, const train_flags *t, const char *a, const char *val) {
    long long v;
    gx_err err;
    if (t->data && !strcmp(a, "--data")) *t->data = val;
    else if (t->db && !strcmp(a, "--db")) *t->db = val;
    else if (t->out && !strcmp(a, "--out")) *t->out = val;
    else if (t->epochs && !strcmp(a, "--epochs")) {
        if (!parse_ll(val, 1, 1000000, &v)) return bad(C, a, "must be a positive integer");
        *t->epochs = (int)v;
    } else if (t->batch && !strcmp(a, "--batch")) {
        if (!parse_ll(val, 2, 1 << 20, &v)) return bad(C, a, "must be an integer >= 2");
        *t->batch = (int)v;
    } else if (t->seed && !strcmp(a, "--seed")) {
        if (!parse_ll(val, 0, (long long)(~0ull >> 1), &v)) return bad(C, a, "must be a non-negative integer");
        *t->seed = (uint64_t)v;
    } else if (t->resume && !strcmp(a, "--resume")) {
        if (!parse_ll(val, 1, (long long)(~0ull >> 1), &v)) return bad(C, a, "must be a run id (>= 1)");
        *t->resume = v;
    } else if (t->set && !strcmp(a, "--set")) {
        char kv[256], *value = split_set(C, val, kv);
        if (!value) return 2;
        if (t->set(t->opts, kv, value, &err) != GX_OK) return bad(C, "--set", err.msg);
    } else {
        return -1;
    }
    return 0;
}

/* Pass two: --quiet (*t->progress = 0), else a flag with a value: refused
 * when not in known (NULL-terminated; NULL: any "--..." name, the
 * command's own parser names the unknown ones), then train_flag, then
 * own(o, flag, value) (0, or the exit status of a bad value). 0 when all
 * parsed, else the exit status. */
static int parse_flags(const char *C, int argc, char **argv, const char *const *known, const train_flags *t,
                       int (*own)(void *o, const char *a, const char *val), void *o) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--quiet")) { *t->progress = 0; continue; }
        int ok = !known && !strncmp(a, "--", 2);
        for (int k = 0; known && known[k]; k++) ok |= !strcmp(a, known[k]);
        if (!ok) return bad(C, a, "unknown option");
        if (!val) return bad(C, a, "needs a value");
        int rc = train_flag(C, t, a, val);
        if (rc < 0) rc = own(o, a, val);
        if (rc) return rc;
        i++;
    }
    return 0;
}

/* Before a training run: the required flags (flag, value pairs, NULL
 * after the last) refused by name when missing; then the command line
 * for the run's row (malloc'ed: train_end frees it) and Ctrl-C handled
 * from here on (t->stop). 0, or the exit status. */
static int train_begin(const char *C, const char *const *required, int argc0, char **argv0, const train_flags *t) {
    for (int k = 0; required[k]; k += 2)
        if (!required[k + 1]) return bad(C, required[k], "is required");
    *t->command_line = join_args(argc0, argv0);
    *t->stop = &g_stop;
    install_stop_handler();
    return 0;
}

/* After a training run: frees command_line; a failure (exit 1) or an
 * interruption (exit 130, with how to resume) is said here. -1 when the
 * run finished: the caller prints its summary and exits 0. */
static int train_end(const char *C, gx_status s, const gx_err *err, const char *command_line, int64_t run_id,
                     int epochs_done, int interrupted) {
    free((char *)command_line);
    if (s != GX_OK) return failed(C, err);
    if (interrupted) {
        printf("run %lld: interrupted after %d complete epochs; continue with --resume %lld\n",
               (long long)run_id, epochs_done, (long long)run_id);
        return 130;
    }
    return -1;
}

/* Flags of `wavelet-mamba` that take a value (--quiet and --help do not). */
static const char *const wm_flags[] = { "--data", "--db", "--out", "--config", "--size", "--epochs", "--batch",
                                        "--accum", "--seed", "--resume", "--set", NULL };

/* A `wavelet-mamba` flag that train_flag does not take; 0 or the exit
 * status of a bad value. */
static int wm_flag(void *opts, const char *a, const char *val) {
    const char *C = "wavelet-mamba";
    gx_train_wm_opts *o = opts;
    long long v;
    if (!strcmp(a, "--size")) {
        if (!parse_ll(val, 8, 1024, &v)) return bad(C, a, "must be an integer in [8, 1024]");
        o->model.size = v;
    } else if (!strcmp(a, "--accum")) {
        if (!parse_ll(val, 1, 1 << 20, &v)) return bad(C, a, "must be a positive integer");
        o->accum = (int)v;
    }
    return 0;                          /* --config: taken by the first pass */
}

static gx_status wm_set(void *o, const char *key, const char *value, gx_err *err) {
    return gx_train_wm_set(o, key, value, err);
}

/* Flags of `cf-inn` that take a value (--quiet and --help do not). */
static const char *const cf_flags[] = { "--data", "--db", "--out", "--config", "--size", "--epochs", "--batch",
                                        "--seed", "--judge", "--init", "--resume", "--set", NULL };

/* A `cf-inn` flag that train_flag does not take; 0 or the exit status of
 * a bad value. */
static int cf_flag(void *opts, const char *a, const char *val) {
    const char *C = "cf-inn";
    gx_train_cf_opts *o = opts;
    long long v;
    if (!strcmp(a, "--judge")) o->judge = val;
    else if (!strcmp(a, "--init")) o->init = val;
    else if (!strcmp(a, "--size")) {
        if (!parse_ll(val, 16, 1024, &v) || (v & (v - 1)))
            return bad(C, a, "must be 16, 32, 64, ... 1024");
        o->model.size = v;
    }
    return 0;                          /* --config: taken by the first pass */
}

static gx_status cf_set(void *o, const char *key, const char *value, gx_err *err) {
    return gx_train_cf_set(o, key, value, err);
}

/* `wavelet-mamba` (is_cf 0) and `cf-inn` (1): one command around two
 * trainers whose options and own flags differ, not the parsing, the checks
 * or what is printed. */
static int cmd_train(int is_cf, gx_device dev, int tf32, int argc, char **argv, int argc0, char **argv0) {
    const char *C = is_cf ? "cf-inn" : "wavelet-mamba", *config = "default";
    int rc = first_pass(C, argc, argv, is_cf ? usage_cf : usage_wm, "--config", take_name, &config);
    if (rc >= 0) return rc;
    gx_train_wm_opts wo;
    gx_train_cf_opts co;
    gx_err err;
    gx_status s = is_cf ? gx_train_cf_opts_default(&co, config, &err) : gx_train_wm_opts_default(&wo, config, &err);
    if (s != GX_OK) return bad(C, "--config", err.msg);
    wo.device = co.device = dev;
    wo.tf32 = co.tf32 = tf32;
    train_flags tf = is_cf ? (train_flags){ &co.data, &co.db_path, &co.out_dir, &co.epochs, &co.batch, &co.seed,
                                            &co.resume_run, &co.progress, &co.command_line, &co.stop, cf_set, &co }
                           : (train_flags){ &wo.data, &wo.db_path, &wo.out_dir, &wo.epochs, &wo.batch, &wo.seed,
                                            &wo.resume_run, &wo.progress, &wo.command_line, &wo.stop, wm_set, &wo };
    rc = is_cf ? parse_flags(C, argc, argv, cf_flags, &tf, cf_flag, &co)
               : parse_flags(C, argc, argv, wm_flags, &tf, wm_flag, &wo);
    const char *req[] = { "--data", *tf.data, "--db", *tf.db, "--out", *tf.out, NULL };
    if (rc || (rc = train_begin(C, req, argc0, argv0, &tf))) return rc;
    int64_t run_id;
    int epochs_done, best_epoch, interrupted;
    double best_acc, ips;
    if (is_cf) {
        gx_train_cf_result r;
        s = gx_train_cf(&co, &r, &err);
        run_id = r.run_id; epochs_done = r.epochs_done; best_epoch = r.best_epoch; interrupted = r.interrupted;
        best_acc = r.best_val_accuracy; ips = r.images_per_s;
    } else {
        gx_train_wm_result r;
        s = gx_train_wm(&wo, &r, &err);
        run_id = r.run_id; epochs_done = r.epochs_done; best_epoch = r.best_epoch; interrupted = r.interrupted;
        best_acc = r.best_val_accuracy; ips = r.images_per_s;
    }
    if ((rc = train_end(C, s, &err, *tf.command_line, run_id, epochs_done, interrupted)) >= 0) return rc;
    printf("run %lld: %d epochs, best val accuracy %.4f (epoch %d), %.1f images/s\n",
           (long long)run_id, epochs_done, best_acc, best_epoch + 1, ips);
    return 0;
}

static void usage_uda(FILE *f) {
    fprintf(f,
        "usage: galaxy-train uda --source S --target T --db runs.sqlite --out DIR [options]\n"
        "\n"
        "Trains DeepAstroUDA (spec/uda.md): labelled source survey S, unlabelled target\n"
        "survey T (its labels only evaluate), domain-specific batch norm, cosine head,\n"
        "weighted CE + lambda (adaptive clustering + entropy separation) with the active\n"
        "tuner, SGD Nesterov with inverse decay, 36 + 36 images per step, early stopping\n"
        "on source-validation accuracy. Classes of T not in --known are \"unknown\" (the\n"
        "anomalies). Per epoch: losses, rho/margin and the tuner, source/target test\n"
        "accuracy, macro P/R/F1, known/unknown accuracy and anomaly AUC into the database;\n"
        "DIR/last.safetensors, DIR/best.safetensors (anomaly_threshold = the tuned rho)\n"
        "and DIR/train_state.safetensors (for --resume).\n"
        "\n"
        "  --source PATH      labelled dataset (HDF5 file, folder, or CSV)\n"
        "  --target PATH      unlabelled dataset\n"
        "  --db FILE          metrics database (created if absent)\n"
        "  --out DIR          checkpoint directory (created if absent)\n"
        "  --backbone B       tiny | resnet18 | resnet50 (default resnet18; tiny is 32x32)\n"
        "  --known LIST       known classes in label order: ids or names, '+' groups,\n"
        "                     optional names: spiral=5+6+7,elliptical=2+3 (default: all\n"
        "                     source classes)\n"
        "  --exclude LIST     classes dropped from both domains (e.g. 0,4,8,9)\n"
        "  --lambda X         weight of AC + ES (default 0.005; 0 = no-adaptation baseline)\n"
        "  --epochs N         epochs (default 100; early stopping after 12 without gain)\n"
        "  --seed S           seed of init, splits, sampling, augmentation (default 1)\n"
        "  --set KEY=VALUE    any option by name (repeatable): batch_source, batch_target,\n"
        "                     lr_backbone, lr_head, momentum, weight_decay, decay_epochs,\n"
        "                     patience, ac_max_slots, size, crop_frac, augment, max_source,\n"
        "                     max_target, eval_batch, threads, experiment=NAME (report label)\n"
        "  --resume RUN_ID    continue run RUN_ID from DIR/train_state.safetensors\n"
        "  --device cpu|cuda|auto  where to train (default cpu; cuda/auto: GPU 0 when usable)\n"
        "  --quiet            no progress output\n"
        "  --help             this text\n");
}

static void usage_score(FILE *f) {
    fprintf(f,
        "usage: galaxy-train score --model CKPT --data FILE.h5|DIR --db FILE [options]\n"
        "\n"
        "Scores every image of a dataset with a uda checkpoint into the anomaly store\n"
        "(objects + anomaly_scores, as galaxyd's /v1/anomaly routes read them): score =\n"
        "H / ln K, is_anomaly = H > rho. Object id \"<file name>:<index>\"; image hash =\n"
        "sha256 of the file (folders) or of the stored uint8 pixels (HDF5). Resumable: a\n"
        "re-run skips every object already scored by this checkpoint.\n"
        "\n"
        "  --model FILE       a checkpoint written by galaxy-train uda\n"
        "  --data PATH        dataset (HDF5 file, folder, or CSV)\n"
        "  --db FILE          database (created if absent)\n"
        "  --survey NAME      survey stored with every score (default: from the file's\n"
        "                     domain column, else none)\n"
        "  --domain D         source | target: the batch-norm set (default target)\n"
        "  --batch N          images per forward pass and per transaction (default 64)\n"
        "  --device cpu|cuda|auto  where to score (default cpu; cuda/auto: GPU 0 when usable)\n"
        "  --quiet            no progress line\n"
        "  --help             this text\n");
}

/* A `uda` flag that train_flag does not take; 0 or the exit status. */
static int uda_flag(void *opts, const char *a, const char *val) {
    const char *C = "uda";
    gx_train_uda_opts *o = opts;
    gx_err err;
    if (!strcmp(a, "--source")) o->source = val;
    else if (!strcmp(a, "--target")) o->target = val;
    else if (!strcmp(a, "--known")) o->known = val;
    else if (!strcmp(a, "--exclude")) o->exclude = val;
    else if (!strcmp(a, "--backbone")) { /* handled first */ }
    else if (!strcmp(a, "--lambda") || !strcmp(a, "--epochs") || !strcmp(a, "--seed")) {
        if (gx_train_uda_set(o, a + 2, val, &err) != GX_OK) return bad(C, a, err.msg);
        if (o->lambda < 0 || o->epochs < 1) return bad(C, a, "out of range");
    } else if (!strcmp(a, "--set")) {
        char kv[256], *value = split_set(C, val, kv);
        if (!value) return 2;
        /* experiment=NAME keeps a pointer: into argv, not kv. */
        if (!strcmp(kv, "experiment")) o->experiment = strchr(val, '=') + 1;
        else if (gx_train_uda_set(o, kv, value, &err) != GX_OK) return bad(C, "--set", err.msg);
    } else {
        return bad(C, a, "unknown option");
    }
    return 0;
}

static int take_backbone(void *o, const char *val) {
    gx_err err;
    if (gx_train_uda_backbone(o, val, &err) != GX_OK) return bad("uda", "--backbone", err.msg);
    return 0;
}

static int cmd_uda(gx_device dev, int tf32, int argc, char **argv, int argc0, char **argv0) {
    const char *C = "uda";
    gx_train_uda_opts o;
    gx_err err;
    gx_train_uda_opts_default(&o);
    o.device = dev;
    o.tf32 = tf32;
    /* --backbone first: it sets the model that --set size overrides. */
    int rc = first_pass(C, argc, argv, usage_uda, "--backbone", take_backbone, &o);
    if (rc >= 0) return rc;
    /* --epochs and --seed go through the --set table (their own bounds). */
    train_flags tf = { .db = &o.db_path, .out = &o.out_dir, .resume = &o.resume_run, .progress = &o.progress,
                       .command_line = &o.command_line, .stop = &o.stop };
    if ((rc = parse_flags(C, argc, argv, NULL, &tf, uda_flag, &o))) return rc;
    const char *req[] = { "--source", o.source, "--target", o.target, "--db", o.db_path, "--out", o.out_dir, NULL };
    if ((rc = train_begin(C, req, argc0, argv0, &tf))) return rc;
    gx_train_uda_result r;
    gx_status s = gx_train_uda(&o, &r, &err);
    if ((rc = train_end(C, s, &err, o.command_line, r.run_id, r.epochs_done, r.interrupted)) >= 0) return rc;
    printf("run %lld: %d epochs%s, best source val accuracy %.4f (epoch %d), rho %.4f, margin %.4f\n",
           (long long)r.run_id, r.epochs_done, r.early_stopped ? " (early stop)" : "", r.best_val_accuracy,
           r.best_epoch + 1, r.rho, r.margin);
    return 0;
}

static int cmd_score(gx_device dev, int tf32, int argc, char **argv) {
    const char *C = "score";
    gx_score_opts o = { .domain = GX_UDA_TARGET, .batch = 64, .progress = -1, .print = stdout, .device = dev,
                        .tf32 = tf32 };
    long long v;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { usage_score(stdout); return 0; }
        if (!strcmp(a, "--quiet")) { o.progress = 0; continue; }
        if (strcmp(a, "--model") && strcmp(a, "--data") && strcmp(a, "--db") && strcmp(a, "--survey") &&
            strcmp(a, "--domain") && strcmp(a, "--batch"))
            return bad(C, a, "unknown option");
        if (!val) return bad(C, a, "needs a value");
        if (!strcmp(a, "--model")) o.model_path = val;
        else if (!strcmp(a, "--data")) o.data = val;
        else if (!strcmp(a, "--db")) o.db_path = val;
        else if (!strcmp(a, "--survey")) o.survey = val;
        else if (!strcmp(a, "--domain")) {
            if (!strcmp(val, "source")) o.domain = GX_UDA_SOURCE;
            else if (!strcmp(val, "target")) o.domain = GX_UDA_TARGET;
            else return bad(C, a, "must be source or target");
        } else {
            if (!parse_ll(val, 1, 4096, &v)) return bad(C, a, "must be an integer in [1, 4096]");
            o.batch = (int)v;
        }
        i++;
    }
    if (!o.model_path) return bad(C, "--model", "is required");
    if (!o.data) return bad(C, "--data", "is required");
    if (!o.db_path) return bad(C, "--db", "is required");
    gx_score_result r;
    gx_err err;
    return gx_uda_score(&o, &r, &err) == GX_OK ? 0 : failed(C, &err);
}

static void usage_two_models(FILE *f) {
    fprintf(f,
        "usage: galaxy-train two-models --data PATH --db runs.sqlite --out DIR [options]\n"
        "\n"
        "The two-models checks of spec/morphology.md: trains CF-INN models A and B\n"
        "(galaxy-train cf-inn, same config, seeds S and S+1) on disjoint halves of the\n"
        "training part of one seeded split, then runs the memorisation, A-vs-B,\n"
        "inversion and morphology checks and the counterfactual realism check. Every\n"
        "number goes into the database (run of kind two-models, histograms table) and\n"
        "DIR/report.md (+ PNG histograms) says, with numbers, whether the memorisation\n"
        "and inversion tests pass. A/ and B/ in DIR hold the two trainings.\n"
        "\n"
        "  --data PATH        dataset (Galaxy10 HDF5, folder with catalog.csv, galaxy-synth file)\n"
        "  --db FILE          SQLite database (created if absent)\n"
        "  --out DIR          output directory (created if absent)\n"
        "  --config NAME      CF-INN config: tiny | default (default tiny)\n"
        "  --epochs N         epochs per model (default: the cf-inn trainer's)\n"
        "  --batch N          batch size (default: the cf-inn trainer's)\n"
        "  --seed S           split seed; A trains with S, B with S+1 (default 1)\n"
        "  --n-train N        use the first N training images (halves of N/2); 0 = all\n"
        "  --n-gen N          generated samples per model and check (default 200)\n"
        "  --n-mem-train N    training images searched per model by the memorisation\n"
        "                     test (default 0 = the whole half)\n"
        "  --n-real N         held-out real images for the morphology checks (default 300)\n"
        "  --set key=value    a cf-inn trainer option for both models (repeatable)\n"
        "  --reuse            load DIR/A and DIR/B's last.safetensors when present instead\n"
        "                     of training again (rerun the checks alone; same data options)\n"
        "  --quiet            no progress lines\n"
        "  --help             this text\n");
}

static int cmd_two_models(gx_device dev, int tf32, int argc, char **argv, int argc0, char **argv0) {
    const char *C = "two-models";
    gx_two_models_opts o;
    gx_two_models_opts_default(&o);
    o.device = dev;
    o.tf32 = tf32;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        long long v;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { usage_two_models(stdout); return 0; }
        if (!strcmp(a, "--quiet")) { o.progress = 0; continue; }
        if (!strcmp(a, "--reuse")) { o.reuse = 1; continue; }
        if (!val) return bad(C, a, strncmp(a, "--", 2) ? "unknown argument" : "needs a value (or is unknown)");
        if (!strcmp(a, "--data")) o.data = val;
        else if (!strcmp(a, "--db")) o.db_path = val;
        else if (!strcmp(a, "--out")) o.out_dir = val;
        else if (!strcmp(a, "--config")) o.config_name = val;
        else if (!strcmp(a, "--set")) {
            if (o.n_sets >= GX_TM_MAX_SETS) return bad(C, a, "given too many times");
            o.sets[o.n_sets++] = val;
        } else if (!strcmp(a, "--seed")) {
            if (!parse_ll(val, 0, LLONG_MAX, &v)) return bad(C, a, "must be an integer >= 0");
            o.seed = (uint64_t)v;
        } else {
            struct { const char *flag; long long lo, hi; } num[] = {
                { "--epochs", 1, 100000 }, { "--batch", 2, 65536 }, { "--n-train", 0, LLONG_MAX },
                { "--n-gen", 2, 1000000 }, { "--n-mem-train", 0, LLONG_MAX }, { "--n-real", 2, 1000000 },
            };
            int k = -1;
            for (int j = 0; j < (int)(sizeof num / sizeof num[0]); j++)
                if (!strcmp(a, num[j].flag)) k = j;
            if (k < 0) return bad(C, a, "unknown option");
            if (!parse_ll(val, num[k].lo, num[k].hi, &v)) return bad(C, a, "is not an integer in range");
            if (k == 0) o.epochs = (int)v;
            else if (k == 1) o.batch = (int)v;
            else if (k == 2) o.n_train = v;
            else if (k == 3) o.n_gen = (int)v;
            else if (k == 4) o.n_mem_train = (int)(v > INT_MAX ? INT_MAX : v);
            else o.n_real = (int)v;
        }
        i++;
    }
    if (!o.data) return bad(C, "--data", "is required");
    if (!o.db_path) return bad(C, "--db", "is required");
    if (!o.out_dir) return bad(C, "--out", "is required");
    char *cl = join_args(argc0, argv0);
    o.command_line = cl;
    gx_two_models_result r;
    gx_err err;
    gx_status s = gx_two_models_run(&o, &r, &err);
    free(cl);
    if (s != GX_OK) return failed(C, &err);
    printf("run %lld (models: runs %lld and %lld, %lld images each): memorisation %s (copies A %.1f%%, B %.1f%%), "
           "inversion %s (A rms %.3f, B median W1 %.3f); report %s\n", (long long)r.run_id, (long long)r.run_a,
           (long long)r.run_b, (long long)r.half_n, r.mem_pass ? "pass" : "fail", 100 * r.mem_frac_a,
           100 * r.mem_frac_b, r.inv_pass ? "pass" : "fail", r.inv_rms_a, r.inv_w1x_b_median, r.report_path);
    return 0;
}

/* The flags `eval` and `bundle` take for cf-inn checkpoints only. */
typedef struct { const char *judge, *grid; long long cf_n, split_seed; int any; } cf_eval_flags;

static int cf_eval_flag(const char *a) {
    return !strcmp(a, "--judge") || !strcmp(a, "--cf-n") || !strcmp(a, "--split-seed") || !strcmp(a, "--grid");
}

static int cf_eval_value(const char *C, const char *a, const char *val, cf_eval_flags *cf) {
    cf->any = 1;
    if (!strcmp(a, "--judge")) cf->judge = val;
    else if (!strcmp(a, "--grid")) cf->grid = val;
    else if (!strcmp(a, "--cf-n")) {
        if (!parse_ll(val, 0, LLONG_MAX, &cf->cf_n)) return bad(C, a, "must be an integer >= 0 (0: every test image)");
    } else if (!parse_ll(val, 0, LLONG_MAX, &cf->split_seed)) {
        return bad(C, a, "must be an integer >= 0");
    }
    return 0;
}

/* Dispatch on the checkpoint's metadata "model": *is_cf for "cf-inn"; the
 * cf-only flags on another kind, or wm-only ones (wm_only) on a cf-inn
 * checkpoint, are refused by name. */
static int cf_dispatch(const char *C, const char *ckpt, const cf_eval_flags *cf, int wm_only, int *is_cf) {
    char kind[64];
    gx_err err;
    if (gx_checkpoint_model_kind(ckpt, kind, sizeof kind, &err) != GX_OK) return failed(C, &err);
    *is_cf = !strcmp(kind, "cf-inn");
    if (*is_cf && wm_only) return bad(C, "--sizes", "--sizes (and eval's --all) are for wavelet-mamba checkpoints");
    if (!*is_cf && cf->any)
        return bad(C, "--judge", "--judge, --cf-n, --split-seed and --grid are for cf-inn checkpoints");
    return 0;
}

/* What `eval` and `bundle` parse: bundle takes --out where eval takes
 * --db and --all. */
typedef struct eval_args {
    const char *checkpoint, *data, *db, *out;
    int sizes[GX_TRAIN_MAX_SIZES], n_sizes, batch, all;
    cf_eval_flags cf;
} eval_args;

/* -1 to go on with e, else the exit status (0 after --help). */
static int eval_parse(const char *C, int bundle, int argc, char **argv, eval_args *e) {
    memset(e, 0, sizeof *e);
    e->batch = 64;
    e->cf = (cf_eval_flags){ NULL, NULL, 0, -1, 0 };
    const char *own = bundle ? "--out" : "--db";
    long long v;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { (bundle ? usage_bundle : usage_eval)(stdout); return 0; }
        if (!bundle && !strcmp(a, "--all")) { e->all = 1; continue; }
        if (strcmp(a, "--checkpoint") && strcmp(a, "--data") && strcmp(a, own) &&
            strcmp(a, "--batch") && strcmp(a, "--sizes") && !cf_eval_flag(a))
            return bad(C, a, "unknown option");
        if (!val) return bad(C, a, "needs a value");
        if (cf_eval_flag(a)) {
            int rc = cf_eval_value(C, a, val, &e->cf);
            if (rc) return rc;
        } else if (!strcmp(a, "--checkpoint")) e->checkpoint = val;
        else if (!strcmp(a, "--data")) e->data = val;
        else if (!strcmp(a, "--db")) e->db = val;
        else if (!strcmp(a, "--out")) e->out = val;
        else if (!strcmp(a, "--batch")) {
            if (!parse_ll(val, 1, 1 << 20, &v)) return bad(C, a, "must be a positive integer");
            e->batch = (int)v;
        } else {
            const char *why;
            if (!parse_sizes(val, e->sizes, &e->n_sizes, &why)) return bad(C, a, why);
        }
        i++;
    }
    if (!e->checkpoint) return bad(C, "--checkpoint", "is required");
    if (!e->data) return bad(C, "--data", "is required");
    if (bundle && !e->out) return bad(C, "--out", "is required");
    return -1;
}

static int cmd_eval(gx_device dev, int tf32, int argc, char **argv) {
    const char *C = "eval";
    eval_args e;
    int is_cf = 0, rc = eval_parse(C, 0, argc, argv, &e);
    if (rc >= 0) return rc;
    if ((rc = cf_dispatch(C, e.checkpoint, &e.cf, e.n_sizes > 0 || e.all, &is_cf))) return rc;
    gx_err err;
    gx_status s;
    if (is_cf) {
        gx_eval_cf_opts eo;
        gx_eval_cf_opts_default(&eo);
        eo.checkpoint = e.checkpoint; eo.data = e.data; eo.db_path = e.db; eo.batch = e.batch;
        eo.judge = e.cf.judge; eo.cf_n = e.cf.cf_n; eo.split_seed = e.cf.split_seed; eo.grid_path = e.cf.grid;
        eo.print = stdout;
        eo.device = dev;
        eo.tf32 = tf32;
        gx_eval_cf_result cr;
        s = gx_eval_cf(&eo, &cr, &err);
    } else {
        gx_eval_wm_opts o = { .checkpoint = e.checkpoint, .data = e.data, .db_path = e.db, .n_sizes = e.n_sizes,
                              .batch = e.batch, .all = e.all, .print = stdout, .device = dev, .tf32 = tf32 };
        memcpy(o.sizes, e.sizes, sizeof o.sizes);
        gx_eval_wm_result r;
        s = gx_eval_wm(&o, &r, &err);
    }
    return s == GX_OK ? 0 : failed(C, &err);
}

static int cmd_bundle(gx_device dev, int tf32, int argc, char **argv) {
    const char *C = "bundle";
    eval_args e;
    int is_cf = 0, rc = eval_parse(C, 1, argc, argv, &e);
    if (rc >= 0) return rc;
    if ((rc = cf_dispatch(C, e.checkpoint, &e.cf, e.n_sizes > 0, &is_cf))) return rc;
    gx_err err;
    gx_status s;
    if (is_cf) {
        gx_cf_bundle_opts bo = { .checkpoint = e.checkpoint, .data = e.data, .out = e.out, .judge = e.cf.judge,
                                 .cf_n = e.cf.cf_n, .split_seed = e.cf.split_seed, .batch = e.batch,
                                 .grid_path = e.cf.grid, .print = stdout, .device = dev, .tf32 = tf32 };
        s = gx_cf_bundle_write(&bo, NULL, &err);
    } else {
        gx_bundle_opts o = { .checkpoint = e.checkpoint, .data = e.data, .out = e.out, .n_sizes = e.n_sizes,
                             .batch = e.batch, .print = stdout, .device = dev, .tf32 = tf32 };
        memcpy(o.sizes, e.sizes, sizeof o.sizes);
        s = gx_bundle_write(&o, NULL, &err);
    }
    return s == GX_OK ? 0 : failed(C, &err);
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
                fprintf(stderr, "galaxy-train report: --kind: unknown kind '%s' (bias, compare, uda or two-models)\n", val);
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
    gx_tool_prefer_passive_omp(argv);
    const char *device = gx_tool_take_device(&argc, argv);
    int tf32 = gx_tool_take_tf32(&argc, argv);
    const char *cmd = argc >= 2 ? argv[1] : "";
    /* The three trainers (two-models' two CF-INN runs too), score, eval and
     * bundle run on the device; report on the CPU, and its line says so. */
    int trains = !strcmp(cmd, "wavelet-mamba") || !strcmp(cmd, "cf-inn") || !strcmp(cmd, "uda");
    const char *note = trains ? "training and validation on the device"
                     : !strcmp(cmd, "score") ? "scoring on the device"
                     : !strcmp(cmd, "eval") || !strcmp(cmd, "bundle") ? "evaluation on the device"
                     : !strcmp(cmd, "two-models") ? "the two models train on the device, the checks on the CPU"
                     : NULL;
    gx_device dev = GX_DEVICE_CPU;
    /* Only an explicit --device prints its line: the default is the CPU. */
    if (device && gx_tool_device_report("galaxy-train", device, note, &dev, stderr)) return 2;
    tf32 = gx_tool_tf32_report("galaxy-train", tf32, dev, "the command runs on the CPU", stderr);
    if (argc < 2) { usage_main(stderr); return 2; }
    if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) { usage_main(stdout); return 0; }
    if (!strcmp(cmd, "wavelet-mamba")) return cmd_train(0, dev, tf32, argc - 1, argv + 1, argc, argv);
    if (!strcmp(cmd, "cf-inn")) return cmd_train(1, dev, tf32, argc - 1, argv + 1, argc, argv);
    if (!strcmp(cmd, "uda")) return cmd_uda(dev, tf32, argc - 1, argv + 1, argc, argv);
    if (!strcmp(cmd, "score")) return cmd_score(dev, tf32, argc - 1, argv + 1);
    if (!strcmp(cmd, "two-models")) return cmd_two_models(dev, tf32, argc - 1, argv + 1, argc, argv);
    if (!strcmp(cmd, "eval")) return cmd_eval(dev, tf32, argc - 1, argv + 1);
    if (!strcmp(cmd, "bundle")) return cmd_bundle(dev, tf32, argc - 1, argv + 1);
    if (!strcmp(cmd, "report")) return cmd_report(argc - 1, argv + 1);
    fprintf(stderr, "galaxy-train: unknown command '%s' (wavelet-mamba, cf-inn, uda, score, eval, bundle, report, two-models; see --help)\n", cmd);
    return 2;
}
