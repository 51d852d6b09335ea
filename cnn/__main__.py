"""``python -m cnn``: print how cnn was built and what it runs on."""
from cnn._config import show_config

show_config(print_out=True)
