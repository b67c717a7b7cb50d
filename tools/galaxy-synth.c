/*
 * galaxy-synth — render the synthetic galaxy survey of spec/synth.md into
 * an HDF5 file in the Galaxy10 DECaLS layout (and optionally a FITS + CSV
 * folder and a preview grid PNG).
 *
 * Design: argument parsing and the progress line only; everything else is
 * in synth/ (gx_synth.h). Errors name the bad flag and exit with status 2.
 */
#include "gx_synth.h"

#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void usage(FILE *f) {
    fprintf(f,
        "usage: galaxy-synth --out FILE.h5 --n N --size S --seed SEED [options]\n"
        "\n"
        "Renders N synthetic galaxies (spec/synth.md) into FILE.h5, laid out like\n"
        "Galaxy10_DECals.h5: images NxSxSx3 uint8 (g,r,z), ans, ra, dec, redshift,\n"
        "pxscale, plus domain, spec_selected, mag_r, color_gr, r_eff_arcsec,\n"
        "sersic_n, axis_ratio, position_angle and a 'meta' attribute.\n"
        "\n"
        "  --out FILE.h5        output file (written to FILE.h5.tmp, then renamed)\n"
        "  --n N                number of objects (default 1000)\n"
        "  --size S             cutout side in pixels (default 64)\n"
        "  --seed SEED          random seed (default 0); same seed + flags = same bytes\n"
        "  --survey LIST        comma list of decals,sdss,lsst-y1,lsst-y10 (default decals;\n"
        "                       with --paired or --preview and no --survey: all four)\n"
        "  --classes C          galaxy10 (default) or galaxy10+lens\n"
        "  --balanced           equal class frequencies (default: Galaxy10 DECaLS counts)\n"
        "  --paired             render every object in every listed survey (N x surveys rows)\n"
        "  --fits DIR           also write DIR/NNNNNNN.fits (3 planes g,r,z, float32,\n"
        "                       nanomaggies) and DIR/catalog.csv\n"
        "  --preview FILE.png   grid of 10 examples per class per survey (--out optional)\n"
        "  --z0 X               redshift scale of p(z) ~ z^2 exp(-(z/z0)^1.5) (default 0.18)\n"
        "  --depth-amp X        depth map amplitude in mag (default 0.3)\n"
        "  --no-noise           noiseless images (for tests)\n"
        "  --quiet              no progress line\n"
        "  --help               this text\n");
}

typedef struct { double t0, last; int quiet; } progress_state;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static void progress(int64_t done, int64_t total, void *arg) {
    progress_state *p = arg;
    if (p->quiet) return;
    double t = now_s();
    if (done < total && t - p->last < 0.5) return;   /* at most two updates a second */
    p->last = t;
    double el = t - p->t0, eta = done > 0 ? el * (double)(total - done) / (double)done : 0;
    fprintf(stderr, "\rgalaxy-synth: %lld/%lld rows (%5.1f%%), %.1f s elapsed, ETA %.1f s   ",
            (long long)done, (long long)total, 100.0 * done / total, el, eta);
    if (done == total) fprintf(stderr, "\n");
}

static int bad(const char *flag, const char *why) {
    fprintf(stderr, "galaxy-synth: %s: %s (see --help)\n", flag, why);
    return 2;
}

/* Strict number parsing: the whole argument must be a number. */
static int parse_d(const char *s, double *v) {
    char *e;
    *v = strtod(s, &e);
    return *s && !*e;
}

static int parse_surveys(char *s, gx_synth_opts *o) {
    o->n_surveys = 0;
    for (char *t = strtok(s, ","); t; t = strtok(NULL, ",")) {
        int id = gx_synth_survey_find(t);
        if (id < 0 || o->n_surveys >= GX_SYNTH_NSURVEY) return 0;
        o->surveys[o->n_surveys++] = id;
    }
    return o->n_surveys > 0;
}

