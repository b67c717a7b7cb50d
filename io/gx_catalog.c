/*
 * gx_catalog.c — the class-name table and the CSV catalogue parser of the
 * folder dataset layout (see gx_dataset.h for the grammar and contract).
 *
 * Design: a small RFC 4180 tokenizer reads one record at a time into a
 * reusable buffer (fields NUL-terminated back to back, plus an offset
 * table), so parsing a catalogue is one pass with no per-field allocation.
 * The header maps column names to positions; each row then fills the
 * growing per-column arrays. The parser works on a memory buffer and holds
 * no global state, which is what lets tests/fuzz/fuzz_csv.c drive it
 * directly. Anything wrong in the input is a GX_ERR_FORMAT whose message
 * names the line (where the record starts) and the column, because a
 * 17000-line catalogue with "bad number" and no line is useless.
 *
 * This file has no HDF5 dependency on purpose: the fuzz target links it
 * with gx_core.c only.
 */
#include "gx_dataset.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ------------------------------------------------------------ classes */

/* Galaxy10 DECaLS class names in file order, then the synthetic Lens class
 * (spec/synth.md "Galaxies"). */
static const char *const gx_class_names[GX_CLASSES_MAX] = {
    "Disturbed", "Merging", "Round Smooth", "In-between Round Smooth",
    "Cigar Shaped Smooth", "Barred Spiral", "Unbarred Tight Spiral",
    "Unbarred Loose Spiral", "Edge-on without Bulge", "Edge-on with Bulge",
    "Lens",
};

const char *gx_class_name(int id) {
    return id >= 0 && id < GX_CLASSES_MAX ? gx_class_names[id] : NULL;
}

/* Folds a name character for comparison: lower case, and the separators
 * ' ', '_', '-' all to ' ' (catalogues write "round_smooth" as often as
 * "Round Smooth"). */
static int gx_class_fold(unsigned char ch) {
    if (ch == '_' || ch == '-') return ' ';
    return tolower(ch);
}

int gx_class_lookup(const char *name) {
    if (!name) return -1;
    while (*name == ' ' || *name == '\t') name++;
    size_t len = strlen(name);
    while (len > 0 && (name[len - 1] == ' ' || name[len - 1] == '\t')) len--;
    for (int id = 0; id < GX_CLASSES_MAX; id++) {
        const char *ref = gx_class_names[id];
        if (strlen(ref) != len) continue;
        size_t k = 0;
        while (k < len && gx_class_fold((unsigned char)ref[k]) ==
                              gx_class_fold((unsigned char)name[k])) k++;
        if (k == len) return id;
    }
    return -1;
}

/* ---------------------------------------------------------- tokenizer */

/* One CSV record: nf fields stored NUL-terminated back to back in buf,
 * field i starting at buf + off[i]. Buffers grow and are reused. */
typedef struct csv_rec {
    char   *buf;  size_t len, cap;
    size_t *off;  int nf, offcap;
    int64_t line;          /* 1-based line where the record starts */
    int quoted_any;        /* some field was quoted (so not a blank line) */
} csv_rec;

typedef struct csv_reader {
    const char *p, *end;
    int64_t line;          /* current 1-based line */
} csv_reader;

static int csv_putc(csv_rec *r, char ch) {
    if (r->len + 1 > r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 256;
        char *nb = realloc(r->buf, cap);
        if (!nb) return 0;
        r->buf = nb; r->cap = cap;
    }
    r->buf[r->len++] = ch;
    return 1;
}

/* Starts a new field at the current end of buf. */
static int csv_field_begin(csv_rec *r) {
    if (r->nf + 1 > r->offcap) {
        int cap = r->offcap ? r->offcap * 2 : 16;
        size_t *no = realloc(r->off, (size_t)cap * sizeof *no);
        if (!no) return 0;
        r->off = no; r->offcap = cap;
    }
    r->off[r->nf++] = r->len;
    return 1;
}

#define CSV_NOMEM(err) gx_err_set(err, GX_ERR_NOMEM, "csv: out of memory")

/* Reads a quoted field body (the opening quote already consumed). */
static gx_status csv_quoted(csv_reader *rd, csv_rec *r, gx_err *err) {
    for (;;) {
        if (rd->p == rd->end)
            return gx_err_set(err, GX_ERR_FORMAT,
                              "csv: line %lld: unterminated quoted field",
                              (long long)r->line);
        char ch = *rd->p++;
        if (ch == '"') {
            if (rd->p < rd->end && *rd->p == '"') rd->p++;   /* "" -> " */
            else return GX_OK;                               /* closing quote */
        } else if (ch == '\n') {
            rd->line++;
        }
        if (ch == 0)
            return gx_err_set(err, GX_ERR_FORMAT, "csv: line %lld: NUL byte",
                              (long long)rd->line);
        if (!csv_putc(r, ch)) return CSV_NOMEM(err);
    }
}

/* Reads the next record into r. *eof = 1 when the input is exhausted and
 * no record was read. */
