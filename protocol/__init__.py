"""shoal's wire protocol: what the control plane and the agents agree on.

Pure data and functions only: pydantic models, the msgpack codec, subject
names, content digests, label selectors and label classes. No I/O happens
here, which is what lets both sides and the fuzz tests share it freely.
"""
