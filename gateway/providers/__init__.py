"""Provider adapters: how the gateway talks to each kind of upstream (see ``base.py``)."""
