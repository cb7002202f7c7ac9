"""mfmodal: run Metaflow steps on Modal sandboxes through a native engine."""

__version__ = "0.1.0"
