"""The test suite: a package, so every test imports its helpers one way (``from tests.helpers import …``)."""
