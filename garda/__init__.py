"""The composition root: the ``garda`` command wires settings, stores, the broker and the
Faust app together. The only package that may import every other layer."""
