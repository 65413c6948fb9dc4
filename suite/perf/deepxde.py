"""DeepXDE's time per step on gradpath's Helmholtz benchmark, for ``gradpath bench`` (``--deepxde``).

    DDE_BACKEND=pytorch python -m gradpath.suite.perf.deepxde '{"steps": 2000, "chunk": 100, "device": "cpu"}' out.json
    DDE_BACKEND=jax     python -m gradpath.suite.perf.deepxde '{...}' out.json

One framework per process: DeepXDE chooses its backend once, at import, from ``DDE_BACKEND``
(set explicitly, or its first import writes a config file into the home folder). Needs the
``deepxde`` extra (``pip install 'gradpath[deepxde]'``); its jax backend also needs flax.

The setup is gradpath's: Helmholtz on [-1, 1]^2 with a1 = 1, a2 = 4, k = 1, the network
[2, 50, 50, 50, 1] with tanh and Glorot-normal weights, Adam with learning rate 1e-3, float32,
128 residual points and 4 x 128 boundary points, plain (M1) loss. Differences that remain, and why:

* DeepXDE evaluates the PDE on every training point, the 512 boundary points included, and
  then drops those residuals; we evaluate it on the 128 residual points only. This is how
  ``dde.data.PDE`` works, and it is part of what is being compared.
* Its boundary points are spread over the whole perimeter (about 128 per side), not exactly
  128 per side.
* Its training points are drawn once and kept. We draw fresh points every step, but outside
  the timed region; DeepXDE's ``PDEPointResampler(period=1)`` would resample inside its step
  (host-side sampling and, for the boundary values, a numpy call), which would only make it
  slower, so leaving it out keeps the ratio conservative.
* Its learning rate is constant; ours decays as 0.9^(step/1000) (one scalar per step).
* Its PDE residual uses reverse-mode Hessians (``dde.grad.hessian``), its own way; that is the
  point of the comparison, not a setup difference.
* PyTorch computes with one thread, as gradpath's torch trainer does on the CPU.

Timing: a warm-up call of ``chunk`` steps (its jit/graph build; reported as first-call
seconds), then ``model.train`` calls of ``chunk`` steps each, timed with wall clock; DeepXDE
reads the losses back at the end of each call, which synchronises the device. The median over
calls of seconds / steps is ms per step, as in gradpath's own table.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

A1, A2, K = 1.0, 4.0, 1.0
LAYERS = [2, 50, 50, 50, 1]
RESIDUAL_POINTS, BOUNDARY_POINTS = 128, 4 * 128


def _exact(x: np.ndarray) -> np.ndarray:
    return np.sin(A1 * math.pi * x[:, 0:1]) * np.sin(A2 * math.pi * x[:, 1:2])


def build_model(device: str) -> Any:
    """The DeepXDE model of the Helmholtz benchmark in the backend ``DDE_BACKEND`` names."""
    import deepxde as dde

    backend = dde.backend.backend_name
    if backend == "pytorch":
        import torch
        torch.set_num_threads(1)
        if device == "cuda":
            torch.set_default_device("cuda")
    sin = dde.backend.sin

    def pde(x, u):
        # jax: u is (values, function) and hessian returns (values, function) as well
        u_xx = dde.grad.hessian(u, x, i=0, j=0)
        u_yy = dde.grad.hessian(u, x, i=1, j=1)
        if backend == "jax":
            u, u_xx, u_yy = u[0], u_xx[0], u_yy[0]
        q = (K**2 - (A1**2 + A2**2) * math.pi**2) * sin(A1 * math.pi * x[:, 0:1]) * sin(A2 * math.pi * x[:, 1:2])
        return u_xx + u_yy + K**2 * u - q

    geom = dde.geometry.Rectangle([-1.0, -1.0], [1.0, 1.0])
    bc = dde.icbc.DirichletBC(geom, _exact, lambda _, on_boundary: on_boundary)
    data = dde.data.PDE(geom, pde, bc, num_domain=RESIDUAL_POINTS, num_boundary=BOUNDARY_POINTS,
                        train_distribution="pseudo", num_test=RESIDUAL_POINTS)
    net = dde.nn.FNN(LAYERS, "tanh", "Glorot normal")
    model = dde.Model(data, net)
    model.compile("adam", lr=1e-3)
    return model


def measure(steps: int, chunk: int, device: str = "cpu") -> dict[str, Any]:
    """ms per step of DeepXDE on the benchmark: median and IQR over calls of ``chunk`` steps."""
    import deepxde as dde

    model = build_model(device)
    quiet = {"display_every": 10**9, "verbose": 0}
    t0 = time.perf_counter()
    model.train(iterations=chunk, **quiet)  # builds (jit / graph) and warms up
    first = time.perf_counter() - t0
    times = []
    for _ in range(max(1, steps // chunk)):
        t0 = time.perf_counter()
        model.train(iterations=chunk, **quiet)
        times.append(1e3 * (time.perf_counter() - t0) / chunk)
    q1, median, q3 = statistics.quantiles(times, n=4, method="inclusive") if len(times) > 1 else times * 3
    return {"backend": dde.backend.backend_name, "version": dde.__version__, "ms_per_step": median,
            "iqr_ms": q3 - q1, "chunks": len(times), "first_call_seconds": first,
            "final_train_loss": float(np.sum(model.train_state.loss_train))}


if __name__ == "__main__":
    payload, out = sys.argv[1:]
    Path(out).write_text(json.dumps(measure(**json.loads(payload))))
