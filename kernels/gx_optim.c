/*
 * gx_optim.c — AdamW, Adam and SGD (with Nesterov), learning-rate schedules,
 * global-norm gradient clipping, and optimiser state in training files.
 *
 * Design.
 *  - The update rules are torch.optim's (1.13, single-tensor path) so that
 *    trajectories can be compared step by step with PyTorch. Each element's
 *    update is computed in double and rounded once to gx_real: in the f32
 *    build this is slightly more accurate than torch's float32 path and
 *    matches its float64 path to rounding.
 *  - Weight decay is a per-parameter property (GX_PARAM_DECAY) rather than a
 *    per-group one; torch expresses the same thing with separate groups
 *    whose weight_decay is 0. Learning rates are per group (gx_param.group),
 *    passed at every step so schedules live outside the optimiser.
 *  - All state (offsets and moments) is one 64-byte aligned allocation sized
 *    at init: the step loop never allocates. The registry must not grow
 *    after init (checked at every step).
 *  - The step counter is shared by all parameters: every trainable
 *    parameter is updated at every step (a zero gradient is still a step,
 *    as for a torch parameter whose .grad is a zero tensor).
 *  - Parameters on a device (gx_params_to_cuda): the state gets a device
 *    mirror in the parameters' pool at the first step that sees them there
 *    (uploaded from `state`: zeros, or what gx_optim_state_load restored),
 *    and from then on the device copy is the live one: the steps run
 *    gx_cu_optim_update per tensor on p->cuda's stream without waiting,
 *    gx_optim_state_to_writer downloads it first, gx_optim_state_load
 *    uploads into it, gx_optim_free returns it to the pool (so free the
 *    optimiser before the pool and the exec). Gradients made on another
 *    worker's stream must be synchronised before the step. An emulated exec
 *    (host memory behind the pool) runs the CPU update on the mirror.
 */
#include "gx_impl.h"
#include "gx_cuda.h"
#if GX_CUDA_ON
#include "cuda/gx_cuda_ops_shape.h"
#endif

#include <math.h>
#include <stdlib.h>

gx_optim_cfg gx_optim_defaults(gx_opt_kind kind) {
    gx_optim_cfg c = { kind, 0.9, 0.999, 1e-8, 0.0, 0.0, 0 };
    if (kind == GX_OPT_ADAMW) c.weight_decay = 0.01;   /* torch.optim.AdamW default */
    return c;
}

/* Parameters the optimiser owns state for: not BUFFER/FROZEN, and with a
 * gradient buffer (the registry allocates one exactly for those). */
static int gx_optim_trainable(const gx_param *q) {
    return !(q->flags & (GX_PARAM_BUFFER | GX_PARAM_FROZEN)) && q->t.grad != NULL;
}

/* State slots per element: Adam keeps m and v, SGD its momentum buffer. */
static int gx_optim_slots(const gx_optim_cfg *c) {
    if (c->kind == GX_OPT_SGD) return c->momentum != 0 ? 1 : 0;
    return 2;
}

/* Same refusals as torch.optim's constructors; NaN fails every >= test. */
static gx_status gx_optim_check_cfg(const gx_optim_cfg *c, gx_err *err) {
    if ((unsigned)c->kind > GX_OPT_SGD) return gx_err_set(err, GX_ERR_INVALID, "optim: unknown kind %d", (int)c->kind);
    if (c->kind != GX_OPT_SGD && !(c->beta1 >= 0 && c->beta1 < 1 && c->beta2 >= 0 && c->beta2 < 1))
        return gx_err_set(err, GX_ERR_INVALID, "optim: betas (%g, %g) outside [0, 1)", c->beta1, c->beta2);
    if (!(c->eps >= 0) || !(c->weight_decay >= 0) || !(c->momentum >= 0))
        return gx_err_set(err, GX_ERR_INVALID, "optim: eps %g, weight_decay %g and momentum %g must be >= 0",
                          c->eps, c->weight_decay, c->momentum);
    if (c->kind == GX_OPT_SGD && c->nesterov && c->momentum <= 0)
        return gx_err_set(err, GX_ERR_INVALID, "optim: Nesterov momentum requires momentum > 0");
    return GX_OK;
}


