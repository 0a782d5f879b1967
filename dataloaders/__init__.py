"""Stream Gust HDF5 files into JAX as batches (issue 4; not implemented yet).

Until then, `solvers.common.hdf5_utils.open_dataset` is the reader API.
"""
