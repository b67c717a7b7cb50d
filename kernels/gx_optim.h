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
    gx_real *state;                /* Adam: m then v per param; SGD: momentum buffer */
    int64_t *offset;               /* per param: start of its slots in state, -1 when
                                      not optimised (BUFFER/FROZEN). offset and state
                                      share one allocation, owned through offset */
    int64_t  state_len;
    /* Parameters on a device (gx_params_to_cuda): the live copy of state in
     * their pool, made at the first step that sees them there (gx_optim.c). */
    struct gx_cuda_exec *dev_exec;
    gx_real  *dev_state;
} gx_optim;

/* PyTorch defaults for each kind (AdamW wd 0.01, Adam/SGD wd 0). */
gx_optim_cfg gx_optim_defaults(gx_opt_kind kind);
gx_status gx_optim_init(gx_optim *o, const gx_params *p, const gx_optim_cfg *cfg, gx_err *err);
/* With parameters on a device (gx_params_to_cuda) the state's live copy is
 * in the device pool: free the optimiser before the pool and the exec. */
void      gx_optim_free(gx_optim *o);
/* One update of every trainable parameter; lr_by_group[g] is the learning
 * rate of parameter group g (per-group learning rates). Gradients are read,
 * not cleared. Arithmetic is in double per element, rounded once to gx_real.
 * SGD has no dampening (torch's default 0). init refuses (GX_ERR_INVALID)
 * betas outside [0,1), negative eps/weight decay/momentum, Nesterov without
 * momentum, and parameter groups outside [0, GX_OPT_MAX_GROUPS). */
void      gx_optim_step(gx_optim *o, gx_params *p, const double *lr_by_group);

/* Training-state files. Adds the optimiser state of every trainable
 * parameter to w: Adam(W) moments as "optim.m.<param>" and "optim.v.<param>",
 * the SGD momentum buffer as "optim.buf.<param>" (only when momentum != 0),
 * all F32 with the parameter's shape; the step count as the I64 scalar
 * "optim.step"; the kind as metadata "optim.kind" ("adamw", "adam", "sgd").
 * The configuration (betas, lr, ...) is not saved: it comes from the config. */
struct gx_st_writer;
struct gx_st_file;
gx_status gx_optim_state_to_writer(const gx_optim *o, const gx_params *p,
                                   struct gx_st_writer *w, gx_err *err);
/* Restores what gx_optim_state_to_writer saved, into an optimiser
 * initialised on the same registry. All-or-nothing like gx_params_load: a
 * wrong kind (GX_ERR_INVALID), a missing tensor (GX_ERR_NOTFOUND) or a shape
 * mismatch (GX_ERR_SHAPE) is reported by name before anything changes.
 * Tensors of f that are not optimiser state ("optim." prefix) are ignored. */
gx_status gx_optim_state_load(gx_optim *o, const gx_params *p, const struct gx_st_file *f,
                              gx_err *err);

/* Scales all gradients so their global L2 norm is at most max_norm (as
 * torch.nn.utils.clip_grad_norm_, factor max_norm/(norm+1e-6)); returns the
 * norm before clipping. The norm is summed in double over trainable
 * parameters. Unlike torch, a non-finite norm leaves the gradients untouched
 * (torch would fill them with NaN): the caller sees the NaN/inf return value
 * and can skip the step. */
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
