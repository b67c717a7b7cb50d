"""gen_optim.py — PyTorch trajectories for the optimisers and gradient clipping.

Four parameters in two groups (group 0 at one learning rate, group 1 at
another), weight decay on p0 and p2 only, a fixed sequence of 10 gradients
per parameter, and five optimiser configurations. torch expresses per-tensor
weight decay as separate param groups with weight_decay 0, which is what
gx_optim does with GX_PARAM_DECAY. Everything runs in float64; inputs, the
per-step learning rates and gradients are rounded through float32 first so
the C side (f32) starts from exactly the same numbers.

Writes tests/fixtures/optim.safetensors:
  init.pK [shape], grad.pK [10, *shape], lr [10, 2] (per step, per group),
  <opt>.pK [10, *shape] = parameter after each step,
  clip.<case>.gK, clip.<case>.outK, clip.<case>.norm [1].
The hyperparameters are mirrored in tests/unit/test_parity_optim.c.
"""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gx_fixture as fx  # noqa: E402

STEPS = 10
SHAPES = {"p0": (3, 5), "p1": (7,), "p2": (2, 3), "p3": (4,)}
DECAY = {"p0": True, "p1": False, "p2": True, "p3": False}
GROUP = {"p0": 0, "p1": 0, "p2": 1, "p3": 1}

OPTS = {
    "adamw": lambda groups: torch.optim.AdamW(groups, lr=1.0, betas=(0.9, 0.999), eps=1e-8),
    "adam": lambda groups: torch.optim.Adam(groups, lr=1.0, betas=(0.8, 0.99), eps=1e-6),
    "sgd_nesterov": lambda groups: torch.optim.SGD(groups, lr=1.0, momentum=0.9, nesterov=True),
    "sgd_momentum": lambda groups: torch.optim.SGD(groups, lr=1.0, momentum=0.5),
    "sgd_plain": lambda groups: torch.optim.SGD(groups, lr=1.0),
}
WD = {"adamw": 0.05, "adam": 0.1, "sgd_nesterov": 0.01, "sgd_momentum": 0.02, "sgd_plain": 0.03}


def f32(t):
    return t.float().double()


def main():
    out = {}
    init = {k: fx.leaf(*s, seed=10 + i).detach() for i, (k, s) in enumerate(SHAPES.items())}
    grads = {k: fx.leaf(STEPS, *s, seed=100 + i).detach() for i, (k, s) in enumerate(SHAPES.items())}
    # Learning rates change every step (a schedule), differently per group.
    lr = f32(torch.tensor([[1e-2 * (1 + 0.1 * s), 3e-3 * (1 - 0.05 * s)] for s in range(STEPS)],
                          dtype=torch.float64))
    out["lr"] = lr
    for k in SHAPES:
        out["init." + k], out["grad." + k] = init[k], grads[k]
    for name, make in OPTS.items():
        params = {k: init[k].clone().requires_grad_(True) for k in SHAPES}
        # One torch group per (lr group, decay) pair.
        keys = [(g, d) for g in (0, 1) for d in (True, False)]
        groups = [{"params": [params[k] for k in SHAPES if GROUP[k] == g and DECAY[k] == d],
                   "weight_decay": WD[name] if d else 0.0} for g, d in keys]
        opt = make(groups)
        traj = {k: [] for k in SHAPES}
        for s in range(STEPS):
            for (g, _), grp in zip(keys, opt.param_groups):
                grp["lr"] = float(lr[s, g])
            for k in SHAPES:
                params[k].grad = grads[k][s].clone()
            opt.step()
            for k in SHAPES:
                traj[k].append(params[k].detach().clone())
        for k in SHAPES:
            out[f"{name}.{k}"] = torch.stack(traj[k])
    # Clipping: one case that clips, one below the threshold.
    for case, scale, max_norm in (("clip", 3.0, 1.0), ("noclip", 0.1, 100.0)):
        gs = [fx.leaf(*s, seed=200 + i).detach() * scale for i, s in enumerate(SHAPES.values())]
        gs = [f32(g) for g in gs]
        ps = [torch.zeros_like(g, requires_grad=True) for g in gs]
        for p, g in zip(ps, gs):
            p.grad = g.clone()
        norm = torch.nn.utils.clip_grad_norm_(ps, max_norm)
        for i, (g, p) in enumerate(zip(gs, ps)):
            out[f"{case}.g{i}"], out[f"{case}.out{i}"] = g, p.grad
        out[f"{case}.norm"] = norm.reshape(1)
    fx.save("optim.safetensors", out)


if __name__ == "__main__":
    main()
