/*
 * gx_votable.h — a small streaming writer of IVOA VOTable 1.4 documents
 * (TABLEDATA serialisation), for the catalogue exports of galaxyd
 * (GET /v1/anomalies?format=votable) that TOPCAT, astropy and Aladin read.
 *
 *   static const gx_vot_field f[] = {
 *       { "object_id", GX_VOT_CHAR, "meta.id;meta.main", NULL, "caller's id" },
 *       { "ra", GX_VOT_DOUBLE, "pos.eq.ra;meta.main", "deg", NULL },
 *   };
 *   gx_vot w;
 *   gx_vot_begin(&w, file, "anomalies", "Stored anomaly scores", f, 2);
 *   gx_vot_info(&w, "next_cursor", cursor);        // before the first row
 *   gx_vot_row(&w); gx_vot_str(&w, "obj-1"); gx_vot_double(&w, 150.1);
 *   if (gx_vot_end(&w, &err) != GX_OK) ...           // the first misuse, named
 *
 * The document (VOTable 1.4 keeps the v1.3 namespace; only the version
 * attribute and the schema location say 1.4):
 *   <VOTABLE version="1.4" xmlns="http://www.ivoa.net/xml/VOTable/v1.3">
 *    <RESOURCE type="results"><INFO name="QUERY_STATUS" value="OK"/>
 *     <TABLE name=...><DESCRIPTION/><INFO .../>... <FIELD .../>...
 *      <DATA><TABLEDATA><TR><TD>..</TD></TR>...</TABLEDATA></DATA>
 *     </TABLE></RESOURCE></VOTABLE>
 *
 * Rules the writer enforces, so every document it finishes is valid:
 *  - each row has exactly as many cells as there are FIELDs, each cell of
 *    its FIELD's datatype (gx_vot_end reports the first violation);
 *  - INFO elements come before the first row: the schema wants a TABLE's
 *    INFOs before its FIELDs, so the FIELDs are written with the first row
 *    (or by gx_vot_end for an empty table);
 *  - text is XML-escaped (& < > " '), characters XML 1.0 forbids (control
 *    bytes other than tab/LF/CR) and invalid UTF-8 become '?';
 *  - a NaN or infinite double and a NULL string are an empty TD, VOTable's
 *    null (section 6: "an empty cell is a null value" for every datatype);
 *  - doubles are printed with 17 significant digits (they round-trip).
 * The writer never allocates; output errors of the FILE are sticky and
 * reported by gx_vot_end.
 */
#ifndef GX_VOTABLE_H
#define GX_VOTABLE_H

#include <stdint.h>
#include <stdio.h>

#include "gx.h"

#ifdef __cplusplus
extern "C" {
#endif

#define GX_VOT_NS "http://www.ivoa.net/xml/VOTable/v1.3"

typedef enum gx_vot_type {
    GX_VOT_CHAR = 0,           /* datatype="char" arraysize="*" */
    GX_VOT_INT,                /* "int" (32-bit) */
    GX_VOT_LONG,               /* "long" (64-bit) */
    GX_VOT_DOUBLE,             /* "double" */
    GX_VOT_BOOLEAN             /* "boolean": T / F */
} gx_vot_type;

typedef struct gx_vot_field {
    const char *name;          /* FIELD name (required) */
    gx_vot_type type;
    const char *ucd;           /* UCD1+ (NULL = none) */
    const char *unit;          /* VOUnit, e.g. "deg" (NULL = none) */
    const char *description;   /* DESCRIPTION child (NULL = none) */
} gx_vot_field;

typedef struct gx_vot {
    FILE *f;
    const gx_vot_field *fields;
    int n_fields;
    int64_t rows;              /* rows begun */
    int cell;                  /* cells written in the current row */
    int in_data;               /* FIELDs written, <DATA><TABLEDATA> is open */
    int in_row;                /* a <TR> is open */
    gx_status status;          /* the first error (sticky) */
    char error[200];
} gx_vot;

/* Writes the XML declaration, VOTABLE, RESOURCE, TABLE and FIELDs. Errors
 * (bad arguments) are kept and returned by gx_vot_end. */
void gx_vot_begin(gx_vot *w, FILE *f, const char *table_name, const char *description,
                  const gx_vot_field *fields, int n_fields);
/* <INFO name=.. value=../> inside TABLE (before the first row). */
void gx_vot_info(gx_vot *w, const char *name, const char *value);
/* Starts a row (closing the previous one). */
void gx_vot_row(gx_vot *w);
/* One cell of the current row, in FIELD order. */
void gx_vot_str(gx_vot *w, const char *s);       /* NULL = null */
void gx_vot_int(gx_vot *w, int64_t v);           /* int and long FIELDs */
void gx_vot_double(gx_vot *w, double v);         /* NaN = null */
void gx_vot_bool(gx_vot *w, int v);
/* Closes everything; GX_ERR_INVALID naming the first misuse (wrong cell
 * count or type, INFO after a row, bad arguments), GX_ERR_IO when the FILE
 * failed. */
gx_status gx_vot_end(gx_vot *w, gx_err *err);

/* XML-escapes s (text and attribute values) onto f, as the writer does. */
void gx_vot_escape(FILE *f, const char *s);

#ifdef __cplusplus
}
#endif
#endif
