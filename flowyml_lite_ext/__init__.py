"""Optional backends for flowyml_lite; each module needs the pip extra named in its docstring."""
