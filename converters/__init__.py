"""Readers and writers for MATLAB/MatConvNet files (.mat v5/v7/v7.3, .bin features)."""
