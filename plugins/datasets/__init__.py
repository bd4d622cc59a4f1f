"""Built-in dataset plugins: ``fashion_mnist_demo`` (bundled), ``idx``, ``parquet``, ``cifar10``.

Each module is one plugin, loaded through its ``dataset.<name>`` entry point.
"""
