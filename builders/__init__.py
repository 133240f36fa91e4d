"""Template → image. Plain Python, no Django: the hub's services call in with plain
values, and a backend chosen by a dotted-path setting does the building."""
