"""Distilled Datamodel (DDM, CVPR 2024) reproduced: clustering, reverse gradient matching,
online evaluation, the attribution matrix, exact unlearning and the metrics of the paper.

Stages, left to right in the flow of data:
``config -> data -> clustering -> models/training -> matching -> online -> attribution -> metrics``;
``experiment`` ties them to the artifact ``store``.
"""

__version__ = "0.1.0"
