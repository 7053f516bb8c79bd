"""Reading and typing the configuration: qtoaster.toml, control/ files, tcp.smtp rules.

Everything is read once into frozen values (``loader.load_config``) and handed to the
roles; nothing here imports a role, and validation that needs a role lives with it.
"""
