"""mfmodal-local: run Metaflow flows with @modal steps offline, against the
Modal emulator and moto's S3 server on 127.0.0.1."""
