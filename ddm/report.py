"""Chapter-sized experiments built from the stages: each function here is one table or figure's
worth of measurement, so the notebooks stay narrative plus calls."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import adjusted_rand_score

from ddm import baselines
from ddm.attribution import fit_attribution_matrix, margin_direction, margin_effects, predict_outputs
from ddm.clustering import Clustering
from ddm.config import ClusterConfig, DistillConfig
from ddm.evaluation import GroundTruth, ddm_effects, output_distance, tenth_rate
from ddm.experiment import Experiment
from ddm.matching import Synset
from ddm.metrics import linear_datamodeling_score, margins
from ddm.online import finetune, leave_one_out_masks, random_masks
from ddm.training import accuracy, predict_logits


def provenance(exp: Experiment) -> str:
    """The footer of every figure: profile, data set and its size."""
    c = exp.config
    label = "CIFAR-10 (JPEG copy)" if c.data.name == "cifar10-jpeg" else c.data.name
    return (f"profile {c.profile} · {label} · {len(exp.train)} train / {len(exp.test)} test · "
            f"{c.model.arch} w{c.model.width} · tau={c.train.epochs}")


# ------------------------------------------------------------------------------- clustering
def clustering_summary(exp: Experiment, methods: tuple[str, ...] = ("pixels", "learned", "sequence")
                       ) -> tuple[pd.DataFrame, dict[str, Clustering]]:
    """K, cluster-size spread and agreement with the pixel clustering for each feature choice."""
    found = {m: exp.clusters(dataclasses.replace(exp.config.clusters, features=m)) for m in methods}
    reference = found[methods[0]].assignment.numpy()
    rows = []
    for name, clustering in found.items():
        sizes = clustering.sizes().numpy()
        rows.append({"features": name, "K": clustering.num_clusters, "smallest": int(sizes.min()),
                     "median": float(np.median(sizes)), "largest": int(sizes.max()),
                     f"adjusted Rand index vs {methods[0]}": adjusted_rand_score(reference, clustering.assignment.numpy())})
    return pd.DataFrame(rows).set_index("features"), found


# ------------------------------------------------------------------------------- distillation
SHORT_NAMES = {
    "DDM, Alg. 1 pairing (t, t+s)": "DDM (Alg. 1)",
    "DDM, Eq. 6 pairing (t, tau-t)": "DDM (Eq. 6)",
    "DDM-match (plain GM)": "DDM-match",
    "DDM + soft labels (ours, not the paper's)": "DDM + soft (ours)",
}


def distill_variants(exp: Experiment) -> dict[str, Synset]:
    """The synsets the book compares: the paper's DDM under both pairings, plain gradient matching
    (DDM-match) and our soft-label extension."""
    base = exp.config.distill
    variants = {
        "DDM, Alg. 1 pairing (t, t+s)": dataclasses.replace(base, method="reverse", pairing="alg1"),
        "DDM, Eq. 6 pairing (t, tau-t)": dataclasses.replace(base, method="reverse", pairing="eq6"),
        "DDM-match (plain GM)": dataclasses.replace(base, method="match"),
        "DDM + soft labels (ours, not the paper's)": dataclasses.replace(base, method="reverse", pairing="alg1",
                                                                       soft_labels=True),
    }
    return {name: exp.synset(cfg) for name, cfg in variants.items()}


def distill_lr_img(exp: Experiment, lr_img: float) -> Synset:
    """The paper's DDM (Alg. 1 pairing) with another image learning rate (Table 5: 0.1; Sec. 4.1: 10)."""
    return exp.synset(dataclasses.replace(exp.config.distill, method="reverse", pairing="alg1", lr_img=lr_img))


def layer_cosine_table(synsets: dict[str, Synset]) -> pd.DataFrame:
    """Per layer, the mean cosine between the synset's gradient and its target after distillation."""
    return pd.DataFrame({name: s.final_layer_cosines for name, s in synsets.items()}).T


def privacy_table(exp: Experiment, synsets: dict[str, Synset]) -> pd.DataFrame:
    """The paper's privacy claim (Fig. 4) in numbers: for every synthetic image, its nearest real
    training image by cosine similarity of pixels. A synset that leaks little is far from every
    real image and rarely has its own starting image as nearest neighbour."""
    real = exp.train.images.reshape(len(exp.train), -1)
    real = real / real.norm(dim=1, keepdim=True)
    rows = []
    entries = {"Real images (the synsets' starting points)": next(iter(synsets.values())).initial_images}
    entries.update({name: s.images for name, s in synsets.items()})
    sources = next(iter(synsets.values())).initial_sources
    for name, images in entries.items():
        flat = images.reshape(len(images), -1)
        flat = flat / flat.norm(dim=1, keepdim=True)
        sim = flat @ real.T
        best, where = sim.max(1)
        rows.append({"synset": name, "mean nearest-real cosine": float(best.mean()),
                     "max nearest-real cosine": float(best.max()),
                     "nearest real = own starting image (%)": float((where == sources).float().mean() * 100)})
    return pd.DataFrame(rows).set_index("synset")


# ------------------------------------------------------------------------------- attribution
def lds_masks(exp: Experiment, num_clusters: int) -> torch.Tensor:
    """The random cluster masks that are retrained exactly for the LDS (seeded by eval.seed)."""
    e = exp.config.eval
    return random_masks(num_clusters, e.lds_masks, 1.0 - e.lds_keep_fraction, seed=e.seed + 1000)