gx_status gx_optim_init(gx_optim *o, const gx_params *p, const gx_optim_cfg *cfg, gx_err *err) {
    memset(o, 0, sizeof *o);
    gx_status s = gx_optim_check_cfg(cfg, err);
    if (s != GX_OK) return s;
    int slots = gx_optim_slots(cfg);
    int64_t len = 0;
    for (int i = 0; i < p->n; i++) {
        const gx_param *q = p->items[i];
        if (q->group < 0 || q->group >= GX_OPT_MAX_GROUPS)
            return gx_err_set(err, GX_ERR_INVALID, "optim: parameter '%s' has group %d outside [0, %d)", q->name,
                              q->group, GX_OPT_MAX_GROUPS);
        if (gx_optim_trainable(q)) len += slots * q->t.numel;
    }
    /* One block: the offsets, padded to 64 bytes, then the state. */
    size_t off_bytes = ((size_t)p->n * sizeof(int64_t) + 63) / 64 * 64;
    size_t bytes = off_bytes + (size_t)len * sizeof(gx_real);
    bytes = (bytes + 63) / 64 * 64;
    void *block = aligned_alloc(64, bytes ? bytes : 64);
    if (!block) return gx_err_set(err, GX_ERR_NOMEM, "optim: cannot allocate %zu bytes of state", bytes);
    memset(block, 0, bytes ? bytes : 64);
    o->offset = block;
    o->state = (gx_real *)((char *)block + off_bytes);
    int64_t pos = 0;
    for (int i = 0; i < p->n; i++) {
        const gx_param *q = p->items[i];
        o->offset[i] = gx_optim_trainable(q) ? pos : -1;
        if (gx_optim_trainable(q)) pos += slots * q->t.numel;
    }
    o->cfg = *cfg;
    o->nparams = p->n;
    o->state_len = len;
    return GX_OK;
}

/* Waits for e, leaving an error in it for the caller's gx_cuda_exec_sync. */
static gx_status gx_optim_dev_wait(gx_cuda_exec *e, gx_err *err) {
    gx_status st = gx_cuda_exec_sync(e, err);
    if (st != GX_OK && e->status == GX_OK) { e->status = st; e->err = *err; }
    return st;
}

void gx_optim_free(gx_optim *o) {
    if (o->dev_state) {
        gx_err err;
        gx_optim_dev_wait(o->dev_exec, &err);   /* no queued update may still write it */
        gx_cuda_pool_free(o->dev_exec->pool, o->dev_state, (size_t)o->state_len * sizeof(gx_real));
    }
    free(o->offset);   /* the block that also holds the state */
    memset(o, 0, sizeof *o);
}

/* Adam / AdamW on one tensor. t = step number (1-based), wd = this
 * parameter's weight decay (0 when it has no GX_PARAM_DECAY flag). */
static void gx_adam_update(const gx_optim_cfg *c, gx_real *restrict x, const gx_real *restrict g,
                           gx_real *restrict m, gx_real *restrict v, int64_t n, int64_t t,
                           double lr, double wd) {
    const double b1 = c->beta1, b2 = c->beta2, eps = c->eps;
    const double step_size = lr / (1.0 - pow(b1, (double)t));
    const double bc2_sqrt = sqrt(1.0 - pow(b2, (double)t));
    /* AdamW shrinks the parameter before the moment step (decoupled);
     * Adam folds wd*p into the gradient (L2). One of the two is inactive. */
    const double shrink = c->kind == GX_OPT_ADAMW ? 1.0 - lr * wd : 1.0;
    const double l2 = c->kind == GX_OPT_ADAM ? wd : 0.0;
#pragma omp parallel for if (n > GX_PAR_THRESHOLD) schedule(static)
    for (int64_t k = 0; k < n; k++) {
        double p = (double)x[k] * shrink;
        double gk = (double)g[k] + l2 * (double)x[k];
        double mk = b1 * (double)m[k] + (1.0 - b1) * gk;
        double vk = b2 * (double)v[k] + (1.0 - b2) * gk * gk;
        m[k] = (gx_real)mk;
        v[k] = (gx_real)vk;
        x[k] = (gx_real)(p - step_size * mk / (sqrt(vk) / bc2_sqrt + eps));
    }
}

