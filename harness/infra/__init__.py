"""How the harness acts on the machine: the Docker engine, Compose, images, rendered files."""