def lds_evaluation(exp: Experiment, synset: Synset, clustering: Clustering, truth: GroundTruth,
                   loo_effects: dict[str, np.ndarray]) -> tuple[pd.DataFrame, dict]:
    """Cluster-level linear datamodeling score. W is fitted by Eq. 8 on DDM's own perturbed
    models (random masks, |P| = max(K, n_perturbations)); every method then predicts the margins
    of random multi-cluster removals that were retrained exactly."""
    K = clustering.num_clusters
    online = exp.config.online
    count = max(K + 1, online.n_perturbations)
    masks = random_masks(K, count, online.delete_fraction, online.seed)
    x = exp.test.images[truth.test_index]
    start = time.perf_counter()
    outputs = exp.perturbed_outputs(synset, masks, x)                          # (P, N, L)
    W, b = fit_attribution_matrix(masks, outputs.reshape(len(masks), -1))
    fit_seconds = time.perf_counter() - start
    W = W.reshape(K, *outputs.shape[1:])
    b = b.reshape(outputs.shape[1:])
    test_masks = lds_masks(exp, K)
    removal = [tuple(torch.nonzero(~m).flatten().tolist()) for m in test_masks]
    exact = exp.exact_retrain_logits(removal, clustering)[:, truth.test_index]  # (M, N, L)
    actual = margins(exact, truth.directions[None]).numpy()                   # (M, N)
    # In-sample fit quality: how well W reproduces DDM's own perturbed outputs.
    own = margins(predict_outputs(W.reshape(K, -1), b.reshape(-1), masks).reshape(outputs.shape),
                  truth.directions[None])
    fit_r = float(np.corrcoef(own.numpy().ravel(), margins(outputs, truth.directions[None]).numpy().ravel())[0, 1])
    deleted = (~test_masks).float().numpy()                                   # (M, K)
    base = margins(truth.target_logits, truth.directions).numpy()             # (N,)
    rows = [{"method": "DDM, W fitted by Eq. 8",
             "LDS (Spearman over masks)": linear_datamodeling_score(
                 margins(predict_outputs(W.reshape(K, -1), b.reshape(-1), test_masks).reshape(len(test_masks), *b.shape),
                         truth.directions[None]).numpy(), actual)}]
    for name, eff in loo_effects.items():
        predicted = base[None, :] - deleted @ eff.T                            # additive model from LOO effects
        rows.append({"method": f"{name} (sum of its LOO effects)",
                     "LDS (Spearman over masks)": linear_datamodeling_score(predicted, actual)})
    info = {"W": W, "b": b, "masks": masks, "fit_seconds": fit_seconds, "in_sample_r": fit_r,
            "lds_masks": len(test_masks)}
    return pd.DataFrame(rows).set_index("method"), info


def class_by_cluster(effects_row: np.ndarray, clustering: Clustering, classes: tuple[str, ...]) -> np.ndarray:
    """Reshape one test point's (K,) cluster effects into (classes, clusters per class)."""
    C = clustering.num_clusters // len(classes)
    return np.asarray(effects_row).reshape(len(classes), C)


def batch_effects(exp: Experiment, synset: Synset, label: int, size: int) -> np.ndarray:
    """(K,) DDM's LOO margin effects averaged over ``size`` test images of one label (Fig. 3/6)."""
    idx = torch.nonzero(exp.test.labels == label).flatten()[:size]
    x, y = exp.test.images[idx], exp.test.labels[idx]
    target = exp.target_logits(x)
    K = int(synset.cluster.max()) + 1
    outputs = exp.perturbed_outputs(synset, leave_one_out_masks(K), x)
    W = target[None] - outputs
    return margin_effects(W, margin_direction(target, y)).numpy().mean(0)


def hierarchical_vs_flat(exp: Experiment, cluster_synset: Synset, class_synset: Synset, clustering: Clustering,
                         truth: GroundTruth) -> tuple[pd.DataFrame, dict]:
    """Supp. Eq. 11 against flat attribution, one test point at a time as in the paper's Fig. 6:
    L class-level fine-tunes, then C within the chosen class, vs K fine-tunes. Reports the measured
    wall-clock ratio, the agreement of the picks and Dist1 of each pick (exact retrain)."""
    L = len(class_synset.labels)
    C = clustering.num_clusters // L
    picks_flat, picks_hier, t_flat, t_hier = [], [], 0.0, 0.0
    for n, i in enumerate(truth.test_index.tolist()):
        x = exp.test.images[i:i + 1]
        target, direction = truth.target_logits[n:n + 1], truth.directions[n:n + 1]
        start = time.perf_counter()
        flat = exp.perturbed_outputs(cluster_synset, leave_one_out_masks(clustering.num_clusters), x)
        picks_flat.append(int(margin_effects(target[None] - flat, direction).argmax()))
        t_flat += time.perf_counter() - start
        start = time.perf_counter()
        by_class = exp.perturbed_outputs(class_synset, leave_one_out_masks(L), x)
        chosen = int(margin_effects(target[None] - by_class, direction).argmax())
        members = torch.arange(chosen * C, (chosen + 1) * C)
        keep = torch.ones(C, clustering.num_clusters, dtype=torch.bool)
        keep[torch.arange(C), members] = False
        inside = exp.perturbed_outputs(cluster_synset, keep, x)
        picks_hier.append(int(members[margin_effects(target[None] - inside, direction).argmax()]))
        t_hier += time.perf_counter() - start
    n_idx = np.arange(len(truth.test_index))
    exact_effects = truth.exact_effects()
    from ddm.metrics import dist1
    rows = []
    for name, picks, seconds, count in (("flat (K fine-tunes)", picks_flat, t_flat, clustering.num_clusters),
                                        ("hierarchical (L + C fine-tunes)", picks_hier, t_hier, L + C)):
        p = torch.as_tensor(picks)
        rows.append({"attribution": name, "fine-tunes per test point": count,
                     "seconds per test point": seconds / len(picks),
                     "Dist1 x100 of the pick": float(dist1(truth.exact_logits[p, n_idx], truth.target_logits).mean() * 100),
                     "pick is exact top cluster (%)": float(np.mean(exact_effects.argmax(1) == np.array(picks)) * 100)})
    info = {"agreement": float(np.mean(np.array(picks_flat) == np.array(picks_hier))),
            "speedup": t_flat / max(t_hier, 1e-9)}
    return pd.DataFrame(rows).set_index("attribution"), info


