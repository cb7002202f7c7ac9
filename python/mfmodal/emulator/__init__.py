"""A local Modal emulator: Modal's gRPC API served by grpclib, sandboxes run as local processes.

Start it with ``mfmodal-emulator --state-dir DIR`` or ``python -m mfmodal.emulator``,
or from tests with :class:`mfmodal.emulator.testing.EmulatorProcess`. doc/emulator.md
describes the options, fault specs, control API and state dump.
"""
