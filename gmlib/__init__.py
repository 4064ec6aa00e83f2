"""gmlib: the reference library of the Deep Generative Models course book.

Modules
-------
device       choose CUDA, MPS or CPU (``GMLIB_DEVICE`` overrides)
data         8x8 digits (fixed split, three views), 2-D toy densities, MNIST loader
train        the one training loop: ``model.loss(batch)``, Adam, early stopping
metrics      nats per image <-> bits per dimension
plot         image grids, 2-D densities, training curves
nets         small network builders
probability  Chapter 1: entropy, KL, Monte Carlo, the ELBO, gradient estimators
conditional  Chapter 1: Gaussian conditional density model p(y | x)
grading      nbgrader integration for the labs
"""
from .device import describe_device, get_device
from .train import History, train

__version__ = "0.1.0"
__all__ = ["get_device", "describe_device", "train", "History", "__version__"]