/* SGD with optional (Nesterov) momentum on one tensor; buf is NULL when
 * momentum is 0. first: the buffer starts as the gradient itself. */
static void gx_sgd_update(const gx_optim_cfg *c, gx_real *restrict x, const gx_real *restrict g,
                          gx_real *restrict buf, int64_t n, int first, double lr, double wd) {
    const double mu = c->momentum;
    const int nesterov = c->nesterov;
#pragma omp parallel for if (n > GX_PAR_THRESHOLD) schedule(static)
    for (int64_t k = 0; k < n; k++) {
        double d = (double)g[k] + wd * (double)x[k];
        if (buf) {
            double b = first ? d : mu * (double)buf[k] + d;
            buf[k] = (gx_real)b;
            d = nesterov ? d + mu * b : b;
        }
        x[k] = (gx_real)((double)x[k] - lr * d);
    }
}

/* The device mirror of the state for parameters on p->cuda, made and
 * uploaded on first use; NULL when there is no state (plain SGD). */
static gx_real *gx_optim_dev_state(gx_optim *o, gx_params *p) {
    if (o->state_len == 0) return NULL;
    if (!o->dev_state) {
        size_t bytes = (size_t)o->state_len * sizeof(gx_real);
        o->dev_state = gx_cuda_pool_alloc(p->cuda->pool, bytes);
        if (!o->dev_state) {
            /* Out of device memory is the device's error: the step is skipped
             * and fails at the caller's sync (an emulated exec asserts). */
            GX_ASSERT_MSG(p->cuda->stream, "gx_optim_step: the device pool refused %zu bytes of optimiser state",
                          bytes);
            char msg[128];
            snprintf(msg, sizeof msg, "out of device memory: %zu bytes of optimiser state refused", bytes);
            gx_cuda_stream_fail(p->cuda->stream, msg);
            return NULL;
        }
        o->dev_exec = p->cuda;
        gx_cuda_exec_upload(o->dev_exec, o->dev_state, o->state, bytes);
    }
    GX_ASSERT_MSG(o->dev_exec == p->cuda, "gx_optim_step: the parameters are on another device exec than the "
                  "optimiser state");
    return o->dev_state;
}

/* Parameters are updated one after another, each with an OpenMP team when
 * it is large: per-element updates are independent, so the result does not
 * depend on the thread count. */
void gx_optim_step(gx_optim *o, gx_params *p, const double *lr_by_group) {
    GX_ASSERT_MSG(p->n == o->nparams, "gx_optim_step: registry has %d tensors, optimiser was built for %d",
                  p->n, o->nparams);
    o->step++;
    gx_real *state = o->state;
    if (p->cuda) {
        state = gx_optim_dev_state(o, p);
        if (o->state_len && !state) return;   /* out of device memory: see gx_optim_dev_state */
#if GX_CUDA_ON
        if (!p->cuda->emulated) {
            gx_cuda_optim_step(o, p, lr_by_group, state);
            return;
        }
#else
        GX_ASSERT_MSG(p->cuda->emulated, "gx_optim_step: a device exec in a build without CUDA");
#endif
    }
    for (int i = 0; i < p->n; i++) {
        gx_param *q = p->items[i];
        if (o->offset[i] < 0) continue;   /* buffers and frozen tensors */
        double lr = lr_by_group[q->group];
        double wd = (q->flags & GX_PARAM_DECAY) ? o->cfg.weight_decay : 0.0;
        gx_real *st = state ? state + o->offset[i] : NULL;
        int64_t n = q->t.numel;
        if (o->cfg.kind == GX_OPT_SGD)
            gx_sgd_update(&o->cfg, q->t.data, q->t.grad, o->cfg.momentum != 0 ? st : NULL, n, o->step == 1, lr, wd);
        else
            gx_adam_update(&o->cfg, q->t.data, q->t.grad, st, st + n, n, o->step, lr, wd);
    }
}

