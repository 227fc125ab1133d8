"""An independent stimulator device written from ICD.md alone, for testing the host against it.

`Device` is the protocol state machine (bytes in + time -> bytes out); `python -m tests.peer_device`
serves it over a pseudo-terminal or TCP; `process.spawn_peer` starts that process from tests.
"""
