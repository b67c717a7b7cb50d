/* gx_optim.c — STUB: to be replaced by the real implementation. */
#include "gx_impl.h"

gx_optim_cfg gx_optim_defaults(gx_opt_kind kind) {
    (void)kind;
    GX_ASSERT_MSG(0, "gx_optim_defaults not implemented");
}

gx_status gx_optim_init(gx_optim *o, const gx_params *p, const gx_optim_cfg *cfg, gx_err *err) {
    (void)o;
    (void)p;
    (void)cfg;
    (void)err;
    GX_ASSERT_MSG(0, "gx_optim_init not implemented");
}

void gx_optim_free(gx_optim *o) {
    (void)o;
    GX_ASSERT_MSG(0, "gx_optim_free not implemented");
}

void gx_optim_step(gx_optim *o, gx_params *p, const double *lr_by_group) {
    (void)o;
    (void)p;
    (void)lr_by_group;
    GX_ASSERT_MSG(0, "gx_optim_step not implemented");
}

double gx_clip_grad_norm(gx_params *p, double max_norm) {
    (void)p;
    (void)max_norm;
    GX_ASSERT_MSG(0, "gx_clip_grad_norm not implemented");
}

double gx_lr_warmup_cosine(int64_t step, int64_t warmup, int64_t total, double lr_start, double lr_peak, double lr_end) {
    (void)step;
    (void)warmup;
    (void)total;
    (void)lr_start;
    (void)lr_peak;
    (void)lr_end;
    GX_ASSERT_MSG(0, "gx_lr_warmup_cosine not implemented");
}

double gx_lr_inverse_decay(int64_t step, int64_t T, double lr0, double gamma, double power) {
    (void)step;
    (void)T;
    (void)lr0;
    (void)gamma;
    (void)power;
    GX_ASSERT_MSG(0, "gx_lr_inverse_decay not implemented");
}
