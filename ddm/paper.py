"""The paper's published numbers, cited so chapters can set ours beside them.

Source: Ye, Yu, Liu, Wang, "Distilled Datamodel with Reverse Gradient Matching", CVPR 2024
(tables as restated in ../shared/paper/NOTES.md). Nothing here is measured by this project.
"""

# Table 1 (ablation): Dist1 x100 / Dist2 / Dist3 for MNIST, CIFAR-10, CIFAR-100. None = not reported.
TABLE1 = {
    "Random Select": {"mnist": (3.3, 0.43, 0.07), "cifar10": (2.7, 0.34, 0.54), "cifar100": (2.3, 0.54, 0.8)},
    "Predict-based": {"mnist": (5.5, None, None), "cifar10": (3.1, None, None), "cifar100": (3.9, None, None)},
    "Clustering-based": {"mnist": (6.2, None, None), "cifar10": (2.5, None, None), "cifar100": (3.6, None, None)},
    "DDM w/o cluster": {"mnist": (9.1, 0.55, 0.11), "cifar10": (5.9, 0.57, 0.78), "cifar100": (3.5, 0.77, 1.2)},
    "DDM-match": {"mnist": (10.8, 0.73, 0.13), "cifar10": (5.8, 0.76, 0.81), "cifar100": (4.8, 0.71, 1.6)},
    "DDM-full": {"mnist": (10.8, 0.73, 0.13), "cifar10": (6.8, 0.81, 0.92), "cifar100": (5.3, 0.88, 1.6)},
}

# Table 2: Dist1 x100 of the cluster each method locates, MNIST / CIFAR-10 / CIFAR-100.
TABLE2 = {
    "Random": {"mnist": 3.3, "cifar10": 2.7, "cifar100": 2.3},
    "Koh et al.": {"mnist": 10.0, "cifar10": 5.6, "cifar100": 2.6},
    "FastIF": {"mnist": 9.8, "cifar10": 6.5, "cifar100": 2.4},
    "Scaleup": {"mnist": 10.4, "cifar10": 6.5, "cifar100": 3.9},
    "DDM": {"mnist": 10.8, "cifar10": 6.8, "cifar100": 5.3},
}

# Table 4: (Acc_0, Acc_tau) in % for Normal, DDM-Match, DDM.
TABLE4 = {
    "mnist": {"Normal": (12.5, 95.7), "DDM-match": (12.6, 85.0), "DDM": (0.6, 95.7)},
    "cifar10": {"Normal": (12.6, 85.0), "DDM-match": (12.6, 40.2), "DDM": (15.5, 85.0)},
    "cifar100": {"Normal": (2.2, 56.1), "DDM-match": (2.2, 23.5), "DDM": (0.8, 56.1)},
    "tiny-imagenet": {"Normal": (1.4, 37.5), "DDM-match": (1.4, 7.8), "DDM": (0.1, 37.5)},
}

# Table 3 (MNIST only): test accuracy (%) after removing the x% most harmful training data
# (by the global objective, Supp. Eq. 14) and retraining; keys are x in %.
TABLE3_MNIST = {
    "Random": {0: 95.7, 1: 95.8, 10: 92.8, 20: 74.6, 50: 65.9},
    "Koh et al.": {0: 95.7, 1: 95.9, 10: 93.7, 20: 81.5, 50: 74.3},
    "FastIF": {0: 95.7, 1: 95.5, 10: 94.1, 20: 79.6, 50: 74.0},
    "Scaleup": {0: 95.7, 1: 96.0, 10: 95.2, 20: 82.9, 50: 73.3},
    "DDM": {0: 95.7, 1: 96.2, 10: 95.9, 20: 85.4, 50: 79.3},
}

# Supp. Table 6 (Supp. 9.2; data set not named): noise "with perturbation norm of 0.1" added to
# 20% of the training images; test accuracy (%) after removing the x% most harmful training data
# (Supp. Eq. 14) and retraining; keys are x in %.
TABLE6 = {
    "Random": {0: 78.4, 10: 70.5, 20: 68.8, 30: 61.3, 40: 55.7},
    "DDM": {0: 78.4, 10: 82.0, 20: 79.3, 30: 73.6, 40: 70.1},
}
TABLE6_NOISE = {"fraction": 0.2, "norm": 0.1}   # its setting, as printed (the norm's kind and scale are not)

# Supp. 6.2: claimed speed-up of hierarchical over flat attribution.
HIERARCHICAL_SPEEDUP = {"cifar10": 5.0, "cifar100": 10.0}


def paper_key(dataset: str) -> str | None:
    """The paper's data set a run of ours is compared with (the registry's ``paper_key``: the JPEG
    copy compares with CIFAR-10, with its caveat); None for data the paper never used."""
    from ddm import datasets

    return datasets.paper_key(dataset)


# Sec. 4.1: C = 10 clusters per class (K = 100 on MNIST and CIFAR-10, 1,000 on CIFAR-100).
CLUSTERS_PER_CLASS = 10


# Supp. Table 5, the settings: (data set, networks) -> lr_net, lr_img, training epochs, "step for
# synset", step length, distance; the four data sets share the CNN row and the ViT row but MNIST's lr_net.
TABLE5 = {
    ("MNIST", "ConvNet / AlexNet / ResNet"): {"lr_net": 0.001, "lr_img": 0.1, "epochs": 30, "synset_steps": 50,
                                             "step_length": 4, "distance": "cosine"},
    ("MNIST", "Simple ViT"): {"lr_net": 0.001, "lr_img": 0.005, "epochs": 30, "synset_steps": 50,
                              "step_length": 4, "distance": "MSE"},
    ("CIFAR-10/100, Tiny ImageNet", "ConvNet / AlexNet / ResNet"): {
        "lr_net": 0.01, "lr_img": 0.1, "epochs": 30, "synset_steps": 50, "step_length": 4, "distance": "cosine"},
    ("CIFAR-10/100, Tiny ImageNet", "Simple ViT"): {
        "lr_net": 0.01, "lr_img": 0.005, "epochs": 30, "synset_steps": 50, "step_length": 4, "distance": "MSE"},
}
# Sec. 4.1 ("Training details") says otherwise for the learning rates, without naming a data set.
SEC41_SETTINGS = {"lr_img": 10.0, "lr_net": 0.01}