# ------------------------------------------------------------------------------- unlearning
def unlearning_table(exp: Experiment, synsets: dict[str, Synset]) -> pd.DataFrame:
    """Table 4: accuracy of theta_0, of theta_tau, and of theta_tau fine-tuned on the whole synset
    (every cluster deleted at once: the exact answer is theta_0's accuracy)."""
    model = exp.new_model()
    acc0 = accuracy(predict_logits(model, exp.initial_params(), exp.test.images), exp.test.labels)
    acc_tau = accuracy(exp.target_logits(exp.test.images), exp.test.labels)
    o = exp.config.online
    rows = [{"model": "theta_0 (untrained; = exact unlearning of everything)", "test accuracy (%)": acc0 * 100},
            {"model": "theta_tau (the target)", "test accuracy (%)": acc_tau * 100}]
    for name, synset in synsets.items():
        params = finetune(model, exp.target().final, synset.images, synset.labels, synset.label_logits,
                          o.finetune_steps, o.finetune_lr)
        rows.append({"model": f"theta_tau fine-tuned on the whole synset: {name}",
                     "test accuracy (%)": accuracy(predict_logits(model, params, exp.test.images), exp.test.labels) * 100})
    return pd.DataFrame(rows).set_index("model")


UNCHANGED = "target unchanged (do nothing)"
DDM_PER_CLUSTER = "DDM fine-tune (paper: lr = training lr)"


def unlearning_per_cluster(exp: Experiment, synsets: dict[str, Synset], clustering: Clustering,
                           ddm_name: str = "DDM, Alg. 1 pairing (t, t+s)",
                           soft_name: str = "DDM + soft labels (ours, not the paper's)") -> pd.DataFrame:
    """Fig. 7 with its references: for every cluster k, the output distance (whole test split)
    between the exactly unlearned model (retrained without k) and

    - the unchanged target (doing nothing),
    - DDM's fine-tune on k's synset (Eq. 9) at the paper's rate and at a tenth of it,
    - our soft-label synset at the paper's rate,
    - DDM's fine-tune on a *random other* cluster's synset (a fixed derangement, seeded): random choice,
    - gradient ascent on k's real images (T steps, same rate): what the synset stands in for,
    - the exact retrain without k under another data order: the retraining noise floor.

    Long format: one row per (cluster, method)."""
    K = clustering.num_clusters
    masks = leave_one_out_masks(K)
    exact = exp.exact_retrain_logits([(k,) for k in range(K)], clustering)             # (K, N, L)
    online = exp.config.online
    slow = tenth_rate(online)
    ddm = exp.perturbed_outputs(synsets[ddm_name], masks, exp.test.images)
    generator = torch.Generator().manual_seed(exp.config.eval.seed)
    shift = torch.randint(1, K, (1,), generator=generator).item() if K > 1 else 0
    other = (torch.arange(K) + shift) % K  # every cluster paired with a different one
    model = exp.new_model()
    ascents = baselines.real_ascent_params(model, exp.target().final, exp.train.images, exp.train.labels,
                                           clustering, online.finetune_steps, online.finetune_lr)
    methods = {
        UNCHANGED: exp.target_logits(exp.test.images)[None].expand_as(exact),
        DDM_PER_CLUSTER: ddm,
        "DDM fine-tune, lr / 10": exp.perturbed_outputs(synsets[ddm_name], masks, exp.test.images, slow),
        "DDM + soft labels (ours)": exp.perturbed_outputs(synsets[soft_name], masks, exp.test.images),
        "random choice: another cluster's DDM synset": ddm[other],
        "gradient ascent on the real cluster": torch.stack([predict_logits(model, p, exp.test.images) for p in ascents]),
    }
    for seed in exp.config.eval.noise_seeds[:1]:
        methods[f"noise floor: exact retrain, data order {seed}"] = exp.exact_retrain_logits(
            [(k,) for k in range(K)], clustering, order_seed=seed)
    rows = []
    for name, logits in methods.items():
        for k, distance in enumerate(output_distance(logits, exact).tolist()):
            rows.append({"cluster": k, "method": name, "distance to exact": distance})
    return pd.DataFrame(rows)


def closer_than_doing_nothing(frame: pd.DataFrame) -> pd.DataFrame:
    """Per method of :func:`unlearning_per_cluster`: mean and median distance to the exact
    unlearned model, and the share of clusters where it is closer than the unchanged target."""
    wide = frame.pivot(index="cluster", columns="method", values="distance to exact")
    wide = wide[frame["method"].unique()]
    table = pd.DataFrame({
        "mean distance": wide.mean(),
        "median distance": wide.median(),
        "closer than doing nothing (%)": (wide.lt(wide[UNCHANGED], axis=0)).mean() * 100,
    }).rename_axis("method")
    table.loc[UNCHANGED, "closer than doing nothing (%)"] = np.nan  # not a comparison with itself
    return table


