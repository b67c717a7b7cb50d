/*
 * test_votable.c — the VOTable 1.4 writer (daemon/gx_votable.c).
 *
 * Documents are written into memory and checked as text: the exact layout
 * of a small table (header, namespace, version, FIELD attributes, INFO
 * placement before the FIELDs, TD values), XML escaping of every special
 * character, control bytes and invalid UTF-8, NaN/NULL as empty cells, and
 * that every misuse (wrong cell count or type, INFO after a row, an int out
 * of range) makes gx_vot_end fail with a message naming it. The daemon
 * tests parse real answers with Python's XML parser and astropy.
 */
#include "gx_test.h"

#include "gx_votable.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const gx_vot_field vt_fields[] = {
    { "object_id", GX_VOT_CHAR, "meta.id;meta.main", NULL, "the caller's id" },
    { "ra", GX_VOT_DOUBLE, "pos.eq.ra;meta.main", "deg", NULL },
    { "n", GX_VOT_INT, NULL, NULL, NULL },
    { "id", GX_VOT_LONG, "meta.record", NULL, NULL },
    { "flag", GX_VOT_BOOLEAN, "meta.code", NULL, NULL },
};
#define VT_NF 5

typedef struct vt_doc { char *text; size_t n; FILE *f; gx_vot w; } vt_doc;

static void vt_open(vt_doc *d) {
    d->text = NULL, d->n = 0;
    d->f = open_memstream(&d->text, &d->n);
    gx_vot_begin(&d->w, d->f, "t<1>", "a & b", vt_fields, VT_NF);
}

/* Ends the document; returns its status, the text stays in d->text. */
static gx_status vt_close(vt_doc *d, gx_err *err) {
    gx_status s = gx_vot_end(&d->w, err);
    fclose(d->f);
    return s;
}

static int vt_count(const char *hay, const char *needle) {
    int n = 0;
    for (const char *p = strstr(hay, needle); p; p = strstr(p + 1, needle)) n++;
    return n;
}

static void vt_full_row(gx_vot *w, const char *id, double ra, int64_t n, int64_t big, int flag) {
    gx_vot_row(w);
    gx_vot_str(w, id);
    gx_vot_double(w, ra);
    gx_vot_int(w, n);
    gx_vot_int(w, big);
    gx_vot_bool(w, flag);
}

