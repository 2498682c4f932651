"""The online path: events, file formats, sources, transport, binning and orchestration."""