def error_vs_deleted(exp: Experiment, synset: Synset, clustering: Clustering) -> pd.DataFrame:
    """Supp. Eq. 12-13 measured: distance to the exact retrain for 1 deleted cluster (every LOO),
    about half deleted (the LDS masks) and all deleted (the exact answer is theta_0)."""
    K = clustering.num_clusters
    target = exp.target_logits(exp.test.images)
    rows = []
    loo = leave_one_out_masks(K)
    half = lds_masks(exp, K)
    for masks, group in ((loo, "one cluster"), (half, "random subsets (LDS masks)")):
        removal = [tuple(torch.nonzero(~m).flatten().tolist()) for m in masks]
        exact = exp.exact_retrain_logits(removal, clustering)
        ddm = exp.perturbed_outputs(synset, masks, exp.test.images)
        for m, e, d in zip(masks, exact, ddm):
            deleted = int((~m).sum())
            rows.append({"deleted clusters": deleted, "group": group, "model": "DDM fine-tune",
                         "distance to exact": float(output_distance(d, e))})
            rows.append({"deleted clusters": deleted, "group": group, "model": "target unchanged",
                         "distance to exact": float(output_distance(target, e))})
    theta0 = predict_logits(exp.new_model(), exp.initial_params(), exp.test.images)
    all_deleted = exp.perturbed_outputs(synset, torch.zeros(1, K, dtype=torch.bool), exp.test.images)[0]
    rows.append({"deleted clusters": K, "group": "all clusters (exact: theta_0)", "model": "DDM fine-tune",
                 "distance to exact": float(output_distance(all_deleted, theta0))})
    rows.append({"deleted clusters": K, "group": "all clusters (exact: theta_0)", "model": "target unchanged",
                 "distance to exact": float(output_distance(target, theta0))})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------- harmful data removal
REMOVAL_FRACTIONS = (0.01, 0.1, 0.2, 0.5)  # Table 3's columns (beside 0%)


def removal_rankings(exp: Experiment, synset: Synset, clustering: Clustering, val_idx: torch.Tensor,
                     random_seeds: tuple[int, ...] = (0, 1, 2)) -> dict[str, np.ndarray]:
    """Cluster orders, most harmful first, by Supp. Eq. 14 on the validation images ``val_idx``:

    - DDM: the loss of each leave-one-cluster-out fine-tune (Eq. 9) on V,
    - the exact leave-one-out retrains' loss on V (what DDM approximates; an oracle for one cluster),
    - TracIn-style: the first-order change of the loss on V when a cluster is left out,
    - random orders (one per seed).

    Plus, the other way round, DDM's and the exact order *most helpful first*: deleting those
    should hurt more than deleting random clusters if the ranking carries signal."""
    from ddm import removal

    K = clustering.num_clusters
    x, y = exp.test.images[val_idx], exp.test.labels[val_idx]
    ddm_loss = removal.global_objective(exp.perturbed_outputs(synset, leave_one_out_masks(K), x), y)
    exact_loss = removal.global_objective(exp.exact_retrain_logits([(k,) for k in range(K)], clustering)[:, val_idx], y)
    tracin = baselines.tracin_effects(exp.new_model(), exp.target(), exp.train.images, exp.train.labels,
                                      clustering, x, y, exp.config.train.lr).sum(0)   # loss increase on V
    orders = {
        "DDM (Supp. Eq. 14)": removal.harmful_first(ddm_loss),
        "exact leave-one-out retrain": removal.harmful_first(exact_loss),
        "TracIn-style": removal.harmful_first(tracin),
    }
    for seed in random_seeds:
        orders[f"random (seed {seed})"] = np.random.default_rng(seed).permutation(K)
    orders["DDM, most helpful first"] = orders["DDM (Supp. Eq. 14)"][::-1].copy()
    orders["exact leave-one-out, most helpful first"] = orders["exact leave-one-out retrain"][::-1].copy()
    return orders


def harmful_removal(exp: Experiment, synset: Synset, clustering: Clustering,
                    fractions: tuple[float, ...] = REMOVAL_FRACTIONS,
                    random_seeds: tuple[int, ...] = (0, 1, 2)) -> pd.DataFrame:
    """Table 3 measured: for every ranking of :func:`removal_rankings` and every fraction, delete
    the shortest harmful-first prefix of clusters covering that fraction of the training images,
    retrain from theta_0 (the target's data order) and measure accuracy on the held-out half of
    the test split. Rows at 0% are the target itself and, as the noise floor, the same training
    under another data order. Long format, one row per (method, fraction)."""
    from ddm import removal

    val_idx, eval_idx = removal.validation_split(len(exp.test), seed=exp.config.eval.seed)
    orders = removal_rankings(exp, synset, clustering, val_idx, random_seeds)
    sizes = clustering.sizes()
    plan = [(name, f, removal.clusters_for_fraction(order, sizes, f)) for name, order in orders.items() for f in fractions]
    sets = sorted({s for _, _, s in plan})
    logits = dict(zip(sets, exp.exact_retrain_logits(sets, clustering)))
    y = exp.test.labels[eval_idx]
    rows = [{"method": "target (nothing removed)", "fraction (%)": 0.0, "removed (%)": 0.0, "clusters removed": 0,
             "most of one class removed (%)": 0.0, "test accuracy (%)": accuracy(exp.target_logits(exp.test.images[eval_idx]), y) * 100}]
    for seed in exp.config.eval.noise_seeds[:1]:
        other = exp.exact_retrain_logits([()], clustering, order_seed=seed)[0]
        rows.append({"method": f"noise floor: nothing removed, data order {seed}", "fraction (%)": 0.0,
                     "removed (%)": 0.0, "clusters removed": 0, "most of one class removed (%)": 0.0,
                     "test accuracy (%)": accuracy(other[eval_idx], y) * 100})
    total = float(sizes.sum())
    L = exp.num_classes
    per_class = torch.bincount(clustering.cluster_class, weights=sizes.double(), minlength=L)
    for name, f, removed in plan:
        index = torch.tensor(removed, dtype=torch.long)
        gone = torch.bincount(clustering.cluster_class[index], weights=sizes[index].double(), minlength=L)
        rows.append({"method": name, "fraction (%)": f * 100,
                     "removed (%)": float(sizes[index].sum()) / total * 100,
                     "clusters removed": len(removed),
                     # Why accuracy can collapse: a ranking may empty one class of most of its images.
                     "most of one class removed (%)": float((gone / per_class).max()) * 100,
                     "test accuracy (%)": accuracy(logits[removed][eval_idx], y) * 100})
    return pd.DataFrame(rows)


