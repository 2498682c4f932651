"""smastream: real-time event-camera gesture recognition with a stateful SMA-SNN.

Subpackages (each a top-level folder of the repository):

- ``smastream.stream``: the online path (events, file formats, sources, transport, binning).
- ``smastream.engine``: the SMA-SNN model, ONNX export and runtimes.
- ``smastream.train``: datasets, training and evaluation.
"""

__version__ = "0.1.0"
