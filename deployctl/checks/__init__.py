"""doctor's checks: the engine (engine.py), the facts they share (facts.py), one module per concern, the
registry that wires them (registry.py), and the safe repairs (fixes.py)."""