def removal_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Table 3's layout: one row per method, one column per fraction; the random seeds averaged
    into one row (with their spread in a second one)."""
    data = frame[frame["fraction (%)"] > 0].copy()
    random_rows = data["method"].str.startswith("random (seed")
    table = data[~random_rows].pivot(index="method", columns="fraction (%)", values="test accuracy (%)")
    table = table.loc[[m for m in data["method"].unique() if m in table.index]]
    if random_rows.any():
        grouped = data[random_rows].groupby("fraction (%)")["test accuracy (%)"]
        table.loc["random (mean of seeds)"] = grouped.mean()
        table.loc["random (max - min of seeds)"] = grouped.max() - grouped.min()
    table.columns = [f"{c:g}% removed" for c in table.columns]
    return table


# ------------------------------------------------------------------------------- our numbers vs the paper's
def versus_paper(chapter: str, profile: str, numbers: dict, paper=None,
                 notes: dict | None = None, dataset: str | None = None) -> pd.DataFrame:
    """One table: this run's numbers, the recorded numbers of the slowest other profile that has a
    record for this chapter (one column per data set it was recorded on, this run's data set
    first), and the paper's. Blank cells mean "not measured / not reported".

    ``paper`` is either the paper's values for this run's data set (a dict) or a function from a
    data set's name to them; given a function, the table has one paper column for every data set
    of the paper among this run's and the recorded ones (MNIST beside CIFAR-10, say)."""
    from ddm import book, paper as published, results

    records = results.records_beside(chapter, exclude=profile)
    records.sort(key=lambda r: r["config"]["data"]["name"] != dataset)
    recorded = {f"recorded_{i}": (f"ours (recorded, profile {r['profile']}, "
                                  f"{book.dataset_label(r['config']['data']['name'])})")
                for i, r in enumerate(records)}
    if callable(paper):
        names = [dataset] + [r["config"]["data"]["name"] for r in records]
        keys = list(dict.fromkeys(k for k in (published.paper_key(n) for n in names if n) if k))
        by_key = {k: paper(k) for k in keys}
        papers = {f"paper_{k}": f"paper ({book.dataset_label(k)})" for k in keys if any(by_key[k].values())}
    else:
        by_key = {"this": paper or {}}
        label = f"paper ({book.dataset_label(dataset)})" if dataset and any(by_key["this"].values()) else "paper"
        papers = {"paper_this": label}
    notes = notes or {}
    rows = []
    for key, value in numbers.items():
        row = {"quantity": key, "this_run": value}
        for i, r in enumerate(records):
            row[f"recorded_{i}"] = r["numbers"].get(key)
        for column in papers:
            row[column] = by_key[column.removeprefix("paper_")].get(key)
        if notes.get(key):
            row["note"] = notes[key]
        rows.append(row)
    return book.comparison_table(rows, this_profile=profile, recorded_columns=recorded or None,
                                 paper_columns=papers)


def attribution_paper_values(dataset: str) -> dict:
    """Chapter 03's quantities as the paper reports them for ``dataset`` (Table 1, Supp. 6.2)."""
    from ddm import paper

    key = paper.paper_key(dataset)
    if key not in ("mnist", "cifar10", "cifar100"):
        return {}
    return {"Dist1 x100, DDM": paper.TABLE1["DDM-full"][key][0],
            "Dist1 x100, random": paper.TABLE1["Random Select"][key][0],
            "hierarchical speed-up (x)": paper.HIERARCHICAL_SPEEDUP.get(key)}


def unlearning_paper_values(dataset: str) -> dict:
    """Chapter 04's quantities as the paper's Table 4 reports them for ``dataset``."""
    from ddm import paper

    t4 = paper.TABLE4.get(paper.paper_key(dataset))
    if t4 is None:
        return {}
    return {"Acc theta_0 (%)": t4["Normal"][0], "Acc_tau: target (%)": t4["Normal"][1],
            "Acc after fine-tuning on whole synset, DDM (%)": t4["DDM"][0],
            "Acc after fine-tuning on whole synset, DDM-match (%)": t4["DDM-match"][0]}