/* ------------------------------------------------------------ clipping */

#if GX_CUDA_ON
/* The trained gradient buffers (device pointers) for the device launcher. */
static double gx_clip_grad_norm_cuda(gx_params *p, double max_norm) {
    float **g = malloc((size_t)(p->n ? p->n : 1) * sizeof *g);
    int64_t *n = malloc((size_t)(p->n ? p->n : 1) * sizeof *n);
    GX_ASSERT_MSG(g && n, "gx_clip_grad_norm: out of host memory for %d tensors", p->n);
    int nt = 0;
    for (int i = 0; i < p->n; i++) {
        gx_param *q = p->items[i];
        if (!gx_optim_trainable(q)) continue;
        g[nt] = q->t.grad;
        n[nt++] = q->t.numel;
    }
    double norm = gx_cuda_clip_grad_norm(p->cuda, nt, g, n, max_norm);
    free(g);
    free(n);
    return norm;
}
#endif

double gx_clip_grad_norm(gx_params *p, double max_norm) {
    GX_CUDA_DISPATCH(p->cuda && !p->cuda->emulated, gx_clip_grad_norm_cuda(p, max_norm));
    /* Serial double sum: the result must not depend on the thread count. */
    double ss = 0;
    for (int i = 0; i < p->n; i++) {
        const gx_param *q = p->items[i];
        if (!gx_optim_trainable(q)) continue;
        for (int64_t k = 0; k < q->t.numel; k++) ss += (double)q->t.grad[k] * (double)q->t.grad[k];
    }
    double norm = sqrt(ss);
    double coef = max_norm / (norm + 1e-6);
    if (isfinite(norm) && coef < 1.0)
        for (int i = 0; i < p->n; i++) {
            gx_param *q = p->items[i];
            if (!gx_optim_trainable(q)) continue;
            for (int64_t k = 0; k < q->t.numel; k++) q->t.grad[k] = (gx_real)((double)q->t.grad[k] * coef);
        }
    return norm;
}

/* ------------------------------------------------------------ schedules */

/* Steps count from 0: step 0 gives lr_start, step `warmup` gives lr_peak
 * (the first cosine point), step `total` and later give lr_end. */
double gx_lr_warmup_cosine(int64_t step, int64_t warmup, int64_t total, double lr_start, double lr_peak,
                           double lr_end) {
    if (step < 0) step = 0;
    if (step < warmup) return lr_start + (lr_peak - lr_start) * (double)step / (double)warmup;
    if (step >= total) return lr_end;
    double progress = (double)(step - warmup) / (double)(total - warmup);
    return lr_end + 0.5 * (lr_peak - lr_end) * (1.0 + cos(M_PI * progress));
}

/* The DANN / UDA annealing rule with the progress clamped to [0, 1]; T <= 0
 * means "already at the end of the schedule". */
double gx_lr_inverse_decay(int64_t step, int64_t T, double lr0, double gamma, double power) {
    double p = T > 0 ? fmin(1.0, (double)(step < 0 ? 0 : step) / (double)T) : 1.0;
    return lr0 * pow(1.0 + gamma * p, -power);
}

/* --------------------------------------------------- state in files */

static const char *gx_optim_kind_name(gx_opt_kind k) {
    return k == GX_OPT_ADAMW ? "adamw" : k == GX_OPT_ADAM ? "adam" : "sgd";
}

/* File name of slot s of parameter q ("optim.m.enc.weight"). */
static void gx_optim_slot_name(const gx_optim *o, int s, const gx_param *q, char *buf, size_t n) {
    const char *tag = o->cfg.kind == GX_OPT_SGD ? "buf" : s == 0 ? "m" : "v";
    snprintf(buf, n, "optim.%s.%s", tag, q->name);
}

