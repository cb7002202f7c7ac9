from metaflow.exception import MetaflowException


class ModalException(MetaflowException):
    headline = "Modal error"
