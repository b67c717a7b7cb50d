/*
 * gx_votable.c — the VOTable 1.4 TABLEDATA writer (contract in gx_votable.h).
 *
 * State machine: begin (header, RESOURCE, TABLE, DESCRIPTION) -> info* ->
 * [first row or end: FIELDs, DATA, TABLEDATA] -> rows -> end. A misuse does
 * not stop the output (the caller streams into a FILE and checks once, at
 * the end) but is remembered, and gx_vot_end fails with the first one, so a
 * broken document is never answered as if it were valid.
 */
#include "gx_votable.h"

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <string.h>

static const char *const vot_type_names[] = { "char", "int", "long", "double", "boolean" };

/* Remembers the first misuse (later ones are usually its consequences). */
static void vot_fail(gx_vot *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void vot_fail(gx_vot *w, const char *fmt, ...) {
    if (w->status != GX_OK) return;
    w->status = GX_ERR_INVALID;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(w->error, sizeof w->error, fmt, ap);
    va_end(ap);
}

/* Length of the well-formed UTF-8 sequence at s (1..4), 0 when it is not
 * one (overlong forms, surrogates and code points above U+10FFFF count as
 * malformed: XML parsers reject them). */
static int vot_utf8_len(const unsigned char *s) {
    unsigned c = s[0];
    int n = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC2 ? 2 : 0;
    if (c >= 0xF5 || n == 0) return 0;
    for (int i = 1; i < n; i++)
        if ((s[i] & 0xC0) != 0x80) return 0;
    if (n == 3 && ((c == 0xE0 && s[1] < 0xA0) || (c == 0xED && s[1] >= 0xA0))) return 0;
    if (n == 4 && ((c == 0xF0 && s[1] < 0x90) || (c == 0xF4 && s[1] >= 0x90))) return 0;
    return n;
}

void gx_vot_escape(FILE *f, const char *s) {
    const unsigned char *p = (const unsigned char *)(s ? s : "");
    while (*p) {
        unsigned c = *p;
        if (c >= 0x80) {
            int n = vot_utf8_len(p);
            if (n) fwrite(p, 1, (size_t)n, f);
            else fputc('?', f);
            p += n ? n : 1;
            continue;
        }
        switch (c) {
        case '&':  fputs("&amp;", f); break;
        case '<':  fputs("&lt;", f); break;
        case '>':  fputs("&gt;", f); break;
        case '"':  fputs("&quot;", f); break;
        case '\'': fputs("&apos;", f); break;
        default:
            /* XML 1.0 has no way to write other control characters, not
             * even as character references. */
            fputc(c < 0x20 && c != '\t' && c != '\n' && c != '\r' ? '?' : (int)c, f);
        }
        p++;
    }
}

/* name="value" with the value escaped (nothing when value is NULL). */
static void vot_attr(FILE *f, const char *name, const char *value) {
    if (!value) return;
    fprintf(f, " %s=\"", name);
    gx_vot_escape(f, value);
    fputc('"', f);
}

void gx_vot_begin(gx_vot *w, FILE *f, const char *table_name, const char *description,
                  const gx_vot_field *fields, int n_fields) {
    memset(w, 0, sizeof *w);
    w->f = f, w->fields = fields, w->n_fields = n_fields;
    if (!f || !fields || n_fields < 1) {
        vot_fail(w, "votable: no output or no fields");
        return;
    }
    for (int i = 0; i < n_fields; i++)
        if (!fields[i].name || !fields[i].name[0] || (unsigned)fields[i].type > GX_VOT_BOOLEAN)
            vot_fail(w, "votable: field %d has no name or a bad datatype", i);
    fputs("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
          "<VOTABLE version=\"1.4\" xmlns=\"" GX_VOT_NS "\""
          " xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\""
          " xsi:schemaLocation=\"" GX_VOT_NS " http://www.ivoa.net/xml/VOTable/votable-1.4.xsd\">\n"
          " <RESOURCE type=\"results\">\n"
          "  <INFO name=\"QUERY_STATUS\" value=\"OK\"/>\n"
          "  <TABLE", f);
    vot_attr(f, "name", table_name);
    fputs(">\n", f);
    if (description) {
        fputs("   <DESCRIPTION>", f);
        gx_vot_escape(f, description);
        fputs("</DESCRIPTION>\n", f);
    }
}

void gx_vot_info(gx_vot *w, const char *name, const char *value) {
    if (w->in_data) {
        vot_fail(w, "votable: INFO '%.64s' after the first row", name ? name : "");
        return;
    }
    if (!name || !value) {
        vot_fail(w, "votable: INFO without a name or value");
        return;
    }
    fputs("   <INFO", w->f);
    vot_attr(w->f, "name", name);
    vot_attr(w->f, "value", value);
    fputs("/>\n", w->f);
}

/* The FIELDs and the opening of DATA, once. */
static void vot_open_data(gx_vot *w) {
    if (w->in_data || !w->f || !w->fields) return;
    for (int i = 0; i < w->n_fields; i++) {
        const gx_vot_field *fd = &w->fields[i];
        unsigned t = (unsigned)fd->type <= GX_VOT_BOOLEAN ? (unsigned)fd->type : 0;
        fputs("   <FIELD", w->f);
        vot_attr(w->f, "name", fd->name);
        vot_attr(w->f, "datatype", vot_type_names[t]);
        if (fd->type == GX_VOT_CHAR) fputs(" arraysize=\"*\"", w->f);
        vot_attr(w->f, "ucd", fd->ucd);
        vot_attr(w->f, "unit", fd->unit);
        if (fd->description) {
            fputs("><DESCRIPTION>", w->f);
            gx_vot_escape(w->f, fd->description);
            fputs("</DESCRIPTION></FIELD>\n", w->f);
        } else {
            fputs("/>\n", w->f);
        }
    }
    fputs("   <DATA><TABLEDATA>\n", w->f);
    w->in_data = 1;
}

static void vot_close_row(gx_vot *w) {
    if (!w->in_row) return;
    if (w->cell != w->n_fields)
        vot_fail(w, "votable: row %" PRId64 " has %d cells for %d fields", w->rows, w->cell, w->n_fields);
    fputs("</TR>\n", w->f);
    w->in_row = 0;
}

void gx_vot_row(gx_vot *w) {
    if (!w->f || !w->fields) return;
    vot_open_data(w);
    vot_close_row(w);
    fputs("    <TR>", w->f);
    w->in_row = 1, w->cell = 0, w->rows++;
}

/* Checks the next cell's FIELD has one of the given types; 0 = misuse. */
static int vot_cell(gx_vot *w, gx_vot_type a, gx_vot_type b) {
    if (!w->in_row) {
        vot_fail(w, "votable: a cell outside a row");
        return 0;
    }
    if (w->cell >= w->n_fields) {
        vot_fail(w, "votable: row %" PRId64 " has more cells than the %d fields", w->rows, w->n_fields);
        return 0;
    }
    gx_vot_type t = w->fields[w->cell].type;
    if (t != a && t != b) {
        vot_fail(w, "votable: row %" PRId64 " field '%.64s' is %s, written as %s", w->rows,
                 w->fields[w->cell].name, vot_type_names[t], vot_type_names[a]);
        return 0;
    }
    w->cell++;
    return 1;
}

void gx_vot_str(gx_vot *w, const char *s) {
    if (!vot_cell(w, GX_VOT_CHAR, GX_VOT_CHAR)) return;
    fputs("<TD>", w->f);
    if (s) gx_vot_escape(w->f, s);
    fputs("</TD>", w->f);
}

void gx_vot_int(gx_vot *w, int64_t v) {
    if (!vot_cell(w, GX_VOT_INT, GX_VOT_LONG)) return;
    if (w->fields[w->cell - 1].type == GX_VOT_INT && (v < INT32_MIN || v > INT32_MAX))
        vot_fail(w, "votable: %" PRId64 " does not fit the int field '%.64s'", v, w->fields[w->cell - 1].name);
    fprintf(w->f, "<TD>%" PRId64 "</TD>", v);
}

void gx_vot_double(gx_vot *w, double v) {
    if (!vot_cell(w, GX_VOT_DOUBLE, GX_VOT_DOUBLE)) return;
    if (isfinite(v)) fprintf(w->f, "<TD>%.17g</TD>", v);
    else fputs("<TD></TD>", w->f);
}

void gx_vot_bool(gx_vot *w, int v) {
    if (!vot_cell(w, GX_VOT_BOOLEAN, GX_VOT_BOOLEAN)) return;
    fputs(v ? "<TD>T</TD>" : "<TD>F</TD>", w->f);
}

gx_status gx_vot_end(gx_vot *w, gx_err *err) {
    if (w->f && w->fields) {
        vot_open_data(w);
        vot_close_row(w);
        fputs("   </TABLEDATA></DATA>\n  </TABLE>\n </RESOURCE>\n</VOTABLE>\n", w->f);
    }
    if (w->status != GX_OK) return gx_err_set(err, w->status, "%s", w->error);
    if (w->f && ferror(w->f)) return gx_err_set(err, GX_ERR_IO, "votable: writing the document failed");
    return GX_OK;
}
