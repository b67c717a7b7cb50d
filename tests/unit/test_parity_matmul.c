/*
 * test_parity_matmul.c — matmul family vs PyTorch
 * (tests/fixtures/matmul.safetensors, written by tests/parity/gen_matmul.py).
 * Each op runs in f32 with the fixture's upstream gradient; the output and
 * every input gradient are compared.
 *
 * Tolerance: atol 1e-5 + rtol 1e-5 (float64 reference; inner dimensions are
 * at most 7, so f32 products agree to a few ulps). The sqdist reference is
 * torch.cdist(a, b) ** 2 with no pair closer than ~0.1, away from the clamp.
 */
#include "gx_test.h"

#define PAR_ATOL 1e-5
#define PAR_RTOL 1e-5

typedef enum { OP_LINEAR, OP_LINEAR_NB, OP_MATMUL, OP_GRAM, OP_GRAM_SELF, OP_SQDIST } mm_op;
typedef struct { const char *name; mm_op op; int n_in; const char *keys[3]; } mm_case;

static const mm_case CASES[] = {
    { "linear3d", OP_LINEAR, 3, { "x", "w", "b" } },
    { "linear_nb", OP_LINEAR_NB, 2, { "x", "w" } },
    { "bmm4d", OP_MATMUL, 2, { "a", "b" } },
    { "mm_shared", OP_MATMUL, 2, { "a", "b" } },
    { "gram", OP_GRAM, 2, { "a", "b" } },
    { "gram_self", OP_GRAM_SELF, 1, { "a" } },
    { "sqdist", OP_SQDIST, 2, { "a", "b" } },
};

static gx_tensor *run_op(gx_ctx *ctx, mm_op op, gx_tensor *const *in) {
    switch (op) {
    case OP_LINEAR: return gx_linear(ctx, in[0], in[1], in[2]);
    case OP_LINEAR_NB: return gx_linear(ctx, in[0], in[1], NULL);
    case OP_MATMUL: return gx_matmul(ctx, in[0], in[1]);
    case OP_GRAM: return gx_gram(ctx, in[0], in[1]);
    case OP_GRAM_SELF: return gx_gram(ctx, in[0], in[0]);
    case OP_SQDIST: return gx_pairwise_sqdist(ctx, in[0], in[1]);
    }
    return NULL;
}

static void run_case(gx_test_state *T, const gx_st_file *f, const mm_case *mc) {
    gx_ctx ctx;
    gx_ctx_init(&ctx, 1 << 20);
    ctx.grad_enabled = 1;
    gx_tensor *in[3] = { 0 };
    char k[128];
    int ok = 1;
    for (int i = 0; i < mc->n_in; i++) {
        snprintf(k, sizeof k, "%s.%s", mc->name, mc->keys[i]);
        in[i] = gx_fixture_tensor(T, &ctx, f, k);
        if (!in[i]) ok = 0; else in[i]->requires_grad = 1;
    }
    snprintf(k, sizeof k, "%s.gout", mc->name);
    gx_tensor *gout = ok ? gx_fixture_tensor(T, &ctx, f, k) : NULL;
    if (gout) {
        gx_tensor *y = run_op(&ctx, mc->op, in);
        snprintf(k, sizeof k, "%s.y", mc->name);
        gx_fixture_check(T, f, k, y->data, y->numel, PAR_ATOL, PAR_RTOL);
        CHECK(gout->numel == y->numel);
        if (gout->numel == y->numel) {
            gx_backward(&ctx, y, gout->data);
            for (int i = 0; i < mc->n_in; i++) {
                snprintf(k, sizeof k, "%s.grad.%s", mc->name, mc->keys[i]);
                CHECK(in[i]->grad != NULL);
                if (in[i]->grad) gx_fixture_check(T, f, k, in[i]->grad, in[i]->numel, PAR_ATOL, PAR_RTOL);
            }
        }
    }
    gx_ctx_free(&ctx);
}

GX_TEST(parity_matmul_cases) {
    gx_st_file f;
    if (!gx_fixture_open(T, &f, "matmul.safetensors")) return;
    for (size_t c = 0; c < sizeof CASES / sizeof CASES[0]; c++) run_case(T, &f, &CASES[c]);
    gx_st_close(&f);
}
