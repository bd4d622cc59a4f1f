"""The Python API: compress or search a model you already have, on data you already have.

``prunetune.compress(teacher, train, val)`` and ``prunetune.search(teacher, train, val)`` take a
trained ``nn.Module`` and data as ``(images, labels)`` tensors, a ``torch.utils.data.Dataset``
or a ``DataLoader``, and return typed results; :func:`load` reads a saved student back. The
command line's jobs run underneath, with the same checks and defaults.
"""
