"""The supervisor actor: reviews, merges and scores candidate answers (``actor.py``, ``judge.py``)."""
