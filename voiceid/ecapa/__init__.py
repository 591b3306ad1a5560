"""ECAPA-TDNN (stage ``ecapa``): the network, its training, tuning and evaluation.

Modules: ``model`` (the network, blocks first, ``EcapaConfig``), ``augment`` (feature-domain
augmentation), ``train`` (AAM-softmax training loop, checkpoints, early stop), ``distributed``
(torchrun: process group, batch shards, rank-0 broadcasts for DDP training), ``embed``
(embeddings of any length), ``params`` (the ``ecapa`` section), ``data`` (the logmel table
by split), ``evaluate`` (verification trials, EER/minDCF, centroid identification), ``tune``
(Optuna over the training settings and the MLflow final run).

May import: torch, ``voiceid.scoring``, ``voiceid.study``, ``voiceid.tracking``,
``voiceid.features.tables``, ``voiceid.atomic``, ``voiceid.config``, ``voiceid.viz``; never
``grid``, ``select`` or ``serve``.
"""
