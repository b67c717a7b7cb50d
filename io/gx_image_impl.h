/*
 * gx_image_impl.h — helpers shared by the io/ sources; not public API.
 */
#ifndef GX_IMAGE_IMPL_H
#define GX_IMAGE_IMPL_H

#include "gx_image.h"

/* Copy band 0 of a 3-band image into bands 1 and 2; sets replicated. */
void gx_image_replicate(gx_image *im);
/* numpy-style ("linear") quantile q in [0,1] of v[0..n); reorders v (selection, not a sort). */
double gx_quantile_inplace(double *v, size_t n, double q);

#endif
