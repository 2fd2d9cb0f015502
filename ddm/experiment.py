"""One experiment, stage by stage, every stage's output cached in the store.

``Experiment`` ties a configuration to its data and model and hands out the artifacts of the
data flow (clusters -> target trajectory -> synset -> perturbed models; exact retrains beside
them), each computed once and keyed by the part of the configuration that made it. Chapters
and the command line call these methods; the math lives in the stage modules.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ddm import clustering as clustering_mod
from ddm import noise as noise_mod
from ddm.clustering import Clustering
from ddm.config import (ClusterConfig, DistillConfig, ExperimentConfig, OnlineConfig, check_threads,
                        config_hash, resolve_cache_root, resolve_data_root)
from ddm.data import ImageData, check_splits_agree, load_dataset
from ddm.matching import Synset, distill_synset
from ddm.models import ARCHITECTURES, CustomModel, as_custom_model, build_model, check_model, model_signature, penultimate_features
from ddm.online import perturbed_models, predict_many
from ddm.store import ArtifactStore
from ddm.training import (Params, RetrainJob, Trajectory, get_params, predict_logits, resolve_scheduler,
                          run_retrains, train_trajectory)

log = logging.getLogger(__name__)


def _digest(*tensors: torch.Tensor | None) -> str:
    """A hash of tensors' values (None included as such), for in-memory memo keys."""
    h = hashlib.sha256()
    for t in tensors:
        h.update(b"none" if t is None else t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _asdict(obj: Any) -> Any:
    return dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else obj


@dataclass
class Experiment:
    config: ExperimentConfig
    train: ImageData
    test: ImageData
    store: ArtifactStore
    data_root: Path
    progress: bool = True
    custom_model: CustomModel | None = None   # a network passed in (model.arch "custom:<name>")
    noisy_indices: torch.Tensor | None = None  # the training images given noise (config.noise), sorted; None: clean
    _memo: dict = dataclasses.field(default_factory=dict, repr=False)

    def _cached(self, kind: str, key: dict, compute) -> Any:
        """The store's artifact, kept in memory after the first load (chapters ask often)."""
        memo_key = (kind, config_hash(key))
        if memo_key not in self._memo:
            self._memo[memo_key] = self.store.get_or_compute(kind, key, compute)
        return self._memo[memo_key]

    # ---------------------------------------------------------------- construction
    @classmethod
    def create(cls, config: ExperimentConfig, data_root=None, cache_root=None, progress: bool = True,
               download: bool = False, model: Any = None) -> "Experiment":
        """Load the configured data and open the store. ``config.threads`` is the one thread
        setting of a run (the command line's ``--threads`` and the benchmarks' set it there): it
        is applied to torch here, process-wide; 0 leaves torch's own choice.

        ``model``: None (``config.model.arch``), an architecture name, or a network of one's own
        (an ``nn.Module``, a factory ``(in_channels, num_classes, image_size) -> nn.Module`` or
        ``"package.module:name"``; see :class:`ddm.models.CustomModel`). The data, the network
        and the clustering are checked against each other here, before any training."""
        if check_threads(config.threads):
            # On a small shared CPU one thread is often faster than two, and a fixed count keeps
            # retrains bit-identical to the target (float sums depend on the thread split).
            torch.set_num_threads(config.threads)
        custom = None
        if isinstance(model, str) and model in ARCHITECTURES:
            config = config.with_overrides(**{"model.arch": model})
        elif model is not None:
            custom = as_custom_model(model)
            config = config.with_overrides(**{"model.arch": custom.arch})
        root = resolve_data_root(data_root)
        d = config.data
        train = load_dataset(d.name, "train", root, per_class=d.train_per_class, seed=d.seed, download=download)
        test = load_dataset(d.name, "test", root, per_class=d.test_per_class, seed=d.seed, download=download)
        noisy = None
        if config.noise.fraction > 0:   # Supp. 9.2 / Table 6: noise on a seeded share of the training images
            n = config.noise
            train, noisy = noise_mod.noisy_copy(train, n.fraction, n.norm, n.kind, n.seed)
        if config.device.startswith("cuda") and not torch.cuda.is_available():
            raise RuntimeError("device='cuda' was asked for but no CUDA GPU is visible; use device='cpu'")
        store = ArtifactStore(resolve_cache_root(cache_root))
        experiment = cls(config, train, test, store, root, progress, custom, noisy)
        experiment.check()
        return experiment

    def check(self) -> None:
        """Fail early, with the fix in the message, on what would otherwise fail hours later:
        train and test splits that disagree, a class smaller than the clusters asked of it, a
        network that cannot take the images or whose output is not one logit per class."""
        check_splits_agree(self.train, self.test)
        clustering_mod.check_class_sizes(self.train.labels, self.config.clusters.clusters_per_class)
        model = self.new_model()
        check_model(model, self.train.images[:2], self.num_classes)

    @property
    def device(self) -> str:
        return self.config.device

    @property
    def num_classes(self) -> int:
        return self.train.num_classes

    def new_model(self) -> nn.Module:
        """theta_0: the architecture initialised with the configured scheme and seed."""
        return build_model(self.config.model, self.train.channels, self.num_classes, self.train.image_size,
                           custom=self.custom_model)

    def initial_params(self) -> Params:
        return get_params(self.new_model())

    def _key(self, *parts: str, **extra: Any) -> dict:
        key = {"data": _asdict(self.config.data), "data_fingerprint": self._fingerprint()}
        if self.config.noise.fraction > 0:
            # noisy training images: never the clean artifacts (a clean key has no "noise" entry)
            key["noise"] = _asdict(self.config.noise)
        for part in parts:
            key[part] = _asdict(getattr(self.config, part))
        if "model" in parts and self.custom_model is not None:
            key["model_signature"] = self._model_signature()
        key.update({k: _asdict(v) for k, v in extra.items()})
        return key

    def _model_signature(self) -> str:
        if "model_signature" not in self._memo:
            self._memo["model_signature"] = model_signature(self.new_model())
        return self._memo["model_signature"]

    def _fingerprint(self) -> str:
        # Guards against another data root holding different files under the same name.
        labels = self.train.labels.numpy()
        return f"{len(self.train)}:{int(self.train.source_indices.sum())}:{int(labels.sum())}:" \
               f"{float(self.train.images[:64].sum()):.4f}"

    # ---------------------------------------------------------------- stages
    def target(self) -> Trajectory:
        """Eq. 2: the target network's trajectory theta_0..theta_tau (cached)."""
        def compute():
            start = time.perf_counter()
            trajectory = train_trajectory(self.new_model(), self.initial_params(), self.train.images,
                                          self.train.labels, self.config.train, device=self.device,
                                          progress=self.progress)
            log.info("target trained in %.1f s", time.perf_counter() - start)
            return trajectory
        return self._cached("target", self._key("model", "train"), compute)

    def clusters(self, config: ClusterConfig | None = None) -> Clustering:
        """Supp. 6.1: per-class clusters of the training set (cached)."""
        config = config or self.config.clusters
        extra: dict[str, Any] = {"clusters": config}
        if config.features == "learned":
            extra.update(model=self.config.model, train=self.config.train)

        return self._cached("clusters", self._key(**extra), lambda: self.compute_clusters(config))

    def compute_clusters(self, config: ClusterConfig) -> Clustering:
        """Supp. 6.1 computed now, not read from the store (:meth:`clusters` caches it; the speed
        chapter times it)."""
        labels = self.train.labels
        if config.features == "sequence":
            return clustering_mod.sequence_clusters(labels, config.clusters_per_class)
        if config.features == "class":
            return clustering_mod.class_groups(labels)
        features = self.features(config.features, self.train.images)
        return clustering_mod.kmeans_clusters(features, labels, config.clusters_per_class, config.seed,
                                              method=f"kmeans-{config.features}")

    def class_groups(self) -> Clustering:
        return self.clusters(dataclasses.replace(self.config.clusters, features="class"))

    def features(self, kind: str, images: torch.Tensor) -> np.ndarray:
        """Features for clustering and the nearest-centroid baseline: pixels, or the target
        network's penultimate layer ('learned')."""
        if kind == "pixels":
            return clustering_mod.pixel_features(images)
        if kind == "learned":
            model = self.new_model()
            from ddm.training import set_params
            set_params(model, self.target().final)
            with torch.no_grad():
                return torch.cat([penultimate_features(model, chunk) for chunk in images.split(512)]).double().numpy()
        raise ValueError(f"unknown feature kind {kind!r}; choose 'pixels', 'learned', 'sequence' or 'class'")

    def synset(self, distill: DistillConfig | None = None, clusters: ClusterConfig | None = None) -> Synset:
        """Algorithm 1: the distilled synset for the configured clusters (cached, resumable)."""
        distill = distill or self.config.distill
        clusters = clusters or self.config.clusters
        # The displacement target is scaled by the online fine-tune it must reproduce.
        extra = {"online": self.config.online} if distill.method == "displacement" else {}
        key = self._key("model", "train", clusters=clusters, distill=distill, **extra)
        synset = self._cached("synset", key, lambda: self._distill(key, distill, clusters))
        checkpoint = self.store.checkpoint_path("synset", key)
        if checkpoint is not None:
            checkpoint.unlink(missing_ok=True)  # the finished synset is saved: its partial state is spent
        return synset

    def _distill(self, key: dict, distill: DistillConfig, clusters: ClusterConfig) -> Synset:
        start = time.perf_counter()
        synset = self.compute_synset(distill, self.clusters(clusters), self.target(),
                                     checkpoint_path=self.store.checkpoint_path("synset", key))
        log.info("synset distilled in %.1f s", time.perf_counter() - start)
        return synset

    def compute_synset(self, distill: DistillConfig, clustering: Clustering, trajectory: Trajectory,
                       checkpoint_path=None, progress: bool | None = None) -> Synset:
        """Algorithm 1 computed now, not read from the store (:meth:`synset` caches it; the speed
        chapter times it), for any ``clustering`` and ``trajectory``."""
        scale = None
        if distill.method == "displacement":
            train, online = self.config.train, self.config.online
            sizes = torch.bincount(clustering.assignment, minlength=clustering.num_clusters).float()
            scale = train.lr * sizes / (train.batch_size * online.finetune_lr * online.finetune_steps)
        return distill_synset(self.new_model(), trajectory, self.train.images, self.train.labels, clustering,
                              self.num_classes, distill, checkpoint_path=checkpoint_path,
                              progress=self.progress if progress is None else progress, device=self.device,
                              displacement_scale=scale)

    def perturbed_outputs(self, synset: Synset, keep_masks: torch.Tensor, images: torch.Tensor,
                          online: OnlineConfig | None = None) -> torch.Tensor:
        """Eq. 9 for every mask, then the logits of every perturbed model on ``images``: (M, N, L)."""
        online = online or self.config.online
        model = self.new_model()
        # The fine-tunes are kept in memory: chapters ask for the same masks again on other test
        # points (chapter 06's Eq. 8 picks and its LDS; chapter 04's leave-one-out), and a
        # fine-tune is deterministic in (synset, masks, online settings).
        key = ("perturbed", _digest(synset.images, synset.cluster, synset.label_logits, keep_masks), config_hash(online))
        models = self._memo.get(key)
        if models is None:
            models = perturbed_models(model, self.target().final, synset.images, synset.labels, synset.label_logits,
                                      synset.cluster, keep_masks, online.finetune_steps, online.finetune_lr,
                                      vectorised=online.vectorised, progress=self.progress)
            self._memo[key] = models
        return predict_many(model, models, images)

    def target_logits(self, images: torch.Tensor) -> torch.Tensor:
        return predict_logits(self.new_model(), self.target().final, images)

    # ---------------------------------------------------------------- exact unlearning
    def retrain_key(self, removal: tuple[int, ...], clustering: Clustering, order_seed: int) -> dict:
        """The store key of the exact retrain without the clusters ``removal`` under ``order_seed``."""
        return self._key("model", "train", clustering=clustering.assignment.tolist(),
                         removed=sorted(int(c) for c in removal), order_seed=order_seed)

    def exact_retrain_logits(self, removal_sets: list[tuple[int, ...]], clustering: Clustering,
                             order_seed: int | None = None, workers: int | None = None) -> torch.Tensor:
        """Exact unlearning of every removal set (cluster ids of ``clustering``): logits of each
        retrained network on the whole test set, (R, N_test, L). Every retrain is its own cached
        artifact, so an interrupted batch resumes where it stopped and jobs run in parallel: in
        ``eval.workers`` processes, or on the Dask engine ``eval.scheduler`` (else
        ``$DDM_SCHEDULER``) names. Workers return parameters; this process alone writes the store.
        Processes sharing the store split the sets between them: a set another process has claimed
        (:meth:`ddm.store.ArtifactStore.claim`) is waited for, not retrained twice."""
        seed = self.config.train.order_seed if order_seed is None else order_seed
        workers = self.config.eval.workers if workers is None else workers
        scheduler = resolve_scheduler(self.config.eval.scheduler)   # checked before any work
        keys = [self.retrain_key(removal, clustering, seed) for removal in removal_sets]
        model = self.new_model()
        if workers > 1 and not scheduler and type(model).__module__ == "__main__":
            # Spawned worker processes import a class by name and cannot find one defined in a
            # notebook; Dask's workers get it by value (cloudpickle).
            log.warning("%s is defined in __main__ (a notebook?), which spawned workers cannot import: the "
                        "retrains run in this process (eval.scheduler='local' runs them in parallel)",
                        type(model).__name__)
            workers = 1
        # One job per distinct removal set not yet in the store (a set may be listed twice).
        first_of = {}
        for i, key in enumerate(keys):
            first_of.setdefault(config_hash(key), i)
        pending = [i for i in first_of.values() if not self.store.exists("retrain", keys[i])]
        while pending:
            # Another process sharing the store (a chapter executed beside this one) may be
            # retraining some of the same sets: take those no one has claimed, leave it the rest.
            claims = [self.store.claim("retrain", keys[i], wait=False) for i in pending]
            mine = [i for i, claim in zip(pending, claims)
                    if claim is not None and not self.store.exists("retrain", keys[i])]
            try:
                if mine:
                    jobs = [RetrainJob(clustering.removal_mask(removal_sets[i]), seed) for i in mine]

                    def save(j: int, params: Params) -> None:
                        logits = predict_logits(model, params, self.test.images, device=self.device)
                        self.store.save("retrain", keys[mine[j]], {"test_logits": logits})

                    run_retrains(model, self.initial_params(), self.train.images, self.train.labels,
                                 self.config.train, jobs, workers=workers, device=self.device,
                                 progress=self.progress, on_result=save, scheduler=scheduler)
            finally:
                for claim in claims:
                    if claim is not None:
                        claim.release()
            pending = [i for i in pending if not self.store.exists("retrain", keys[i])]
            if pending and not mine:
                # Every set left is another process's: wait for the first, then look again (what
                # a process that stopped left undone is claimed and retrained here next round).
                self.store.claim("retrain", keys[pending[0]]).release()
        return torch.stack([self.store.load("retrain", key)["test_logits"] for key in keys])

    def test_point_indices(self) -> torch.Tensor:
        """The evaluation's random test points (paper: 20), seeded."""
        n = min(self.config.eval.n_test_points, len(self.test))
        generator = torch.Generator().manual_seed(self.config.eval.seed)
        return torch.randperm(len(self.test), generator=generator)[:n].sort().values
