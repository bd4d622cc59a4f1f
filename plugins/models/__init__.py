"""Teacher model zoo: ``resnet``, ``vgg`` and ``mobilenet`` for 28x28 and 32x32 images."""
