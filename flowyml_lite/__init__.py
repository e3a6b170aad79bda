"""flowyml_lite: a pipeline scheduler that keeps its promises, on the standard library alone."""
__version__ = "0.1.0"