GX_TEST(votable_layout_and_values) {
    vt_doc d;
    vt_open(&d);
    gx_vot_info(&d.w, "next_cursor", "abc\"d");
    vt_full_row(&d.w, "obj-1", 150.25, 7, 9000000000LL, 1);
    vt_full_row(&d.w, NULL, NAN, -3, 1, 0);
    gx_err err = { { 0 } };
    CHECK(vt_close(&d, &err) == GX_OK);
    const char *t = d.text;
    CHECK(strncmp(t, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n", 39) == 0);
    CHECK(strstr(t, "<VOTABLE version=\"1.4\" xmlns=\"http://www.ivoa.net/xml/VOTable/v1.3\"") != NULL);
    CHECK(strstr(t, "<INFO name=\"QUERY_STATUS\" value=\"OK\"/>") != NULL);
    CHECK(strstr(t, "<TABLE name=\"t&lt;1&gt;\">") != NULL);
    CHECK(strstr(t, "<DESCRIPTION>a &amp; b</DESCRIPTION>") != NULL);
    CHECK(strstr(t, "<INFO name=\"next_cursor\" value=\"abc&quot;d\"/>") != NULL);
    /* The schema wants a TABLE's INFOs before its FIELDs. */
    CHECK(strstr(t, "next_cursor") < strstr(t, "<FIELD"));
    CHECK(strstr(t, "<FIELD name=\"object_id\" datatype=\"char\" arraysize=\"*\" ucd=\"meta.id;meta.main\">"
                    "<DESCRIPTION>the caller&apos;s id</DESCRIPTION></FIELD>") != NULL);
    CHECK(strstr(t, "<FIELD name=\"ra\" datatype=\"double\" ucd=\"pos.eq.ra;meta.main\" unit=\"deg\"/>") != NULL);
    CHECK(strstr(t, "<FIELD name=\"n\" datatype=\"int\"/>") != NULL);
    CHECK(strstr(t, "<FIELD name=\"id\" datatype=\"long\" ucd=\"meta.record\"/>") != NULL);
    CHECK(strstr(t, "<FIELD name=\"flag\" datatype=\"boolean\" ucd=\"meta.code\"/>") != NULL);
    CHECK(strstr(t, "<TR><TD>obj-1</TD><TD>150.25</TD><TD>7</TD><TD>9000000000</TD><TD>T</TD></TR>") != NULL);
    /* NULL string and NaN are empty cells (VOTable's null). */
    CHECK(strstr(t, "<TR><TD></TD><TD></TD><TD>-3</TD><TD>1</TD><TD>F</TD></TR>") != NULL);
    CHECK(vt_count(t, "<FIELD ") == VT_NF);
    CHECK(vt_count(t, "<TR>") == 2 && vt_count(t, "</TR>") == 2);
    CHECK(vt_count(t, "<TD>") == 2 * VT_NF);
    CHECK(strstr(t, "</TABLEDATA></DATA>\n  </TABLE>\n </RESOURCE>\n</VOTABLE>\n") != NULL);
    free(d.text);
}

GX_TEST(votable_double_round_trips) {
    static const gx_vot_field f[] = { { "x", GX_VOT_DOUBLE, NULL, NULL, NULL } };
    const double vals[] = { 0.1, 1.0 / 3.0, 359.99999999999994, -89.123456789012345, 1e-300, INFINITY };
    char *text = NULL;
    size_t n = 0;
    FILE *fp = open_memstream(&text, &n);
    gx_vot w;
    gx_vot_begin(&w, fp, "x", NULL, f, 1);
    for (int i = 0; i < 6; i++) {
        gx_vot_row(&w);
        gx_vot_double(&w, vals[i]);
    }
    CHECK(gx_vot_end(&w, NULL) == GX_OK);
    fclose(fp);
    CHECK(strstr(text, "<DESCRIPTION>") == NULL);   /* none asked for */
    const char *p = text;
    for (int i = 0; i < 6; i++) {
        p = strstr(p, "<TD>");
        CHECK(p != NULL);
        if (!p) break;
        p += 4;
        if (isfinite(vals[i])) CHECK(strtod(p, NULL) == vals[i]);
        else CHECK(strncmp(p, "</TD>", 5) == 0);   /* infinity: no VOTable spelling here, null */
    }
    free(text);
}

GX_TEST(votable_escapes_text) {
    static const gx_vot_field f[] = { { "s", GX_VOT_CHAR, NULL, NULL, NULL } };
    char *text = NULL;
    size_t n = 0;
    FILE *fp = open_memstream(&text, &n);
    gx_vot w;
    gx_vot_begin(&w, fp, "x", NULL, f, 1);
    const char *cases[] = {
        "<a href='x'>&\"</a>",
        "tab\there\x01\x1f\x7f",       /* 0x7f is allowed by XML 1.0 */
        "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x8c\x8c",   /* valid UTF-8 passes */
        "bad\xff\xc3(\xed\xa0\x80\xc0\xaf!",           /* invalid: each bad byte becomes ? */
    };
    for (int i = 0; i < 4; i++) {
        gx_vot_row(&w);
        gx_vot_str(&w, cases[i]);
    }
    CHECK(gx_vot_end(&w, NULL) == GX_OK);
    fclose(fp);
    CHECK(strstr(text, "<TD>&lt;a href=&apos;x&apos;&gt;&amp;&quot;&lt;/a&gt;</TD>") != NULL);
    CHECK(strstr(text, "<TD>tab\there??\x7f</TD>") != NULL);
    CHECK(strstr(text, "<TD>caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x8c\x8c</TD>") != NULL);
    CHECK(strstr(text, "<TD>bad\?\?(\?\?\?\?\?!</TD>") != NULL);
    free(text);
}

GX_TEST(votable_empty_table_is_complete) {
    vt_doc d;
    vt_open(&d);
    gx_err err = { { 0 } };
    CHECK(vt_close(&d, &err) == GX_OK);
    CHECK(vt_count(d.text, "<FIELD ") == VT_NF);
    CHECK(strstr(d.text, "<DATA><TABLEDATA>\n   </TABLEDATA></DATA>") != NULL);
    CHECK(vt_count(d.text, "<TR>") == 0);
    free(d.text);
}

/* Every misuse is reported by end, naming it; the first one wins. */
GX_TEST(votable_misuse_is_reported) {
    struct { int kind; const char *want; } cases[] = {
        { 0, "row 1 has 4 cells for 5 fields" },
        { 1, "field 'ra' is double, written as char" },
        { 2, "more cells than the 5 fields" },
        { 3, "INFO 'late' after the first row" },
        { 4, "does not fit the int field 'n'" },
        { 5, "a cell outside a row" },
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        vt_doc d;
        vt_open(&d);
        gx_vot *w = &d.w;
        switch (cases[c].kind) {
        case 0: gx_vot_row(w); gx_vot_str(w, "a"); gx_vot_double(w, 1); gx_vot_int(w, 1); gx_vot_int(w, 1);
                vt_full_row(w, "b", 2, 2, 2, 0); break;
        case 1: gx_vot_row(w); gx_vot_str(w, "a"); gx_vot_str(w, "oops"); break;
        case 2: vt_full_row(w, "a", 1, 1, 1, 1); gx_vot_bool(w, 1); break;
        case 3: vt_full_row(w, "a", 1, 1, 1, 1); gx_vot_info(w, "late", "x"); break;
        case 4: vt_full_row(w, "a", 1, 1LL << 40, 1, 1); break;
        case 5: gx_vot_str(w, "a"); break;
        }
        gx_err err = { { 0 } };
        gx_status s = vt_close(&d, &err);
        CHECK_MSG(s == GX_ERR_INVALID, "case %zu: status %d", c, (int)s);
        CHECK_MSG(strstr(err.msg, cases[c].want) != NULL, "case %zu: message '%s'", c, err.msg);
        /* Even a misused document is closed (a client gets well-formed XML). */
        CHECK(strstr(d.text, "</VOTABLE>\n") != NULL);
        free(d.text);
    }
    gx_vot w;
    gx_err err = { { 0 } };
    gx_vot_begin(&w, NULL, "x", NULL, vt_fields, VT_NF);
    CHECK(gx_vot_end(&w, &err) == GX_ERR_INVALID);
    static const gx_vot_field bad[] = { { "", GX_VOT_INT, NULL, NULL, NULL } };
    char *text = NULL;
    size_t n = 0;
    FILE *fp = open_memstream(&text, &n);
    gx_vot_begin(&w, fp, "x", NULL, bad, 1);
    CHECK(gx_vot_end(&w, &err) == GX_ERR_INVALID && strstr(err.msg, "field 0") != NULL);
    fclose(fp);
    free(text);
}
