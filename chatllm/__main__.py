"""Entry point for `python -m chatllm`."""

from chatllm.cli import main

main()