def record_if_asked(record: bool, chapter: str, exp: Experiment, numbers: dict) -> str:
    """Write this run's headline numbers to results/<profile>/<chapter>.json when asked."""
    if not record:
        return "not recorded (record=False)"
    from ddm import results

    profile, dataset = exp.config.profile, exp.config.data.name
    name = results.record_name(chapter, profile, dataset)
    with_dataset = f" DATASET={dataset}" if name != chapter else ""
    command = (f"make record PROFILE={profile} DATA_ROOT={exp.data_root}{with_dataset}  "
               f"# papermill notebooks/{chapter}.ipynb -p profile {profile} "
               f"-p data_root {exp.data_root}"
               f"{f' -p dataset {dataset}' if with_dataset else ''} -p record True")
    path = results.record_results(profile, name, numbers, exp.config.to_dict(), command)
    return f"recorded to {path}"


def second_dataset_synsets(profile: str, second_dataset: str | None, data_root, overrides: dict
                           ) -> tuple[Experiment, dict[str, Synset]] | None:
    """GM and reverse-GM synsets on a second data set (Fig. 4 shows two). ``"auto"`` picks the
    CIFAR-10 JPEG copy beyond the offline ``quick`` profile (MNIST when the chapter already runs
    on CIFAR-10); ``None`` when there is no second data set."""
    from ddm.config import get_profile

    first = overrides.get("data.name") or get_profile(profile).data.name
    if second_dataset == "auto":
        second_dataset = (None if profile == "quick"
                          else "mnist" if first == "cifar10-jpeg" else "cifar10-jpeg")
    if not second_dataset or second_dataset == first:
        return None
    rest = {k: v for k, v in overrides.items() if k != "data.name"}
    other = Experiment.create(get_profile(profile, **rest, **{"data.name": second_dataset}),
                              data_root=data_root, progress=False)
    base = other.config.distill
    synsets = {"GM (DDM-match)": other.synset(dataclasses.replace(base, method="match")),
               "reverse GM (DDM)": other.synset(dataclasses.replace(base, method="reverse", pairing="alg1"))}
    return other, synsets


def matching_verdict(numbers: dict) -> str:
    """Plain-words reading of the chapter's measured numbers (no number is invented here)."""
    lines = []
    hard = numbers["classifier-layer cosine, DDM (hard labels)"]
    soft = numbers["classifier-layer cosine, DDM + soft labels (ours)"]
    lines.append(f"* **Classifier layer.** With hard labels the synset's classifier gradient ends at cosine "
                 f"{hard:+.2f} with the reversed real gradient; with learnable soft labels (ours) at {soft:+.2f}. "
                 + ("Soft labels fix the sign problem explained above." if soft > hard + 0.1 else
                    "Soft labels did not help here."))
    gm, rev = numbers["nearest-real cosine, DDM-match synset"], numbers["nearest-real cosine, DDM synset"]
    if rev < gm - 0.01:
        lines.append(f"* **Privacy (Fig. 4).** Reverse-matched images are farther from every real image than "
                     f"plain-GM images (mean nearest-real cosine {rev:.3f} vs {gm:.3f}): the paper's claim holds "
                     f"in this run.")
    else:
        lines.append(f"* **Privacy (Fig. 4).** Reverse-matched images are *not* farther from the real images "
                     f"than plain-GM ones in this run (mean nearest-real cosine {rev:.3f} vs {gm:.3f}): the "
                     f"paper's visual claim is not supported by this measurement.")
    own_gm, own_rev = numbers["own start is nearest (%), DDM-match"], numbers["own start is nearest (%), DDM"]
    kept = "keeps much of its starting image" if max(own_rev, own_gm) >= 50 else "moves away from its starting image"
    lines.append(f"* **Memorisation.** The nearest real image is the synthetic image's own starting image for "
                 f"{own_rev:.0f}% of DDM's and {own_gm:.0f}% of DDM-match's images: at these settings a synset "
                 f"initialised from real images {kept}. Pixel cosine near 0 or below means the image was "
                 f"turned into something unlike any training image (reverse matching inverts strokes).")
    return "\n".join(lines)


def attribution_verdict(numbers: dict) -> str:
    """Plain-words reading of the attribution chapter's measured numbers."""
    ddm = numbers["Spearman vs exact, DDM (paper's method)"]
    soft = numbers["Spearman vs exact, DDM + soft labels (ours)"]
    tracin = numbers["Spearman vs exact, TracIn-style"]
    rand = numbers["Spearman vs exact, random"]
    floor = numbers["Spearman vs exact, noise floor"]
    lines = [f"* **Ranking clusters.** DDM as printed reaches a Spearman correlation of {ddm:+.2f} with exact "
             f"leave-one-cluster-out retraining (random: {rand:+.2f}, TracIn-style: {tracin:+.2f}, our soft-label "
             f"variant: {soft:+.2f}); exact retraining under another data order agrees with itself at {floor:+.2f}."]
    if ddm < rand - 0.05:
        lines.append("  DDM does **worse than random choice** here: its ranking runs against exact retraining "
                     "(a negative correlation), so the paper's ranking claim does not reproduce in this run.")
    elif ddm <= rand + 0.05:
        lines.append("  DDM is **not distinguishable from random choice** (within 0.05 of it) at this scale: "
                     "the paper's ranking claim does not reproduce in this run.")
    elif ddm < tracin:
        lines.append("  DDM carries some signal but **less than a simple TracIn-style sum** over the same "
                     "checkpoints, which costs no distillation.")
    else:
        lines.append("  DDM beats the simple baselines here.")
    lines.append(f"* **Dist1 (Table 1's metric).** Exact unlearning of DDM's pick moves the output by "
                 f"{numbers['Dist1 x100, DDM']:.2f} (x100) against {numbers['Dist1 x100, random']:.2f} for a random "
                 f"pick. Dist1 rewards picking clusters whose removal changes the output most; compare it with the "
                 f"upper bound row of the table (the exact retrain's own best pick).")
    lines.append(f"* **Linear datamodel.** W fitted by Eq. 8 predicts exactly retrained multi-cluster removals "
                 f"with LDS {numbers['LDS, DDM W (Eq. 8)']:+.2f}.")
    lines.append(f"* **Hierarchy.** Hierarchical attribution was {numbers['hierarchical speed-up (x)']:.1f}x faster "
                 f"than flat and picked the same cluster for {numbers['hierarchical = flat pick (%)']:.0f}% of test "
                 f"points; the paper's 5x is for K = 100, where L + C = 20 fine-tunes replace 100.")
    lines.append(f"* **Cost.** The online stage for all K clusters took {numbers['online seconds for all K (DDM)']:.1f} s "
                 f"against {numbers['exact retrain seconds for all K']:.0f} s of exact retraining in this run: the K "
                 f"leave-one-out retrains *and* the K + 1 of the noise floor, so about twice what K retrains cost "
                 f"(0 s when they came from the cache; `benchmarks/bench_online.py` measures the ratio properly). "
                 f"The offline distillation comes on top of the online stage, once.")
    return "\n".join(lines)