static gx_status csv_next(csv_reader *rd, csv_rec *r, int *eof, gx_err *err) {
    r->len = 0; r->nf = 0; r->quoted_any = 0; r->line = rd->line;
    *eof = rd->p == rd->end;
    if (*eof) return GX_OK;
    for (;;) {
        if (!csv_field_begin(r)) return CSV_NOMEM(err);
        if (rd->p < rd->end && *rd->p == '"') {
            rd->p++;
            r->quoted_any = 1;
            gx_status s = csv_quoted(rd, r, err);
            if (s != GX_OK) return s;
            if (rd->p < rd->end && *rd->p != ',' && *rd->p != '\r' && *rd->p != '\n')
                return gx_err_set(err, GX_ERR_FORMAT,
                                  "csv: line %lld: field %d: text after closing quote",
                                  (long long)rd->line, r->nf);
        } else {
            while (rd->p < rd->end && *rd->p != ',' && *rd->p != '\r' && *rd->p != '\n') {
                if (*rd->p == 0)
                    return gx_err_set(err, GX_ERR_FORMAT, "csv: line %lld: NUL byte",
                                      (long long)rd->line);
                if (!csv_putc(r, *rd->p++)) return CSV_NOMEM(err);
            }
        }
        if (!csv_putc(r, 0)) return CSV_NOMEM(err);
        if (rd->p < rd->end && *rd->p == ',') { rd->p++; continue; }
        /* End of record: CRLF, LF, a lone CR, or the end of the buffer. */
        if (rd->p < rd->end && *rd->p == '\r') rd->p++;
        if (rd->p < rd->end && *rd->p == '\n') rd->p++;
        rd->line++;
        return GX_OK;
    }
}

/* A blank line parses as one empty unquoted field. */
static int csv_blank(const csv_rec *r) {
    return r->nf == 1 && !r->quoted_any && r->buf[r->off[0]] == 0;
}

static void csv_rec_free(csv_rec *r) { free(r->buf); free(r->off); }

/* --------------------------------------------------------- cell values */

/* Trims blanks in place and returns the start. */
static char *gx_trim(char *s) {
    while (*s == ' ' || *s == '\t') s++;
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t')) s[--n] = 0;
    return s;
}

/* A real number cell: empty or "nan" = missing (NaN); otherwise the whole
 * cell must be a finite decimal number. Returns 1 on success. */
static int gx_parse_real(const char *s, double *v) {
    if (*s == 0 || strcasecmp(s, "nan") == 0) { *v = NAN; return 1; }
    char *end;
    errno = 0;
    double x = strtod(s, &end);
    if (end == s || *end != 0 || errno == ERANGE || !isfinite(x)) return 0;
    *v = x;
    return 1;
}

/* A whole-cell base-10 integer in [lo, hi]. Returns 1 on success. */
static int gx_parse_int(const char *s, long lo, long hi, long *v) {
    if (*s == 0) return 0;
    char *end;
    errno = 0;
    long x = strtol(s, &end, 10);
    if (*end != 0 || errno == ERANGE || x < lo || x > hi) return 0;
    *v = x;
    return 1;
}

/* ------------------------------------------------------------ columns */

enum { COL_FILE, COL_LABEL, COL_RA, COL_DEC, COL_Z, COL_DOMAIN, COL_N };
static const char *const gx_col_names[COL_N] = {
    "file", "label", "ra", "dec", "redshift", "domain"
};

/* Maps the header record to column positions (pos[c] = -1 when absent). */
static gx_status gx_catalog_header(csv_rec *r, int pos[COL_N], gx_err *err) {
    for (int c = 0; c < COL_N; c++) pos[c] = -1;
    for (int f = 0; f < r->nf; f++) {
        const char *name = gx_trim(r->buf + r->off[f]);
        for (int c = 0; c < COL_N; c++) {
            if (strcasecmp(name, gx_col_names[c]) != 0) continue;
            if (pos[c] >= 0)
                return gx_err_set(err, GX_ERR_FORMAT,
                                  "csv: line %lld: duplicate column '%s'",
                                  (long long)r->line, gx_col_names[c]);
            pos[c] = f;
        }
    }
    for (int c = COL_FILE; c <= COL_LABEL; c++)
        if (pos[c] < 0)
            return gx_err_set(err, GX_ERR_FORMAT,
                              "csv: missing column '%s' in header (line %lld)",
                              gx_col_names[c], (long long)r->line);
    return GX_OK;
}

/* Grows every array of the catalogue to hold cap rows. */
static int gx_catalog_reserve(gx_catalog *c, int64_t cap, int has_domain) {
    size_t n = (size_t)cap;
    void *p;
#define GROW(field) \
    do { if (!(p = realloc(c->field, n * sizeof *c->field))) return 0; \
         c->field = p; } while (0);
    GROW(file) GROW(label) GROW(ra) GROW(dec) GROW(redshift) GROW(line)
    if (has_domain) { GROW(domain) }
#undef GROW
    return 1;
}

