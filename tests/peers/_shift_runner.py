"""A peer runner for the exchange tests: a gene-space mean shift learned in its own process.

Each covered query is answered with the start cells of its context plus the mean shift of its perturbation's
training cells from their contexts' controls; a perturbation without training cells is not covered. It checks
the request as a real runner must see it (roles, start cells, genes) and fails loudly otherwise.
"""

import sys
import time

import numpy as np
from _common import Clock, fit_conditions, fit_record, fit_rows, main, start_cells, write_result


def run(workdir, request, train):
    clock = Clock()
    obs = train.obs
    x = np.asarray(train.X, dtype=np.float64)
    role = obs["role"].astype(str).to_numpy()
    assert set(role) <= {"train", "input"}, set(role)
    assert not (obs["is_control"].to_numpy(bool) == False)[role == "input"].any(), "input cells must be controls"  # noqa: E712
    if request["params"].get("fail"):
        sys.exit("asked to fail")
    with clock("fit"):
        fit = fit_rows(train)
        ctx = obs["context"].astype(str).to_numpy()
        pert = obs["perturbation"].astype(str).to_numpy()
        ctrl = obs["is_control"].to_numpy(bool)
        means = {c: x[fit & ctrl & (ctx == c)].mean(axis=0) for c in np.unique(ctx[fit & ctrl])}
        shifts = {}
        for p in np.unique(pert[fit & ~ctrl]):
            rows = fit & (pert == p)
            shifts[p] = np.mean(
                [x[rows & (ctx == c)].mean(axis=0) - means[c] for c in np.unique(ctx[rows]) if c in means], axis=0
            )
        time.sleep(float(request["params"].get("sleep", 0)))
    predicted, not_covered = {}, {}
    with clock("predict"):
        for q in request["queries"]:
            if q["perturbation"] not in shifts:
                not_covered[q["key"]] = "perturbation unseen in training"
                continue
            predicted[q["key"]] = x[start_cells(train, q["context"])] + shifts[q["perturbation"]]
    fit = fit_record(
        unit="epoch",
        trained=1,
        max_=1,
        best=1,
        monitor="none",
        stopped_by="max_epochs",
        train_loss=[0.0],
        val_loss=[],
        validation={"how": "none"},
        scaling={"rule": "none"},
        n_cells_used=int(fit_rows(train).sum()),
        n_conditions_used=fit_conditions(train),
        shifted=sorted(shifts),
    )
    write_result(
        workdir,
        predicted,
        train.var_names,
        {
            "peer": request["peer"],
            "version": "test",
            "seed": request["seed"],
            "fit_s": clock.seconds["fit"],
            "predict_s": clock.seconds["predict"],
            "params": request["params"],
            "fit": fit,
            "not_covered": not_covered,
            "notes": "gene-space mean shift (exchange test)",
        },
    )


if __name__ == "__main__":
    main(run)
