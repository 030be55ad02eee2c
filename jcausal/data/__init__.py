"""Offline datasets: iris and digits (scikit-learn), MNIST/Fashion-MNIST IDX files from any folder,
and the synthetic data of the ACE and GCE papers."""

from jcausal.data.idx import (
    IDXFormatError,
    ImageData,
    load_fashion_mnist,
    load_mnist,
    read_idx,
    resolve_data_dir,
    write_idx,
)
from jcausal.data.synthetic import SequenceData, make_isotropic_gaussian, make_sequences
from jcausal.data.tabular import (
    MinMaxScaler,
    TabularData,
    load_breast_cancer,
    load_digits,
    load_iris,
    train_test_split,
)

__all__ = [
    "IDXFormatError",
    "ImageData",
    "MinMaxScaler",
    "SequenceData",
    "TabularData",
    "load_breast_cancer",
    "load_digits",
    "load_fashion_mnist",
    "load_iris",
    "load_mnist",
    "make_isotropic_gaussian",
    "make_sequences",
    "read_idx",
    "resolve_data_dir",
    "train_test_split",
    "write_idx",
]