void gx_catalog_free(gx_catalog *c) {
    if (!c) return;
    if (c->file)
        for (int64_t i = 0; i < c->n; i++) free(c->file[i]);
    free(c->file); free(c->label); free(c->ra); free(c->dec);
    free(c->redshift); free(c->domain); free(c->line);
    memset(c, 0, sizeof *c);
}

#define CELL(col) gx_trim(r->buf + r->off[pos[col]])

/* Parses one data record into row c->n (space already reserved). */
static gx_status gx_catalog_row(csv_rec *r, const int pos[COL_N], int n_classes,
                                gx_catalog *c, gx_err *err) {
    long long ln = (long long)r->line;
    int64_t i = c->n;
    const char *file = CELL(COL_FILE);
    if (*file == 0)
        return gx_err_set(err, GX_ERR_FORMAT, "csv: line %lld: column file: empty", ln);

    const char *lab = CELL(COL_LABEL);
    long id;
    if (!gx_parse_int(lab, -2147483647L, 2147483647L, &id)) {
        id = gx_class_lookup(lab);
        if (id < 0)
            return gx_err_set(err, GX_ERR_FORMAT,
                              "csv: line %lld: column label: unknown class name '%.64s'",
                              ln, lab);
    }
    if (id < 0 || id >= n_classes)
        return gx_err_set(err, GX_ERR_FORMAT,
                          "csv: line %lld: column label: label %ld out of range [0, %d)",
                          ln, id, n_classes);

    double v[3] = { NAN, NAN, NAN };
    for (int k = 0; k < 3; k++) {
        int col = COL_RA + k;
        if (pos[col] < 0) continue;
        const char *s = CELL(col);
        if (!gx_parse_real(s, &v[k]))
            return gx_err_set(err, GX_ERR_FORMAT,
                              "csv: line %lld: column %s: bad number '%.64s'",
                              ln, gx_col_names[col], s);
    }
    long dom = 0;
    if (pos[COL_DOMAIN] >= 0) {
        const char *s = CELL(COL_DOMAIN);
        if (!gx_parse_int(s, 0, 255, &dom))
            return gx_err_set(err, GX_ERR_FORMAT,
                              "csv: line %lld: column domain: bad integer '%.64s' "
                              "(want 0..255)", ln, s);
        c->domain[i] = (uint8_t)dom;
    }
    if (!(c->file[i] = strdup(file))) return CSV_NOMEM(err);
    c->label[i] = (int32_t)id;
    c->ra[i] = v[0]; c->dec[i] = v[1]; c->redshift[i] = v[2];
    c->line[i] = r->line;
    c->n = i + 1;
    return GX_OK;
}

/* Body of gx_catalog_parse; the caller frees on error. */
static gx_status gx_catalog_parse_into(csv_reader *rd, csv_rec *r, int n_classes,
                                       gx_catalog *c, gx_err *err) {
    int eof, pos[COL_N];
    gx_status s;
    do {                                    /* header: first non-blank record */
        if ((s = csv_next(rd, r, &eof, err)) != GX_OK) return s;
        if (eof) return gx_err_set(err, GX_ERR_FORMAT, "csv: empty catalogue (no header)");
    } while (csv_blank(r));
    if ((s = gx_catalog_header(r, pos, err)) != GX_OK) return s;
    int nf = r->nf, has_domain = pos[COL_DOMAIN] >= 0;
    int64_t cap = 0;
    for (;;) {
        if ((s = csv_next(rd, r, &eof, err)) != GX_OK) return s;
        if (eof) break;
        if (csv_blank(r)) continue;
        if (r->nf != nf)
            return gx_err_set(err, GX_ERR_FORMAT,
                              "csv: line %lld: expected %d fields, got %d",
                              (long long)r->line, nf, r->nf);
        if (c->n == cap) {
            cap = cap ? cap * 2 : 64;
            if (!gx_catalog_reserve(c, cap, has_domain)) return CSV_NOMEM(err);
        }
        if ((s = gx_catalog_row(r, pos, n_classes, c, err)) != GX_OK) return s;
    }
    if (c->n == 0)
        return gx_err_set(err, GX_ERR_FORMAT, "csv: catalogue has a header but no rows");
    return GX_OK;
}

gx_status gx_catalog_parse(const char *buf, size_t n, int n_classes,
                           gx_catalog *out, gx_err *err) {
    memset(out, 0, sizeof *out);
    if (!buf && n) return gx_err_set(err, GX_ERR_INVALID, "csv: NULL buffer");
    if (n_classes < 1 || n_classes > GX_CLASSES_MAX)
        return gx_err_set(err, GX_ERR_INVALID, "csv: n_classes %d not in 1..%d",
                          n_classes, GX_CLASSES_MAX);
    csv_reader rd = { buf, buf + n, 1 };
    /* Spreadsheets often save UTF-8 with a byte-order mark. */
    if (n >= 3 && memcmp(buf, "\xEF\xBB\xBF", 3) == 0) rd.p += 3;
    csv_rec r = { 0 };
    gx_status s = gx_catalog_parse_into(&rd, &r, n_classes, out, err);
    csv_rec_free(&r);
    if (s != GX_OK) gx_catalog_free(out);
    return s;
}
