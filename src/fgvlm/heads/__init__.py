"""Classification heads and linear probes on frozen VLM features, with an on-disk feature cache.

``config`` (``HeadTrainConfig``), ``cache`` (safetensors feature entries keyed by every ingredient), ``features``
(batched, multi-process extraction), ``model`` (the head), ``training`` (the loop, cached or backbone-in-the-loop),
``sweep``, ``outputs`` (the shared metrics/predictions schema), ``pipeline`` (``head train`` / ``head eval``) and
``predict`` (top-5 class names for users' images, with a head or zero-shot). Importing this package loads no torch.
"""
