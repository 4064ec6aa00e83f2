"""gmlib: the reference library of the Deep Generative Models course book.

Modules
-------
device       choose CUDA, MPS or CPU (``GMLIB_DEVICE`` overrides)
data         8x8 digits (fixed split, three views), 2-D toy densities, MNIST loader
train        the one training loop: ``model.loss(batch)`` or ``model.players()``, Adam, early stopping
metrics      nats <-> bits/dim; sample quality: Fréchet distance of digit-classifier features, MMD, modes covered
plot         image grids, 2-D densities, training curves
nets         small network builders
probability  Chapter 1: entropy, KL, Monte Carlo, the ELBO, gradient estimators
conditional  Chapter 1: Gaussian conditional density model p(y | x)
mixture      Chapter 2: Gaussian mixtures by EM (full / diagonal, missing data, imputation)
linear_gaussian  Chapter 2: probabilistic PCA and factor analysis
variational  Chapter 2: mean-field VI (coordinate ascent) for a Bayesian Gaussian mixture
hmm          Chapter 3: hidden Markov models (forward-backward, Viterbi, Baum-Welch)
lds          Chapter 3: linear dynamical systems (Kalman filter, RTS smoother, EM)
rbm          Chapter 4: restricted Boltzmann machines (CD-k, PCD, exact log Z, AIS)
likelihoods  observation models p(x | decoder output): Bernoulli, categorical, discretized logistic, Gaussian
vae          Chapter 5: variational autoencoders (ELBO, IWAE, KL warm-up, free bits, conditional VAE, completion)
gan          Chapter 6: generative adversarial networks (five objectives, gradient penalty, D*)
flows        Chapter 7: normalizing flows (couplings, splines, Glow layers, MAF/IAF, dequantization bounds)
recipes      the protocols that train the book's models, shared by each page and its benchmark script
pretrained   trained weights the book ships (gmlib/weights), each made by a benchmark script
bench        benchmark scripts that print speed figures (python -m gmlib.bench.<name>)
"""
from .device import describe_device, get_device
from .train import History, train

__version__ = "0.1.0"
__all__ = ["get_device", "describe_device", "train", "History", "__version__"]