def unlearning_verdict(numbers: dict) -> str:
    """Plain-words reading of the unlearning chapter's measured numbers."""
    acc0, acct = numbers["Acc theta_0 (%)"], numbers["Acc_tau: target (%)"]
    ddm = numbers["Acc after fine-tuning on whole synset, DDM (%)"]
    match = numbers["Acc after fine-tuning on whole synset, DDM-match (%)"]
    closer = numbers["clusters where DDM is closer to exact than no change (%)"]
    lines = [f"* **Unlearning everything (Table 4).** Fine-tuning the {acct:.1f}% target on DDM's whole synset "
             f"leaves {ddm:.1f}% test accuracy (DDM-match: {match:.1f}%); exact unlearning of everything is "
             f"theta_0 at {acc0:.1f}%."]
    if ddm < acct - 20:
        lines.append("  The synset does erase what the network learnt, as the paper reports"
                     + (" — even past chance, like the paper's 0.6% on MNIST." if ddm < acc0 - 2 else "."))
    else:
        lines.append("  The synset does **not** erase the network's knowledge at these settings: the paper's "
                     "Table 4 effect does not reproduce here.")
    lines.append(f"* **Per cluster (Fig. 7).** DDM's fine-tuned model is closer to the exact unlearned model than "
                 f"the untouched target for {closer:.0f}% of clusters (mean distance "
                 f"{numbers['mean distance to exact, DDM (1 cluster)']:.4f} vs "
                 f"{numbers['mean distance to exact, unchanged (1 cluster)']:.4f}). "
                 + ("Doing nothing is the better approximation of unlearning one cluster here." if closer < 50 else
                    "DDM moves most clusters' models the right way."))
    slow = numbers.get("mean distance to exact, DDM lr / 10 (1 cluster)")
    if slow is not None:
        lines.append(f"  At a tenth of the fine-tuning rate DDM's mean distance is {slow:.4f} and it is closer than "
                     f"doing nothing for {numbers['clusters where DDM lr / 10 is closer to exact than no change (%)']:.0f}%"
                     " of clusters: " + ("a smaller step beats doing nothing for most clusters, so the paper's rate "
                                         "overshoots while the direction is right."
                                         if numbers["clusters where DDM lr / 10 is closer to exact than no change (%)"] >= 50
                                         else "a smaller step only stays nearer the untouched target without passing "
                                         "it, so the direction of the update, not just its size, misses the exact model."))
    rand = numbers.get("mean distance to exact, random other cluster's synset (1 cluster)")
    if rand is not None:
        ddm_mean = numbers["mean distance to exact, DDM (1 cluster)"]
        lines.append(f"  Fine-tuning on a *random other* cluster's synset lands at {rand:.4f} "
                     + ("— as close as the right cluster's, so the synset's effect is not specific to its cluster."
                        if rand <= ddm_mean * 1.1 else
                        f"— farther than the right cluster's {ddm_mean:.4f}, so the synset carries some cluster-specific signal."))
    floor = numbers.get("mean distance to exact, noise floor (1 cluster)")
    if floor is not None:
        unchanged = numbers["mean distance to exact, unchanged (1 cluster)"]
        lines.append(f"* **Noise floor.** The same exact retrain under another data order is {floor:.4f} away, the "
                     f"untouched target {unchanged:.4f}. "
                     + ("Removing one cluster moves the exact model *less* than changing the data order does, so at "
                        "this scale a one-cluster unlearning error below that floor cannot be told apart from noise."
                        if floor >= unchanged else
                        "Removing a cluster moves the model more than reshuffling the data, so the comparison has signal."))
    return "\n".join(lines)


def removal_detail(frame: pd.DataFrame) -> pd.DataFrame:
    """What each ranking really removed at each requested fraction: "share of the training set
    (largest share of a single class)", e.g. "11.6% (46%)"."""
    data = frame[frame["fraction (%)"] > 0].copy()
    data["removed"] = [f"{r:.1f}% ({c:.0f}%)" for r, c in zip(data["removed (%)"], data["most of one class removed (%)"])]
    table = data.pivot(index="method", columns="fraction (%)", values="removed")
    table = table.loc[list(data["method"].unique())]
    table.columns = [f"asked {c:g}%" for c in table.columns]
    return table


