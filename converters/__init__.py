"""Readers and writers for MATLAB/MatConvNet files (.mat v5/v7/v7.3, .bin features,
dbStruct specs, networks) and matnet's native .safetensors networks.

Depends on matnet's engine modules (``matnet.layers``, ``matnet.simplenn``) only,
never on the ``matnet`` package face or its pipeline.
"""
from .artefacts import read_clusters, read_pca, read_train_descs, write_clusters, write_pca, write_train_descs
from .bin_features import BinFeatureError, read_bin, write_bin
from .dbstruct import DbStructError, load_dbstruct
from .matfile import MatFileError, MatObject, loadmat, savemat, whosmat
from .native import load_native, save_native
from .network import load_net, net_from_vars, net_to_struct, network_file_kind, save_net

__all__ = ["loadmat", "savemat", "whosmat", "MatObject", "MatFileError",
           "load_net", "save_net", "network_file_kind", "net_from_vars", "net_to_struct",
           "load_native", "save_native",
           "read_bin", "write_bin", "BinFeatureError", "load_dbstruct", "DbStructError",
           "read_clusters", "write_clusters", "read_train_descs", "write_train_descs", "read_pca", "write_pca"]