int main(int argc, char **argv) {
    gx_synth_opts o;
    gx_synth_opts_default(&o);
    const char *out = NULL, *fits = NULL, *preview = NULL;
    int quiet = 0, survey_given = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { usage(stdout); return 0; }
        if (!strcmp(a, "--balanced")) { o.balanced = 1; continue; }
        if (!strcmp(a, "--paired")) { o.paired = 1; continue; }
        if (!strcmp(a, "--no-noise")) { o.noise = 0; continue; }
        if (!strcmp(a, "--quiet")) { quiet = 1; continue; }
        if (strncmp(a, "--", 2) != 0) return bad(a, "unexpected argument");
        if (i + 1 >= argc) return bad(a, "missing value");
        char *v = argv[++i];
        double d;
        if (!strcmp(a, "--out")) out = v;
        else if (!strcmp(a, "--fits")) fits = v;
        else if (!strcmp(a, "--preview")) preview = v;
        else if (!strcmp(a, "--n")) {
            if (!parse_d(v, &d) || d < 1 || d > 1e9 || d != (int64_t)d) return bad(a, "need an integer 1..1e9");
            o.n = (int64_t)d;
        } else if (!strcmp(a, "--size")) {
            if (!parse_d(v, &d) || d < 8 || d > 1024 || d != (int)d) return bad(a, "need an integer 8..1024");
            o.size = (int)d;
        } else if (!strcmp(a, "--seed")) {
            char *e;
            o.seed = strtoull(v, &e, 10);
            if (!*v || *e || *v == '-') return bad(a, "need a non-negative integer");
        } else if (!strcmp(a, "--survey")) {
            if (!parse_surveys(v, &o)) return bad(a, "need a comma list of decals, sdss, lsst-y1, lsst-y10");
            survey_given = 1;
        } else if (!strcmp(a, "--classes")) {
            if (!strcmp(v, "galaxy10")) o.n_classes = 10;
            else if (!strcmp(v, "galaxy10+lens")) o.n_classes = 11;
            else return bad(a, "need galaxy10 or galaxy10+lens");
        } else if (!strcmp(a, "--z0")) {
            if (!parse_d(v, &d) || d <= 0.01 || d > 2) return bad(a, "need a number in (0.01, 2]");
            o.z0 = d;
        } else if (!strcmp(a, "--depth-amp")) {
            if (!parse_d(v, &d) || d < 0 || d > 3) return bad(a, "need a number in [0, 3]");
            o.depth_amp = d;
        } else return bad(a, "unknown flag");
    }
    if (!out && !preview) return bad("--out", "required (or --preview)");
    if (fits && !out) return bad("--fits", "needs --out");
    if (!survey_given && (o.paired || (preview && !out))) {
        o.n_surveys = GX_SYNTH_NSURVEY;
        for (int s = 0; s < GX_SYNTH_NSURVEY; s++) o.surveys[s] = s;
    }
    char cmd[4096];
    size_t k = 0;
    cmd[0] = 0;
    for (int i = 0; i < argc && k + 2 < sizeof cmd; i++)
        k += (size_t)snprintf(cmd + k, sizeof cmd - k, "%s%s", i ? " " : "", argv[i]);
    if (k >= sizeof cmd) k = sizeof cmd - 1;
    for (size_t j = 0; j < k; j++) if (cmd[j] == '"' || cmd[j] == '\\') cmd[j] = '\'';  /* JSON-safe */
    gx_err err;
    if (preview) {
        gx_synth_opts po = o;
        if (!survey_given) {
            po.n_surveys = GX_SYNTH_NSURVEY;
            for (int s = 0; s < GX_SYNTH_NSURVEY; s++) po.surveys[s] = s;
        }
        if (gx_synth_preview(&po, preview, &err) != GX_OK) { fprintf(stderr, "galaxy-synth: %s\n", err.msg); return 1; }
        if (!quiet) fprintf(stderr, "galaxy-synth: wrote %s\n", preview);
    }
    if (out) {
        progress_state ps = { now_s(), 0, quiet };
        if (gx_synth_write(&o, out, fits, cmd, progress, &ps, &err) != GX_OK) {
            fprintf(stderr, "\ngalaxy-synth: %s\n", err.msg);
            return 1;
        }
        if (!quiet) fprintf(stderr, "galaxy-synth: wrote %s (%d threads)\n", out, omp_get_max_threads());
    }
    return 0;
}