gx_status gx_optim_state_to_writer(const gx_optim *o, const gx_params *p, gx_st_writer *w, gx_err *err) {
    GX_ASSERT_MSG(p->n == o->nparams, "gx_optim_state_to_writer: registry changed since init");
    /* The device mirror is the live state: bring it into `state` first. */
    if (o->dev_state) {
        gx_cuda_exec_download(o->dev_exec, o->state, o->dev_state, (size_t)o->state_len * sizeof(gx_real));
        gx_status st = gx_optim_dev_wait(o->dev_exec, err);
        if (st != GX_OK) return st;
    }
    int slots = gx_optim_slots(&o->cfg);
    char name[256];
    for (int i = 0; i < p->n; i++) {
        const gx_param *q = p->items[i];
        if (o->offset[i] < 0) continue;
        for (int s = 0; s < slots; s++) {
            gx_optim_slot_name(o, s, q, name, sizeof name);
            gx_status st = gx_st_writer_add_real(w, name, q->t.ndim, q->t.shape,
                                                 o->state + o->offset[i] + s * q->t.numel, err);
            if (st != GX_OK) return st;
        }
    }
    int64_t step = o->step;
    gx_status st = gx_st_writer_add(w, "optim.step", GX_ST_I64, 0, NULL, &step, err);
    if (st != GX_OK) return st;
    return gx_st_writer_meta(w, "optim.kind", gx_optim_kind_name(o->cfg.kind), err);
}

gx_status gx_optim_state_load(gx_optim *o, const gx_params *p, const gx_st_file *f, gx_err *err) {
    GX_ASSERT_MSG(p->n == o->nparams, "gx_optim_state_load: registry changed since init");
    /* Adam moments loaded into SGD (or the reverse) would be silently wrong
     * numbers, so the kind must match; then the step, then every slot. */
    const char *kind = gx_st_meta(f, "optim.kind");
    if (!kind) return gx_err_set(err, GX_ERR_NOTFOUND, "optimiser state: metadata 'optim.kind' missing");
    if (strcmp(kind, gx_optim_kind_name(o->cfg.kind)) != 0)
        return gx_err_set(err, GX_ERR_INVALID, "optimiser state is for '%.32s', this optimiser is '%s'", kind,
                          gx_optim_kind_name(o->cfg.kind));
    const gx_st_tensor *ts = gx_st_find(f, "optim.step");
    int64_t step = -1;
    if (ts && ts->dtype == GX_ST_I64 && ts->ndim == 0) memcpy(&step, ts->data, 8);
    if (step < 0) return gx_err_set(err, GX_ERR_FORMAT, "optimiser state: 'optim.step' missing or not a non-negative I64 scalar");
    int slots = gx_optim_slots(&o->cfg);
    char name[256];
    /* Pass 1: every slot present with the parameter's shape. */
    for (int i = 0; i < p->n; i++) {
        if (o->offset[i] < 0) continue;
        for (int s = 0; s < slots; s++) {
            gx_optim_slot_name(o, s, p->items[i], name, sizeof name);
            gx_status st = gx_st_check_compatible(gx_st_find(f, name), &p->items[i]->t, name, err);
            if (st != GX_OK) return st;
        }
    }
    /* Pass 2: copy. */
    for (int i = 0; i < p->n; i++) {
        if (o->offset[i] < 0) continue;
        int64_t n = p->items[i]->t.numel;
        for (int s = 0; s < slots; s++) {
            gx_optim_slot_name(o, s, p->items[i], name, sizeof name);
            gx_status st = gx_st_to_real(gx_st_find(f, name), o->state + o->offset[i] + s * n, n, err);
            GX_ASSERT(st == GX_OK);
        }
    }
    o->step = step;
    /* A device mirror made before the load takes the restored state now. */
    if (o->dev_state) {
        gx_cuda_exec_upload(o->dev_exec, o->dev_state, o->state, (size_t)o->state_len * sizeof(gx_real));
        return gx_optim_dev_wait(o->dev_exec, err);
    }
    return GX_OK;
}
