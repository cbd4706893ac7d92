"""Test-wide settings: the suite never touches the network and never uses more threads than the machine has."""
import os
import socket

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def free_port() -> int:
    """A loopback port free right now (the OS picks it), so parallel runs and busy machines never collide."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
