"""Metaflow's entry points into the @modal extension."""

STEP_DECORATORS_DESC = [("modal", ".modal_decorator.ModalDecorator")]

# `modal step` hands a task to a remote system, so Metaflow 2.19 and later
# treat it as a trampoline (phase TRAMPOLINE rather than LAUNCH).  Older
# releases ignore TRAMPOLINE_CLIS_DESC and take the group from CLIS_DESC.
CLIS_DESC = [("modal", ".modal_cli.cli")]
TRAMPOLINE_CLIS_DESC = [("modal", ".modal_cli.cli")]
