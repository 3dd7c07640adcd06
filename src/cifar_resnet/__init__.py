"""ResNet classifiers on CIFAR-10/100: the library behind the DVC pipeline's stages."""

__version__ = "0.1.0"