def removal_numbers(frame: pd.DataFrame) -> dict[str, float]:
    """The headline numbers of the harmful-removal chapter, named for the comparison table."""
    table = removal_table(frame)
    base = frame[frame["fraction (%)"] == 0].set_index("method")["test accuracy (%)"]
    numbers = {"accuracy, nothing removed (%)": float(base.iloc[0])}
    if len(base) > 1:
        numbers["accuracy, nothing removed, another data order (%)"] = float(base.iloc[1])
    rows = {"DDM (Supp. Eq. 14)": "DDM", "random (mean of seeds)": "random",
            "exact leave-one-out retrain": "exact LOO ranking", "TracIn-style": "TracIn-style",
            "DDM, most helpful first": "DDM most helpful first"}
    for column in table.columns:
        for row, short in rows.items():
            if row in table.index:
                numbers[f"accuracy after removing {column.split(' ')[0]}, {short} (%)"] = float(table.loc[row, column])
    return numbers


def removal_paper_values(dataset: str) -> dict[str, float]:
    """Table 3's DDM and Random rows, keyed like :func:`removal_numbers` (MNIST only)."""
    from ddm import paper

    if paper.paper_key(dataset) != "mnist":
        return {}
    values = {"accuracy, nothing removed (%)": paper.TABLE3_MNIST["DDM"][0]}
    for x in (1, 10, 20, 50):
        values[f"accuracy after removing {x}%, DDM (%)"] = paper.TABLE3_MNIST["DDM"][x]
        values[f"accuracy after removing {x}%, random (%)"] = paper.TABLE3_MNIST["Random"][x]
    return values


def removal_paper_curves(dataset: str) -> dict[str, dict[float, float]]:
    """Table 3's DDM and Random rows as curves (fraction in % -> accuracy) for the figure; MNIST only."""
    from ddm import paper

    if paper.paper_key(dataset) != "mnist":
        return {}
    return {name: {x: v for x, v in paper.TABLE3_MNIST[name].items() if x > 0} for name in ("DDM", "Random")}


def removal_verdict(frame: pd.DataFrame) -> str:
    """Plain-words reading of the harmful-removal measurements."""
    table = removal_table(frame)
    base = frame[frame["fraction (%)"] == 0]["test accuracy (%)"].to_numpy()
    target, floor = float(base[0]), float(np.ptp(base)) if len(base) > 1 else float("nan")
    ddm, rand = table.loc["DDM (Supp. Eq. 14)"], table.loc["random (mean of seeds)"]
    spread = table.loc["random (max - min of seeds)"]
    lines = [f"* **Noise floor.** The target scores {target:.1f}%; the same training under another data order "
             f"differs by {floor:.1f} points. Differences smaller than that are not evidence either way."]
    beats = [c for c in table.columns if ddm[c] - rand[c] > max(floor, spread[c] / 2)]
    lines.append(f"* **DDM vs random removal (the paper's Table 3 claim).** DDM's harmful-first removal is clearly "
                 f"better than random at {len(beats)} of {len(table.columns)} fractions"
                 + (f" ({', '.join(beats)})" if beats else "")
                 + "; per fraction, DDM − random = "
                 + ", ".join(f"{c.split(' ')[0]}: {ddm[c] - rand[c]:+.1f}" for c in table.columns) + " points.")
    first = table.columns[0]
    gain = ddm[first] - target
    lines.append(f"* **Does removing data help?** After removing {first.split(' ')[0]} by DDM's ranking the accuracy is "
                 f"{ddm[first]:.1f}% ({gain:+.1f} points); the paper reports +0.5 on MNIST. "
                 + ("That gain is above the noise floor." if gain > floor else
                    "That loss is beyond the noise floor." if gain < -floor else "That is within the noise floor."))
    if "exact leave-one-out retrain" in table.index:
        exact = table.loc["exact leave-one-out retrain"]
        lines.append("* **Oracle ranking.** Ranking by the exact leave-one-out retrains instead gives "
                     + ", ".join(f"{exact[c]:.1f}%" for c in table.columns)
                     + ": what a perfect leave-one-out estimate would give (a reference, not a ceiling: removing "
                     "many clusters at once is not the sum of removing each).")
    if "DDM, most helpful first" in table.index:
        helpful = table.loc["DDM, most helpful first"]
        drop = [c for c in table.columns if rand[c] - helpful[c] > max(floor, spread[c] / 2)]
        lines.append("* **Signal check, the other way round.** Deleting DDM's *most helpful* clusters first should hurt "
                     f"more than random deletion if DDM's ranking means anything; it does so clearly at {len(drop)} of "
                     f"{len(table.columns)} fractions"
                     + ("; for comparison, the exact ranking's most helpful clusters, deleted first, leave "
                        + ", ".join(f"{v:.1f}%" for v in table.loc["exact leave-one-out, most helpful first"]) + "."
                        if "exact leave-one-out, most helpful first" in table.index else "."))
        both = [c for c in drop if rand[c] - ddm[c] > max(floor, spread[c] / 2)]
        if both:
            lines.append(f"  At {', '.join(both)} DDM's *harmful-first* removal hurts as well: both ends of its ranking "
                         "cost accuracy, so what it separates is not good from bad data. The bracketed class shares "
                         "in the removal table show the likelier cause: its top clusters crowd into a few classes.")
    return "\n".join(lines)
