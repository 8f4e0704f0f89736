"""The chat REPL, talking to a Conversation only.

loop.py reads input and runs slash commands; commands.py is the command table and /set parsing (chatllm.inputs
turns typed or piped text into messages); session.py is the prompt_toolkit prompt (the one module importing it at load);
views.py draws a streaming reply.
"""
