/*
 * gx_optim.h — optimisers, learning-rate schedules, clipping (kernels/gx_optim.c).
 *
 * Update rules follow torch.optim exactly (tests compare trajectories):
 *   Adam:  g += wd*p (L2, only for GX_PARAM_DECAY params); bias-corrected moments.
 *   AdamW: p -= lr*wd*p (decoupled, GX_PARAM_DECAY params), then the Adam step.
 *   SGD:   g += wd*p; buf = mu*buf + g (buf = g at the first step);
 *          nesterov: g = g + mu*buf, else g = buf; p -= lr*g.
 * Gradient accumulation needs nothing here: backward adds into parameter
 * gradients, so a trainer scales its loss by 1/accum and steps every accum
 * micro-batches (or calls gx_params_scale_grad once before the step).
 */
#ifndef GX_OPTIM_H
#define GX_OPTIM_H
#ifdef __cplusplus
extern "C" {
#endif

typedef enum { GX_OPT_ADAMW = 0, GX_OPT_ADAM, GX_OPT_SGD } gx_opt_kind;

typedef struct gx_optim_cfg {
    gx_opt_kind kind;
    double beta1, beta2, eps;      /* Adam(W) */
    double weight_decay;
    double momentum;               /* SGD */
    int    nesterov;               /* SGD */
} gx_optim_cfg;

#define GX_OPT_MAX_GROUPS 8

typedef struct gx_optim {
    gx_optim_cfg cfg;
    int64_t  step;                 /* completed steps */
    int      nparams;              /* registry size at init (must not change) */
    gx_real *state;                /* one allocation: Adam m,v / SGD buffer per param */
    int64_t *offset;               /* per param: start of its slots in state */
    int64_t  state_len;
} gx_optim;

/* PyTorch defaults for each kind (AdamW wd 0.01, Adam/SGD wd 0). */
gx_optim_cfg gx_optim_defaults(gx_opt_kind kind);
gx_status gx_optim_init(gx_optim *o, const gx_params *p, const gx_optim_cfg *cfg, gx_err *err);
void      gx_optim_free(gx_optim *o);
/* One update of every trainable parameter; lr_by_group[g] is the learning
 * rate of parameter group g (per-group learning rates). */
void      gx_optim_step(gx_optim *o, gx_params *p, const double *lr_by_group);

/* Scales all gradients so their global L2 norm is at most max_norm (as
 * torch.nn.utils.clip_grad_norm_, factor max_norm/(norm+1e-6)); returns the
 * norm before clipping. */
double gx_clip_grad_norm(gx_params *p, double max_norm);

/* Linear warm-up from lr_start to lr_peak over `warmup` steps, then cosine
 * decay to lr_end at `total` steps (constant lr_end afterwards). */
double gx_lr_warmup_cosine(int64_t step, int64_t warmup, int64_t total,
                           double lr_start, double lr_peak, double lr_end);
/* spec/uda.md: lr0 * (1 + gamma*min(1, step/T))^-power (gamma 10, power 0.75). */
double gx_lr_inverse_decay(int64_t step, int64_t T, double lr0, double gamma, double power);

#ifdef __cplusplus
}
#endif
#endif
