r"""Units for reporting likelihoods.

A model's negative log-likelihood of one image is reported in *nats per image*
(natural log, summed over the D dimensions of the image). Bits per dimension
divides by D and converts to base 2:

.. math::  \mathrm{bpd} = \frac{\mathrm{NLL}_\text{nats}}{D \ln 2}.   \tag{ch01:bpd}

Both are only comparable between models of the *same* data representation
(e.g. two models of 17-level integer digits); a density on continuous pixels
and a probability mass on discrete ones are different quantities.
"""
from __future__ import annotations

import math

import torch

from ._checks import check_int

__all__ = ["nats_to_bits_per_dim", "bits_per_dim_to_nats"]


def _check_dims(dims: int) -> None:
    check_int(dims, "dims (the number of dimensions per example)")


def nats_to_bits_per_dim(nats, dims: int):
    """Convert a negative log-likelihood in nats per example into bits per dimension.

    Works on Python floats, NumPy arrays and tensors alike.
    """
    _check_dims(dims)
    return nats / (dims * math.log(2.0))


def bits_per_dim_to_nats(bpd, dims: int):
    """Inverse of :func:`nats_to_bits_per_dim`."""
    _check_dims(dims)
    return bpd * dims * math.log(2.0)
